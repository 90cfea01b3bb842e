//! The report: machine facts and the Markdown blocks to paste into `docs/benchmarks.md`.

use std::fmt::Write as _;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};

use crate::commit_limit::CommitLimit;
use crate::database::DbKind;
use crate::floor::Floor;
use crate::ingest::{cores, IngestRun, StoreLag};
pub use crate::machine::{git_commit, load_average, thousands, Machine};
use crate::sync::SyncOutcome;

/// Ingest target: accepted deliveries per second on SQLite at 32 senders (`ingest`).
pub const TARGET_PER_SEC: f64 = 3000.0;
/// Ingest target: p99 latency to `202` at 32 senders, ms.
pub const TARGET_P99_MS: f64 = 25.0;
/// Ingest target: accepted/s as a fraction of the database's own single-row commit rate
/// (`ingest`, stated for PostgreSQL).
pub const TARGET_OF_COMMITS: f64 = 0.8;
/// Inbox lag target: p99 from `202` to the signal listed, ms.
pub const TARGET_LAG_P99_MS: f64 = 1000.0;

fn mb(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "MISSED"
    }
}

/// An ingest run and, with the worker, its inbox lag.
pub struct IngestReport {
    pub run: IngestRun,
    pub lag: Option<StoreLag>,
    /// `GET /healthz` on the same server just before the deliveries.
    pub floor: Floor,
    /// `GET /bench/floor` on the same server just before the deliveries, its body
    /// `fixed_bytes` long (the size of a `202` answer).
    pub fixed: Floor,
    pub fixed_bytes: usize,
}

/// Everything one invocation measured.
pub struct Summary {
    pub backend: DbKind,
    pub concurrency: usize,
    /// Paced deliveries per second over all senders; 0: back to back.
    pub rate: u32,
    pub payload_bytes: usize,
    pub tenants: usize,
    pub warmup: Duration,
    pub duration: Duration,
    pub db_connections: u32,
    pub ingest: Vec<IngestReport>,
    /// The database's own commit rate, measured before the ingest scenarios.
    pub commit_limit: Option<CommitLimit>,
    pub sync: Option<SyncOutcome>,
    pub machine: Machine,
    pub load_after: Option<String>,
    pub commit: Option<String>,
    pub finished_at: DateTime<Utc>,
}

fn backend_name(backend: DbKind) -> &'static str {
    match backend {
        DbKind::Sqlite => "SQLite",
        DbKind::Postgres => "PostgreSQL",
    }
}

/// The Markdown block for `docs/benchmarks.md`.
pub fn markdown(s: &Summary) -> String {
    let mut md = String::new();
    let backend = backend_name(s.backend);
    if !s.ingest.is_empty() {
        ingest_section(&mut md, s, backend);
    }
    if let Some(sync) = &s.sync {
        sync_section(&mut md, s, backend, sync);
    }
    let _ = writeln!(
        md,
        "- Machine: {}; load average (1/5/15 min) {} before the run, {} after. **Senders, \
         server{} share these CPUs.**",
        s.machine.describe(),
        s.machine.load_before.as_deref().unwrap_or("n/a"),
        s.load_after.as_deref().unwrap_or("n/a"),
        if s.backend == DbKind::Postgres {
            " and PostgreSQL"
        } else {
            " and the SQLite file's I/O"
        }
    );
    let _ = writeln!(
        md,
        "- Build: {}; finished {}.",
        s.commit.as_deref().unwrap_or("unknown commit"),
        s.finished_at.to_rfc3339_opts(SecondsFormat::Secs, true)
    );
    md
}

fn ingest_section(md: &mut String, s: &Summary, backend: &str) {
    let _ = writeln!(
        md,
        "### {backend}: webhook ingest, {} senders, {} B payload\n",
        s.concurrency, s.payload_bytes
    );
    md.push_str(
        "| Backend | Scenario | Roles | Senders | Accepted | Errors | Started late | accepted/s \
         | /healthz req/s \
         | of /healthz | fixed body req/s | of fixed body | commits/s | of commits/s | p50 ms \
         | p90 ms | p99 ms | max ms | Server CPU | Client CPU | Max RSS MB |\n",
    );
    md.push_str(
        "|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n",
    );
    let commits = s.commit_limit.as_ref();
    for r in &s.ingest {
        let run = &r.run;
        let _ = writeln!(
            md,
            "| {} | {} | `{}` | {} | {} | {} | {} | {} | {} | {:.2} | {} | {:.2} | {} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {} | {:.1} |",
            s.backend.as_str(),
            run.name,
            run.roles,
            s.concurrency,
            thousands(run.accepted),
            run.errors,
            thousands(run.late),
            thousands(run.per_sec().round() as u64),
            thousands(r.floor.per_sec().round() as u64),
            r.floor.fraction(run.per_sec()),
            thousands(r.fixed.per_sec().round() as u64),
            r.fixed.fraction(run.per_sec()),
            commits.map_or_else(
                || "n/a".to_string(),
                |c| thousands(c.commits_per_sec.round() as u64)
            ),
            commits.map_or_else(
                || "n/a".to_string(),
                |c| format!("{:.2}", c.fraction(run.per_sec()))
            ),
            run.ms(0.5),
            run.ms(0.9),
            run.ms(0.99),
            run.latency.max() as f64 / 1000.0,
            cores(run.server_cpu),
            cores(run.client_cpu),
            mb(run.max_rss_kb),
        );
    }
    md.push('\n');
    let lags: Vec<(&IngestRun, &StoreLag)> = s
        .ingest
        .iter()
        .filter_map(|r| r.lag.as_ref().map(|l| (&r.run, l)))
        .collect();
    if !lags.is_empty() {
        md.push_str(
            "| Backend | Inbox lag, measured by | Samples | p50 ms | p90 ms | p99 ms | max ms \
             | Not processed / listed | Drained after load | Normalized/s |\n",
        );
        md.push_str("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|\n");
        for (run, lag) in &lags {
            let q =
                |h: &hdrhistogram::Histogram<u64>, x: f64| h.value_at_quantile(x) as f64 / 1000.0;
            let _ = writeln!(
                md,
                "| {} | stored event's `processed_at` | {} | {:.1} | {:.1} | {:.1} | {:.1} | {} | {} | {} |",
                s.backend.as_str(),
                thousands(lag.lag.len()),
                q(&lag.lag, 0.5),
                q(&lag.lag, 0.9),
                q(&lag.lag, 0.99),
                lag.lag.max() as f64 / 1000.0,
                lag.pending + lag.other.len(),
                lag.drained_in.map_or_else(
                    || "not drained".to_string(),
                    |d| format!("{:.1} s", d.as_secs_f64())
                ),
                lag.worker_rate.map_or_else(
                    || "n/a".to_string(),
                    |r| thousands(r.round() as u64)
                ),
            );
            if let Some(probe) = &run.probe {
                let _ = writeln!(
                    md,
                    "| {} | probe polling `GET /signals` | {} | {:.1} | {:.1} | {:.1} | {:.1} | {} | | |",
                    s.backend.as_str(),
                    thousands(probe.lag.len()),
                    q(&probe.lag, 0.5),
                    q(&probe.lag, 0.9),
                    q(&probe.lag, 0.99),
                    probe.lag.max() as f64 / 1000.0,
                    probe.not_listed,
                );
            }
        }
        md.push('\n');
    }
    let pace = if s.rate > 0 {
        format!(
            "paced to {} deliveries/s in all (`--rate`; each sent at its time, with at most 64 \
             of a sender's unanswered)",
            thousands(u64::from(s.rate))
        )
    } else {
        "back to back".to_string()
    };
    let _ = writeln!(
        md,
        "- Load: {} senders, each posting signed sandbox deliveries (`event.created`, body {} B \
         with a filler field, a fresh delivery id each) {pace} to \
         `POST /webhooks/sandbox/{{tenant}}`, round robin over {} tenants with one sandbox \
         connection each; {} s warm-up (not recorded), then {} s recorded. Latency is from \
         sending to the complete `202` answer; anything else counts as an error.",
        s.concurrency,
        s.payload_bytes,
        s.tenants,
        s.warmup.as_secs(),
        s.duration.as_secs()
    );
    let _ = writeln!(
        md,
        "- Server: release `connectors serve`, one fresh database per scenario, \
         `POBLYSH_DB_MAX_CONNECTIONS={}`, `POBLYSH_LOG_LEVEL=warn`. `ingest` runs `POBLYSH_ROLES=api` \
         (deliveries only stored); `ingest+worker` runs `api,worker`, so the inbox worker \
         normalizes the deliveries into signals while they arrive. CPU columns: % of one core \
         during the recorded window{}.",
        s.db_connections,
        if s.backend == DbKind::Postgres {
            " (the `connectors` process only; PostgreSQL's processes are not counted)"
        } else {
            ""
        }
    );
    let fixed_bytes = s.ingest.first().map_or(0, |r| r.fixed_bytes);
    let _ = writeln!(
        md,
        "- Floors, on the same server with the same {} clients just before the deliveries \
         ({} s warm-up, {} s recorded each): `GET /healthz`, and `GET /bench/floor` \
         (`POBLYSH_BENCH_FLOOR_BYTES={fixed_bytes}`, the size of the `202` answer measured on a \
         first server over the same database) with the operator token and `X-Tenant-Id`: \
         authentication and a fixed body, no database. \"of ...\" columns: accepted/s as a \
         fraction of each.",
        s.concurrency,
        s.warmup.as_secs(),
        s.duration.as_secs()
    );
    if let Some(limit) = commits {
        let _ = writeln!(
            md,
            "- The database's own limit (\"commits/s\"), measured just before the scenarios: {}. \
             {}.",
            limit.how,
            limit.one_line()
        );
    }
    if !lags.is_empty() {
        md.push_str(
            "- Inbox lag (`ingest+worker`): from the `202` to the signal. *processed_at*: for \
             an even sample of the window's deliveries (always including the last), the stored \
             event's `processed_at`, stamped by the worker as it stores the signal, minus the \
             harness's clock at the `202` (same machine clock), read from the store after the \
             load. *probe*: during the window one extra sender posts to a tenant of its own, \
             polls `GET /signals?limit=10` every 5 ms until its delivery's signal is listed, \
             then posts the next. \"Drained after load\": how long after the senders stopped \
             the last sampled delivery was processed (0 when the worker kept up). \
             \"Normalized/s\": every delivery accepted in the run (warm-up included) divided by \
             the time from the start of the warm-up to that last processing: the inbox \
             worker's throughput when it fell behind, the arrival rate when it kept up.\n",
        );
    }
    let _ = writeln!(md, "- Targets:");
    for r in &s.ingest {
        let run = &r.run;
        if run.name == "ingest" {
            let scope = if s.backend == DbKind::Sqlite && s.concurrency == 32 {
                ""
            } else {
                " (stated for SQLite at 32 senders)"
            };
            let _ = writeln!(
                md,
                "  - ≥ {} accepted/s{scope}: {} ({} /s)",
                thousands(TARGET_PER_SEC as u64),
                verdict(run.per_sec() >= TARGET_PER_SEC),
                thousands(run.per_sec().round() as u64)
            );
            let _ = writeln!(
                md,
                "  - p99 to `202` < {TARGET_P99_MS} ms at 32 senders: {} ({:.2} ms)",
                verdict(run.ms(0.99) < TARGET_P99_MS),
                run.ms(0.99)
            );
            if let Some(limit) = commits {
                let fraction = limit.fraction(run.per_sec());
                let _ = writeln!(
                    md,
                    "  - ≥ {:.0} % of the database's single-row commits/s{}: {} ({:.0} %: {} of {} /s)",
                    TARGET_OF_COMMITS * 100.0,
                    if s.backend == DbKind::Postgres {
                        ""
                    } else {
                        " (stated for PostgreSQL)"
                    },
                    verdict(fraction >= TARGET_OF_COMMITS),
                    fraction * 100.0,
                    thousands(run.per_sec().round() as u64),
                    thousands(limit.commits_per_sec.round() as u64)
                );
            }
        }
        if let Some(lag) = &r.lag {
            let p99 = lag.lag.value_at_quantile(0.99) as f64 / 1000.0;
            let complete = lag.pending == 0 && lag.other.is_empty();
            let _ = writeln!(
                md,
                "  - inbox lag p99 < 1 s: {} ({p99:.1} ms by processed_at{}{})",
                verdict(p99 < TARGET_LAG_P99_MS && complete),
                run.probe.as_ref().map_or_else(String::new, |p| format!(
                    ", {:.1} ms by the probe",
                    p.lag.value_at_quantile(0.99) as f64 / 1000.0
                )),
                if complete {
                    String::new()
                } else {
                    format!(
                        "; {} sampled deliveries not processed",
                        lag.pending + lag.other.len()
                    )
                }
            );
        }
        let _ = writeln!(
            md,
            "  - no errors ({}): {} ({} errors)",
            run.name,
            verdict(run.errors == 0),
            run.errors
        );
    }
    md.push('\n');
}

fn sync_section(md: &mut String, s: &Summary, backend: &str, sync: &SyncOutcome) {
    let fake = &sync.fake;
    let _ = writeln!(
        md,
        "### {backend}: sync over {} sandbox connections, fake provider: {} pages of {} events, \
         {} ms each\n",
        thousands(sync.connections as u64),
        fake.pages,
        fake.page_size,
        fake.latency.as_millis()
    );
    md.push_str(
        "| Backend | Connections | Jobs succeeded | Failed | Retries | Pages | Provider requests \
         | Signals | Window s | signals/s | jobs/s | Request gap p50 ms | p99 ms | Wall s |\n",
    );
    md.push_str("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n");
    let _ = writeln!(
        md,
        "| {} | {} | {} | {} | {} | {} | {} | {} | {:.2} | {} | {:.0} | {:.1} | {:.1} | {:.2} |\n",
        s.backend.as_str(),
        thousands(sync.connections as u64),
        thousands(sync.succeeded as u64),
        sync.failed,
        sync.extra_attempts,
        thousands(sync.pages),
        thousands(sync.provider.requests),
        thousands(sync.signals),
        sync.window.as_secs_f64(),
        thousands(sync.signals_per_sec().round() as u64),
        sync.jobs_per_sec(),
        sync.gap_ms(0.5),
        sync.gap_ms(0.99),
        sync.wall.as_secs_f64(),
    );
    let _ = writeln!(
        md,
        "- Setup: {} tenants, each connected to the sandbox through the connect journey over \
         HTTP (tokens sealed by the server), one `POST /connections/{{id}}/sync` each, with a \
         server running `POBLYSH_ROLES=api`. The harness moved each connection's next \
         scheduled sync a day ahead, so the scheduler adds no job of its own.",
        thousands(sync.connections as u64)
    );
    let _ = writeln!(
        md,
        "- Fake provider: the harness serves the sandbox's remote API \
         (`POBLYSH_SANDBOX_API_BASE_URL`) on 127.0.0.1 in its own process; each request waits \
         {} ms, then lists up to {} events; each connection holds {} pages ({} signals, {} in \
         all, {}); requests came from {} connections{}. Request gap: time between one \
         connection's consecutive requests (latency plus the engine's work on the page before).",
        fake.latency.as_millis(),
        fake.page_size,
        fake.pages,
        fake.pages * fake.page_size,
        thousands(sync.expected_signals),
        if sync.signals == sync.expected_signals {
            "every one listed afterwards".to_string()
        } else {
            format!("but {} listed afterwards", thousands(sync.signals))
        },
        thousands(sync.provider.connections as u64),
        if sync.provider.refused > 0 {
            format!(
                ", {} requests without a token refused",
                sync.provider.refused
            )
        } else {
            String::new()
        }
    );
    let _ = writeln!(
        md,
        "- Measured: a second server over the same database with `POBLYSH_ROLES=api,worker` \
         ({jobs} jobs at a time, `POBLYSH_SYNC_CONCURRENCY={jobs}`) runs the queued jobs, each a \
         first sync reading every page. Window: first job's `started_at` to last job's \
         `finished_at`; signals are counted through `GET /signals` per connection afterwards; \
         pages are the server's `provider_calls_total` (ok), provider requests the fake's own \
         count. Wall: from starting the server until its `sync_jobs_total` counted every job. \
         With {jobs} jobs in flight and one call at a time per job, the latency alone caps the \
         process at {jobs} × page size / latency = {cap} signals/s.",
        jobs = sync.jobs_at_once,
        cap = thousands(
            (sync.jobs_at_once as u64 * sync.fake.page_size * 1000)
                / (sync.fake.latency.as_millis().max(1) as u64)
        ),
    );
}
