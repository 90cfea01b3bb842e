//! The report: machine facts and the Markdown block to paste into `docs/benchmarks.md`.

use std::fmt::Write as _;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};

use crate::database::DbKind;
use crate::dataset::Loaded;
use crate::drive::{cores, DeepCursors, Scenario, PAGE_SIZE};
pub use crate::machine::{git_commit, load_average, thousands, Machine};

/// Everything one run measured.
pub struct Summary {
    pub backend: DbKind,
    pub signals: u64,
    pub tenants: u32,
    pub batch_size: usize,
    pub loaded: Loaded,
    pub analyzed: bool,
    pub concurrency: usize,
    pub warmup: Duration,
    pub duration: Duration,
    pub db_connections: u32,
    pub ready_in: Duration,
    pub idle_rss_kb: u64,
    pub deep: DeepCursors,
    /// The fixed-body floor's size: the mean page body over `sized_pages` pages.
    pub page_bytes: usize,
    pub sized_pages: usize,
    pub scenarios: Vec<Scenario>,
    pub machine: Machine,
    pub load_after: Option<String>,
    pub commit: Option<String>,
    pub finished_at: DateTime<Utc>,
}

/// Kilobytes as megabytes (MiB).
pub fn mb(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

/// The scenario every other is read against: `GET /healthz` on the same server in the same run.
pub const FLOOR: &str = "healthz";
/// The second floor: `GET /bench/floor`, a fixed body the size of a page behind the same
/// authentication as `GET /signals`, on the same server in the same run.
pub const FIXED_FLOOR: &str = "fixed_body";

/// `scenario`'s throughput and p99 as fractions of each floor among `earlier`.
pub fn against_floors(scenario: &Scenario, earlier: &[Scenario]) -> Vec<String> {
    [FLOOR, FIXED_FLOOR]
        .iter()
        .filter_map(|name| earlier.iter().find(|sc| sc.name == *name))
        .map(|floor| {
            format!(
                "{:.2} of {}'s throughput ({} vs {} req/s), p99 {:.1}× its",
                scenario.req_per_sec() / floor.req_per_sec().max(1e-9),
                floor.name,
                thousands(scenario.req_per_sec().round() as u64),
                thousands(floor.req_per_sec().round() as u64),
                scenario.ms(0.99) / floor.ms(0.99).max(1e-9),
            )
        })
        .collect()
}

/// `sc`'s throughput as a fraction of the scenario `floor`, when it ran.
fn fraction_of(s: &Summary, sc: &Scenario, floor: &str) -> String {
    s.scenarios.iter().find(|f| f.name == floor).map_or_else(
        || "n/a".to_string(),
        |f| format!("{:.2}", sc.req_per_sec() / f.req_per_sec().max(1e-9)),
    )
}

/// The Markdown block for `docs/benchmarks.md`.
pub fn markdown(s: &Summary) -> String {
    let backend = match s.backend {
        DbKind::Sqlite => "SQLite",
        DbKind::Postgres => "PostgreSQL",
    };
    let mut md = String::new();
    let _ = writeln!(
        md,
        "### {backend}: {} signals, {} tenants, {} clients\n",
        thousands(s.signals),
        s.tenants,
        s.concurrency
    );
    md.push_str(
        "| Backend | Scenario | Clients | Requests | Errors | req/s | of /healthz | of fixed body \
         | p50 ms | p90 ms | p99 ms | max ms | Server CPU | Client CPU | Idle RSS MB | Max RSS MB |\n",
    );
    md.push_str("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n");
    for sc in &s.scenarios {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {} | {:.1} | {:.1} |",
            s.backend.as_str(),
            sc.name,
            s.concurrency,
            thousands(sc.requests),
            sc.errors,
            thousands(sc.req_per_sec().round() as u64),
            fraction_of(s, sc, FLOOR),
            fraction_of(s, sc, FIXED_FLOOR),
            sc.ms(0.5),
            sc.ms(0.9),
            sc.ms(0.99),
            sc.max_ms(),
            cores(sc.server_cpu),
            cores(sc.client_cpu),
            mb(s.idle_rss_kb),
            mb(sc.max_rss_kb),
        );
    }
    md.push('\n');
    let per_tenant = s.signals / u64::from(s.tenants);
    let _ = writeln!(
        md,
        "- Data: {} signals over {} tenants (~{} each, one GitHub connection per tenant), \
         occurred_at spread over 365 days, payload ≈ {} B; loaded through \
         `Store::insert_signals` in batches of {} in {:.1} s ({} rows/s){}.",
        thousands(s.loaded.rows),
        s.tenants,
        thousands(per_tenant),
        s.loaded.payload_bytes,
        thousands(s.batch_size as u64),
        s.loaded.elapsed.as_secs_f64(),
        thousands(s.loaded.rows_per_sec().round() as u64),
        if s.analyzed { "; then `ANALYZE`" } else { "" }
    );
    let _ = writeln!(
        md,
        "- Requests: `GET /signals?limit={PAGE_SIZE}` (no payloads) for a random tenant; \
         `deep_page` adds one of {} cursors from {} tenants, {} (cursors taken from the \
         server's `next_cursor`).",
        s.deep.targets.len(),
        s.deep.tenants,
        s.deep.describe()
    );
    let _ = writeln!(
        md,
        "- Floors, on the same server in the same run: `healthz` is `GET /healthz` (no \
         authentication, no database); `fixed_body` is `GET /bench/floor` for a random tenant \
         with the operator token, a {} B JSON body (`POBLYSH_BENCH_FLOOR_BYTES`: the mean body \
         of {} pages, first and deep, requested once each on a first server over the same \
         database before this one started): authentication, the edge middleware and a page's \
         bytes, no database and no serialization. The `of ...` columns are each scenario's \
         req/s as a fraction of each floor.",
        s.page_bytes, s.sized_pages
    );
    let _ = writeln!(
        md,
        "- Load: {} concurrent client tasks on one keep-alive `reqwest` client, {} s warm-up \
         (not recorded), then {} s per scenario; every non-200 answer counts as an error.",
        s.concurrency,
        s.warmup.as_secs(),
        s.duration.as_secs()
    );
    let _ = writeln!(
        md,
        "- Server: release `connectors serve` in its own process, `POBLYSH_DB_MAX_CONNECTIONS={}`, \
         `POBLYSH_LOG_LEVEL=warn`; ready in {} ms; idle RSS measured 2 s after readiness, \
         max RSS sampled every 500 ms under load. CPU columns: % of one core during the \
         recorded window{}.",
        s.db_connections,
        s.ready_in.as_millis(),
        if s.backend == DbKind::Postgres {
            " (server CPU is the `connectors` process only; PostgreSQL's own processes \
             run on the same CPUs and are not counted)"
        } else {
            ""
        }
    );
    let _ = writeln!(
        md,
        "- Machine: {}; load average (1/5/15 min) {} before the run, {} after. **Client and \
         server share these CPUs**, so the client's CPU use is taken from the server.",
        s.machine.describe(),
        s.machine.load_before.as_deref().unwrap_or("n/a"),
        s.load_after.as_deref().unwrap_or("n/a")
    );
    let _ = writeln!(
        md,
        "- Build: {}; finished {}.",
        s.commit.as_deref().unwrap_or("unknown commit"),
        s.finished_at.to_rfc3339_opts(SecondsFormat::Secs, true)
    );
    md.push_str(&targets(s));
    md
}

/// The targets of `docs/benchmarks.md`, checked against this run.
fn targets(s: &Summary) -> String {
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    let mut md = String::from("- Targets");
    if s.concurrency != 32 {
        md.push_str(" (the req/s and p99 targets are stated for 32 clients)");
    }
    md.push_str(":\n");
    let find = |name: &str| s.scenarios.iter().find(|sc| sc.name == name);
    if let Some(first) = find("first_page") {
        let _ = writeln!(
            md,
            "  - ≥ 5,000 req/s: {} ({} req/s on first_page)",
            verdict(first.req_per_sec() >= 5000.0),
            thousands(first.req_per_sec().round() as u64)
        );
        if let Some(fixed) = find(FIXED_FLOOR) {
            for sc in [Some(first), find("deep_page")].into_iter().flatten() {
                let fraction = sc.req_per_sec() / fixed.req_per_sec().max(1e-9);
                let _ = writeln!(
                    md,
                    "  - ≥ ½ of the fixed-body floor: {} ({} at {fraction:.2}: {} of {} req/s)",
                    verdict(fraction >= 0.5),
                    sc.name,
                    thousands(sc.req_per_sec().round() as u64),
                    thousands(fixed.req_per_sec().round() as u64)
                );
            }
        }
        if let Some(deep) = find("deep_page") {
            let ratio = deep.req_per_sec() / first.req_per_sec().max(1e-9);
            let _ = writeln!(
                md,
                "  - deep pages as fast as the first: {} (deep/first throughput {:.2}, p99 \
                 {:.2} vs {:.2} ms)",
                verdict(ratio >= 0.9),
                ratio,
                deep.ms(0.99),
                first.ms(0.99)
            );
        }
    }
    let worst_p99 = s.scenarios.iter().map(|sc| sc.ms(0.99)).fold(0.0, f64::max);
    let _ = writeln!(
        md,
        "  - p99 < 20 ms: {} (worst p99 {worst_p99:.2} ms)",
        verdict(worst_p99 < 20.0)
    );
    let _ = writeln!(
        md,
        "  - idle RSS < 30 MB: {} ({:.1} MB)",
        verdict(mb(s.idle_rss_kb) < 30.0),
        mb(s.idle_rss_kb)
    );
    let errors: u64 = s.scenarios.iter().map(|sc| sc.errors).sum();
    let _ = writeln!(
        md,
        "  - no errors: {} ({errors} errors)",
        verdict(errors == 0)
    );
    md
}
