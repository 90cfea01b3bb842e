//! The report: every figure at each stage, and the ratios large/small that say whether the
//! cost per request stayed flat (1.00 = flat; above 1 = dearer as the data grew).

use std::fmt::Write as _;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};

use crate::database::DbKind;
use crate::drive::Scenario;
use crate::ingest::IngestRun;
use crate::report::{thousands, Machine, FLOOR};
use crate::scheduler::{ms, SchedulerFigures};

/// What one stage measured.
pub struct Stage {
    pub signals: u64,
    pub connections: u64,
    /// Fewest and most signals a deep cursor skips.
    pub deep_skip: (u64, u64),
    pub per_tenant: u64,
    /// `healthz`, `first_page`, `deep_page`.
    pub http: Vec<Scenario>,
    pub ingest: IngestRun,
    pub sched: SchedulerFigures,
}

impl Stage {
    fn http(&self, name: &str) -> Option<&Scenario> {
        self.http.iter().find(|s| s.name == name)
    }
}

pub struct Summary {
    pub backend: DbKind,
    pub concurrency: usize,
    pub warmup: Duration,
    pub duration: Duration,
    pub db_connections: u32,
    pub stages: Vec<Stage>,
    pub machine: Machine,
    pub load_after: Option<String>,
    pub commit: Option<String>,
    pub finished_at: DateTime<Utc>,
}

/// One row: a figure at each stage, and which way is dearer.
struct Row {
    what: String,
    values: Vec<f64>,
    /// `true` when a larger value is a higher cost (latency), `false` for throughput.
    cost: bool,
    decimals: usize,
}

impl Row {
    /// The cost at stage `large` over the cost at stage `small`.
    fn ratio(&self, small: usize, large: usize) -> Option<f64> {
        let (s, l) = (*self.values.get(small)?, *self.values.get(large)?);
        if s <= 0.0 || l <= 0.0 {
            return None;
        }
        Some(if self.cost { l / s } else { s / l })
    }
}

fn rows(s: &Summary) -> Vec<Row> {
    let mut rows = Vec::new();
    let http = |name: &'static str, f: fn(&Scenario) -> f64| -> Vec<f64> {
        s.stages
            .iter()
            .map(|st| st.http(name).map_or(0.0, f))
            .collect()
    };
    for name in [FLOOR, "first_page", "deep_page"] {
        let path = match name {
            FLOOR => "`GET /healthz`",
            "first_page" => "`GET /signals` first page",
            _ => "`GET /signals` deep page",
        };
        rows.push(Row {
            what: format!("{path}: req/s"),
            values: http(name, Scenario::req_per_sec),
            cost: false,
            decimals: 0,
        });
        rows.push(Row {
            what: format!("{path}: p50 ms"),
            values: http(name, |sc| sc.ms(0.5)),
            cost: true,
            decimals: 2,
        });
        rows.push(Row {
            what: format!("{path}: p99 ms"),
            values: http(name, |sc| sc.ms(0.99)),
            cost: true,
            decimals: 2,
        });
    }
    let ingest = |f: fn(&IngestRun) -> f64| -> Vec<f64> {
        s.stages.iter().map(|st| f(&st.ingest)).collect()
    };
    rows.push(Row {
        what: "webhook ingest: accepted/s".into(),
        values: ingest(IngestRun::per_sec),
        cost: false,
        decimals: 0,
    });
    rows.push(Row {
        what: "webhook ingest: p50 ms to `202`".into(),
        values: ingest(|r| r.ms(0.5)),
        cost: true,
        decimals: 2,
    });
    rows.push(Row {
        what: "webhook ingest: p99 ms to `202`".into(),
        values: ingest(|r| r.ms(0.99)),
        cost: true,
        decimals: 2,
    });
    let sched = |f: fn(&SchedulerFigures) -> f64| -> Vec<f64> {
        s.stages.iter().map(|st| f(&st.sched)).collect()
    };
    rows.push(Row {
        what: "scheduler pass, nothing due: p50 ms".into(),
        values: sched(|f| ms(&f.idle, 0.5)),
        cost: true,
        decimals: 2,
    });
    let due = s.stages.first().map_or(0, |st| st.sched.due);
    rows.push(Row {
        what: format!("scheduler pass, {due} due: p50 ms"),
        values: sched(|f| ms(&f.partial, 0.5)),
        cost: true,
        decimals: 2,
    });
    rows.push(Row {
        what: format!("scheduler pass, {due} due: µs per connection"),
        values: sched(SchedulerFigures::partial_per_connection_us),
        cost: true,
        decimals: 0,
    });
    rows.push(Row {
        what: "scheduler pass, every connection due: s".into(),
        values: sched(|f| f.full.as_secs_f64()),
        cost: true,
        decimals: 2,
    });
    rows.push(Row {
        what: "scheduler pass, every connection due: µs per connection".into(),
        values: sched(SchedulerFigures::full_per_connection_us),
        cost: true,
        decimals: 0,
    });
    rows
}

fn fmt(value: f64, decimals: usize) -> String {
    if decimals == 0 {
        thousands(value.round() as u64)
    } else {
        format!("{value:.decimals$}")
    }
}

fn ratio(value: Option<f64>) -> String {
    value.map_or_else(|| "n/a".to_string(), |r| format!("{r:.2}"))
}

/// The Markdown block for `docs/benchmarks.md`.
pub fn markdown(s: &Summary) -> String {
    let backend = match s.backend {
        DbKind::Sqlite => "SQLite",
        DbKind::Postgres => "PostgreSQL",
    };
    let mut md = String::new();
    let _ = writeln!(md, "### {backend}\n");
    let mut header = String::from("| Figure |");
    let mut rule = String::from("|---|");
    for st in &s.stages {
        let _ = write!(
            header,
            " {} signals, {} connections |",
            short(st.signals),
            short(st.connections)
        );
        rule.push_str("--:|");
    }
    header.push_str(" cost ratio, signals ×10 | cost ratio, connections ×100 |");
    rule.push_str("--:|--:|");
    let _ = writeln!(md, "{header}\n{rule}");
    for row in rows(s) {
        let mut line = format!("| {} |", row.what);
        for v in &row.values {
            let _ = write!(line, " {} |", fmt(*v, row.decimals));
        }
        let _ = write!(
            line,
            " {} | {} |",
            ratio(row.ratio(0, 1)),
            ratio(row.ratio(1, 2))
        );
        let _ = writeln!(md, "{line}");
    }
    md.push('\n');
    let _ = writeln!(
        md,
        "- Cost ratio: the cost per request at the larger size over the cost at the smaller \
         (for req/s, small/large; for times, large/small): 1.00 is flat, above 1 dearer."
    );
    for (i, st) in s.stages.iter().enumerate() {
        let floor = st.http(FLOOR).map_or(0.0, Scenario::req_per_sec).max(1e-9);
        let of = |name: &str| st.http(name).map_or(0.0, Scenario::req_per_sec) / floor;
        let _ = writeln!(
            md,
            "- Stage {}: {} signals ({} per tenant; deep cursors skip {}–{}), {} connections; \
             of /healthz's throughput: first page {:.2}, deep page {:.2}, ingest {:.2}; \
             server CPU during ingest {}.",
            i + 1,
            thousands(st.signals),
            thousands(st.per_tenant),
            thousands(st.deep_skip.0),
            thousands(st.deep_skip.1),
            thousands(st.connections),
            of("first_page"),
            of("deep_page"),
            st.ingest.per_sec() / floor,
            crate::ingest::cores(st.ingest.server_cpu),
        );
    }
    let _ = writeln!(
        md,
        "- Load: {} concurrent clients on one keep-alive client, {} s warm-up (not recorded) \
         then {} s per HTTP scenario; server `POBLYSH_ROLES=api`, \
         `POBLYSH_DB_MAX_CONNECTIONS={}`. The scheduler passes run in the harness over a \
         store of 4 connections.",
        s.concurrency,
        s.warmup.as_secs(),
        s.duration.as_secs(),
        s.db_connections
    );
    let _ = writeln!(
        md,
        "- Machine: {}; load average {} before, {} after; client, server and database share \
         it. Build: {}; finished {}.",
        s.machine.describe(),
        s.machine.load_before.as_deref().unwrap_or("n/a"),
        s.load_after.as_deref().unwrap_or("n/a"),
        s.commit.as_deref().unwrap_or("unknown commit"),
        s.finished_at.to_rfc3339_opts(SecondsFormat::Secs, true)
    );
    md
}

/// `10000000` as `10M`, `100000` as `100k`.
fn short(n: u64) -> String {
    if n >= 1_000_000 && n % 100_000 == 0 {
        format!("{}M", n as f64 / 1e6)
    } else if n >= 1_000 && n % 100 == 0 {
        format!("{}k", n as f64 / 1e3)
    } else {
        thousands(n)
    }
}
