//! The multi-instance fault run: three release instances on one fresh PostgreSQL database (two
//! `POBLYSH_ROLES=api,worker`, one `worker`), all started at once on the empty database, under
//! signed webhook ingest at a fixed rate spread over the two API instances, `GET /signals`
//! readers, and scheduled syncs of many sandbox connections against a fake sandbox API with
//! latency and occasional `429`/`500`. Midway one `api,worker` instance is killed with
//! `SIGKILL` and started again a little later. It then checks, and prints as Markdown for
//! `docs/benchmarks.md`:
//!
//! * the three instances became ready and the migration table holds every migration once;
//! * every acknowledged delivery (`202`) became exactly one signal;
//! * no connection was synced by two jobs at once (the fake records overlaps);
//! * every sync job ended (none left `running` or stuck in the queue);
//! * each job the killed instance held was taken over within the lease (plus the claim's
//!   polling slack), read from the jobs' rows;
//! * throughput and p99 of ingest and of `GET /signals` before, during and after the kill.
//!
//! It exits non-zero when a check fails. `scripts/fault-run` builds the release binary and
//! runs it:
//!
//! ```text
//! scripts/fault-run                                  # the full run, about 4 minutes
//! scripts/fault-run --duration-secs 60 --connections 100 --rate 100   # a short one
//! ```

// Shared with bench_signals and bench_ingest; not every helper is used here.
#[allow(dead_code)]
#[path = "bench_ingest/api.rs"]
mod api;
#[allow(dead_code)]
#[path = "bench_signals/database.rs"]
mod database;
#[allow(dead_code)]
#[path = "bench_signals/server.rs"]
mod server;

#[path = "fault_run/checks.rs"]
mod checks;
#[path = "fault_run/fake.rs"]
mod fake;
#[path = "fault_run/fleet.rs"]
mod fleet;
#[path = "fault_run/load.rs"]
mod load;
#[path = "fault_run/report.rs"]
mod report;
#[path = "fault_run/run.rs"]
mod run;
#[path = "fault_run/verdict.rs"]
mod verdict;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// Three instances on one PostgreSQL under load, one killed midway (run
/// `cargo build --release` first, or use `scripts/fault-run`).
#[derive(Debug, Parser)]
#[command(name = "fault_run")]
pub struct Args {
    /// Seconds of load; the kill comes after a third of it.
    #[arg(long, default_value_t = 180)]
    pub duration_secs: u64,
    /// Seconds between the kill and starting the instance again.
    #[arg(long, default_value_t = 20)]
    pub restart_after_secs: u64,
    /// Webhook deliveries per second, spread over the two API instances.
    #[arg(long, default_value_t = 300)]
    pub rate: u32,
    /// Tenants the deliveries are spread over (one sandbox connection each).
    #[arg(long, default_value_t = 8)]
    pub tenants: usize,
    /// Concurrent `GET /signals` readers.
    #[arg(long, default_value_t = 4)]
    pub readers: usize,
    /// Sandbox connections synced on schedule (one tenant each).
    #[arg(long, default_value_t = 1_000)]
    pub connections: usize,
    /// `POBLYSH_SANDBOX_SYNC_INTERVAL_SECS` of the instances.
    #[arg(long, default_value_t = 20)]
    pub sync_interval_secs: u64,
    /// Milliseconds the fake sandbox API waits before each answer.
    #[arg(long, default_value_t = 20)]
    pub provider_latency_ms: u64,
    /// Share of the fake's answers that are `429` (`Retry-After: 1`) or `500`, half each.
    #[arg(long, default_value_t = 0.02)]
    pub fault_rate: f64,
    /// New events per connection per second at the fake (each sync finds new ones).
    #[arg(long, default_value_t = 0.2)]
    pub provider_events_per_sec: f64,
    /// `POBLYSH_SYNC_CONCURRENCY` of each worker instance.
    #[arg(long, default_value_t = 8)]
    pub sync_concurrency: usize,
    /// `POBLYSH_DB_MAX_CONNECTIONS` of each instance.
    #[arg(long, default_value_t = 8)]
    pub db_connections: u32,
    /// Concurrent connect journeys while setting up.
    #[arg(long, default_value_t = 16)]
    pub setup_concurrency: usize,
    /// Seconds to wait, after the load, for every job to end and every delivery's signal.
    #[arg(long, default_value_t = 150)]
    pub drain_timeout_secs: u64,
    /// Server to create the throw-away database on.
    #[arg(long, default_value = "postgres://127.0.0.1:5432/test")]
    pub postgres_url: String,
    /// Directory for the instances' logs (a fresh subdirectory); default: the temp directory.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Keep the work directory (logs) after the run.
    #[arg(long)]
    pub keep: bool,
    /// Server binary; default: `connectors` beside this example's directory.
    #[arg(long)]
    pub server_bin: Option<PathBuf>,
    /// Seconds to wait for an instance's `/readyz`.
    #[arg(long, default_value_t = 60)]
    pub ready_timeout_secs: u64,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run::run(args).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("fault_run: a check failed (see the table above)");
            ExitCode::FAILURE
        }
        Err(err) => {
            eprintln!("fault_run: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
