//! The harness's own SQL: grows the data inside the database (far faster than through the
//! API), prepares the connections for each scheduler pass, and prints the query plans of the
//! keyset and scheduler queries.

use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use connectors::domain::{now, to_micros};
use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use sqlx::{PgPool, Row, SqlitePool};
use uuid::Uuid;

use crate::database::DbKind;
use crate::dataset::TenantData;
use crate::report::thousands;

const DAY_US: i64 = 24 * 3600 * 1_000_000;
/// The columns `GET /signals` reads (no payload), as the store lists them.
const SIGNAL_COLUMNS: &str = "id, tenant_id, connection_id, provider, kind, occurred_at, \
     received_at, actor, title, url, external_id, dedupe_key";

/// A pool on the run's database for the harness's own statements.
pub enum Bulk {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

impl Bulk {
    pub async fn open(kind: DbKind, url: &str) -> Result<Self> {
        Ok(match kind {
            DbKind::Sqlite => {
                let options = SqliteConnectOptions::from_str(url)?
                    .busy_timeout(Duration::from_secs(300))
                    // A GiB of page cache: the copies insert into ten-million-row indexes.
                    .pragma("cache_size", "-1048576");
                Bulk::Sqlite(
                    SqlitePoolOptions::new()
                        .max_connections(1)
                        .connect_with(options)
                        .await
                        .context("opening the SQLite file")?,
                )
            }
            DbKind::Postgres => Bulk::Postgres(
                PgPoolOptions::new()
                    .max_connections(1)
                    .connect(url)
                    .await
                    .context("connecting to PostgreSQL")?,
            ),
        })
    }

    /// Rows of `table`.
    pub async fn count(&self, table: &'static str) -> Result<u64> {
        let sql = format!("SELECT COUNT(*) FROM {table}");
        let n: i64 = match self {
            Bulk::Sqlite(pool) => sqlx::query_scalar(&sql).fetch_one(pool).await?,
            Bulk::Postgres(pool) => sqlx::query_scalar(&sql).fetch_one(pool).await?,
        };
        Ok(u64::try_from(n)?)
    }

    /// After a bulk change: PostgreSQL gets `VACUUM ANALYZE` (what autovacuum does after a
    /// large insert), SQLite a WAL checkpoint (what the service's checkpointer does).
    pub async fn settle(&self) -> Result<()> {
        let started = Instant::now();
        match self {
            Bulk::Sqlite(pool) => {
                sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                    .execute(pool)
                    .await?;
            }
            Bulk::Postgres(pool) => {
                sqlx::query("VACUUM ANALYZE").execute(pool).await?;
            }
        }
        println!(
            "settled the database ({}) in {:.1} s",
            match self {
                Bulk::Sqlite(_) => "wal_checkpoint(TRUNCATE)",
                Bulk::Postgres(_) => "VACUUM ANALYZE",
            },
            started.elapsed().as_secs_f64()
        );
        Ok(())
    }

    /// `n` more active sandbox connections, one tenant each, due within the next hour.
    pub async fn add_connections(&self, n: u64) -> Result<()> {
        if n == 0 {
            return Ok(());
        }
        let started = Instant::now();
        let offset = self.count("connections").await?;
        let n = i64::try_from(n)?;
        let offset = i64::try_from(offset)?;
        match self {
            Bulk::Sqlite(pool) => {
                let now_us = to_micros(&now());
                sqlx::query(
                    "INSERT INTO connections (id, tenant_id, provider, external_account_id, \
                     external_account_name, status, scopes, created_at, updated_at, \
                     next_sync_at) \
                     WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < ?2) \
                     SELECT randomblob(16), randomblob(16), 'sandbox', 'sandbox-' || (n + ?3), \
                     'Sandbox ' || (n + ?3), 'active', '[]', ?1, ?1, \
                     ?1 + 60000000 + abs(random()) % 3540000000 FROM g",
                )
                .bind(now_us)
                .bind(n)
                .bind(offset)
                .execute(pool)
                .await
                .context("adding connections")?;
            }
            Bulk::Postgres(pool) => {
                sqlx::query(
                    "INSERT INTO connections (id, tenant_id, provider, external_account_id, \
                     external_account_name, status, scopes, created_at, updated_at, \
                     next_sync_at) \
                     SELECT gen_random_uuid(), gen_random_uuid(), 'sandbox', \
                     'sandbox-' || (g + $3), 'Sandbox ' || (g + $3), 'active', '[]', $1, $1, \
                     $1 + (60 + random() * 3540) * interval '1 second' \
                     FROM generate_series(1, $2::bigint) g",
                )
                .bind(now())
                .bind(n)
                .bind(offset)
                .execute(pool)
                .await
                .context("adding connections")?;
            }
        }
        println!(
            "added {} sandbox connections in {:.1} s",
            thousands(n.unsigned_abs()),
            started.elapsed().as_secs_f64()
        );
        Ok(())
    }

    /// Copies every signal loaded so far `copies` times, copy `k` moved `k` years earlier with
    /// a fresh id and its own dedupe key: each tenant's history grows into earlier years, as
    /// it does when the service has run for years. One transaction per copy.
    pub async fn grow_signals(&self, copies: u64) -> Result<()> {
        let before = self.count("signals").await?;
        let started = Instant::now();
        let last_rowid: i64 = match self {
            Bulk::Sqlite(pool) => {
                sqlx::query_scalar("SELECT MAX(rowid) FROM signals")
                    .fetch_one(pool)
                    .await?
            }
            Bulk::Postgres(_) => 0,
        };
        for k in 1..=i64::try_from(copies)? {
            let suffix = format!(":y{k}");
            let inserted = match self {
                Bulk::Sqlite(pool) => sqlx::query(&format!(
                    "INSERT INTO signals ({SIGNAL_COLUMNS}, payload) \
                     SELECT randomblob(16), tenant_id, connection_id, provider, kind, \
                     occurred_at - ?1, received_at - ?1, actor, title, url, external_id, \
                     dedupe_key || ?2, payload FROM signals WHERE rowid <= ?3"
                ))
                .bind(k * 365 * DAY_US)
                .bind(&suffix)
                .bind(last_rowid)
                .execute(pool)
                .await
                .context("copying signals")?
                .rows_affected(),
                Bulk::Postgres(pool) => sqlx::query(&format!(
                    "INSERT INTO signals ({SIGNAL_COLUMNS}, payload) \
                     SELECT gen_random_uuid(), tenant_id, connection_id, provider, kind, \
                     occurred_at - $1 * interval '365 days', \
                     received_at - $1 * interval '365 days', actor, title, url, external_id, \
                     dedupe_key || $2, payload FROM signals WHERE dedupe_key NOT LIKE '%:y%'"
                ))
                .bind(i32::try_from(k)?)
                .bind(&suffix)
                .execute(pool)
                .await
                .context("copying signals")?
                .rows_affected(),
            };
            if inserted != before {
                bail!("copy {k} inserted {inserted} signals, expected {before}");
            }
            println!(
                "  copy {k}/{copies}: {} signals ({:.0} rows/s so far)",
                thousands(before * (k.unsigned_abs() + 1)),
                (before * k.unsigned_abs()) as f64 / started.elapsed().as_secs_f64()
            );
        }
        println!(
            "grew the signals from {} to {} in {:.1} s",
            thousands(before),
            thousands(before * (copies + 1)),
            started.elapsed().as_secs_f64()
        );
        Ok(())
    }

    /// Every connection's next sync somewhere in the coming hour: nothing is due.
    pub async fn schedule_ahead(&self) -> Result<()> {
        match self {
            Bulk::Sqlite(pool) => {
                sqlx::query(
                    "UPDATE connections SET next_sync_at = \
                     ?1 + 60000000 + abs(random()) % 3540000000",
                )
                .bind(to_micros(&now()))
                .execute(pool)
                .await?;
            }
            Bulk::Postgres(pool) => {
                sqlx::query(
                    "UPDATE connections SET next_sync_at = \
                     $1 + (60 + random() * 3540) * interval '1 second'",
                )
                .bind(now())
                .execute(pool)
                .await?;
            }
        }
        Ok(())
    }

    /// `n` random connections due a second ago (`None`: every connection, each due at some
    /// point of the last hour, as after an outage).
    pub async fn make_due(&self, n: Option<u64>) -> Result<()> {
        let limit = i64::try_from(n.unwrap_or(i64::MAX as u64))?;
        match self {
            Bulk::Sqlite(pool) => {
                let sql = if n.is_some() {
                    "UPDATE connections SET next_sync_at = ?1 - 1000000 WHERE id IN \
                     (SELECT id FROM connections ORDER BY random() LIMIT ?2)"
                } else {
                    "UPDATE connections SET next_sync_at = \
                     ?1 - 1000000 - abs(random()) % 3600000000 WHERE ?2 > 0"
                };
                sqlx::query(sql)
                    .bind(to_micros(&now()))
                    .bind(limit)
                    .execute(pool)
                    .await?;
            }
            Bulk::Postgres(pool) => {
                let sql = if n.is_some() {
                    "UPDATE connections SET next_sync_at = $1 - interval '1 second' WHERE id IN \
                     (SELECT id FROM connections ORDER BY random() LIMIT $2)"
                } else {
                    "UPDATE connections SET next_sync_at = \
                     $1 - (1 + random() * 3600) * interval '1 second' WHERE $2 > 0"
                };
                sqlx::query(sql)
                    .bind(now())
                    .bind(limit)
                    .execute(pool)
                    .await?;
            }
        }
        Ok(())
    }

    /// Removes the jobs of the sync lane (the scheduler's passes leave them queued).
    pub async fn clear_jobs(&self) -> Result<()> {
        let sql = "DELETE FROM sync_jobs WHERE lane = 'sync'";
        match self {
            Bulk::Sqlite(pool) => {
                sqlx::query(sql).execute(pool).await?;
            }
            Bulk::Postgres(pool) => {
                sqlx::query(sql).execute(pool).await?;
            }
        }
        Ok(())
    }

    /// Prints the plans of `GET /signals`' keyset query (a cursor 80 % deep into the first
    /// tenant's history) and of the scheduler's due query with nothing and with everything
    /// due: `EXPLAIN (ANALYZE, BUFFERS)` on PostgreSQL, `EXPLAIN QUERY PLAN` on SQLite.
    pub async fn explain(&self, tenants: &[TenantData], providers: &[&str]) -> Result<()> {
        let tenant = tenants.first().context("no tenant")?;
        let skip = i64::try_from(tenant.signals * 8 / 10)?;
        let keyset = format!(
            "SELECT {SIGNAL_COLUMNS} FROM signals WHERE tenant_id = $1 \
             AND (occurred_at, id) < ($2, $3) ORDER BY occurred_at DESC, id DESC LIMIT 51"
        );
        // The query of `connections_due_for_sync` (src/store/*/queue.rs).
        let due = "SELECT * FROM connections WHERE status = 'active' \
                   AND COALESCE(next_sync_at, '-infinity'::timestamptz) <= $1 \
                   AND provider = ANY($2) \
                   ORDER BY COALESCE(next_sync_at, '-infinity'::timestamptz), id LIMIT 200";
        let due_sqlite = format!(
            "SELECT * FROM connections WHERE status = 'active' \
             AND coalesce(next_sync_at, 0) <= ?1 AND provider IN ({}) \
             ORDER BY coalesce(next_sync_at, 0), id LIMIT 200",
            providers
                .iter()
                .map(|p| format!("'{p}'"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let providers: Vec<String> = providers.iter().map(|p| p.to_string()).collect();
        match self {
            Bulk::Postgres(pool) => {
                let row = sqlx::query(
                    "SELECT occurred_at, id FROM signals WHERE tenant_id = $1 \
                     ORDER BY occurred_at DESC, id DESC OFFSET $2 LIMIT 1",
                )
                .bind(tenant.id.0)
                .bind(skip)
                .fetch_one(pool)
                .await?;
                let at: chrono::DateTime<chrono::Utc> = row.try_get(0)?;
                let id: Uuid = row.try_get(1)?;
                let plan = |sql: String| format!("EXPLAIN (ANALYZE, BUFFERS) {sql}");
                let lines: Vec<String> = sqlx::query_scalar(&plan(keyset))
                    .bind(tenant.id.0)
                    .bind(at)
                    .bind(id)
                    .fetch_all(pool)
                    .await?;
                print_plan("keyset page 80 % deep", &lines);
                for (what, all_due) in [("nothing due", false), ("every connection due", true)] {
                    if all_due {
                        self.make_due(None).await?;
                    } else {
                        self.schedule_ahead().await?;
                    }
                    let lines: Vec<String> = sqlx::query_scalar(&plan(due.to_string()))
                        .bind(now())
                        .bind(&providers)
                        .fetch_all(pool)
                        .await?;
                    print_plan(&format!("connections due for sync, {what}"), &lines);
                }
            }
            Bulk::Sqlite(pool) => {
                let keyset = keyset.replace('$', "?");
                let lines = sqlx::query(&format!("EXPLAIN QUERY PLAN {keyset}"))
                    .bind(tenant.id.0)
                    .bind(0i64)
                    .bind(Uuid::nil())
                    .fetch_all(pool)
                    .await?
                    .iter()
                    .map(|r| r.try_get::<String, _>(3))
                    .collect::<Result<Vec<_>, _>>()?;
                print_plan("keyset page", &lines);
                let lines = sqlx::query(&format!("EXPLAIN QUERY PLAN {due_sqlite}"))
                    .bind(0i64)
                    .fetch_all(pool)
                    .await?
                    .iter()
                    .map(|r| r.try_get::<String, _>(3))
                    .collect::<Result<Vec<_>, _>>()?;
                print_plan("connections due for sync", &lines);
            }
        }
        self.schedule_ahead().await
    }
}

fn print_plan(what: &str, lines: &[String]) {
    println!("\nplan: {what}");
    for line in lines {
        println!("    {line}");
    }
}
