//! After the load: lets the instances finish, reads the checks from the database and the fake
//! provider, and splits the figures into phases.

use std::time::Duration;

use anyhow::Result;
use sqlx::PgPool;

use crate::checks;
use crate::fake::FakeApi;
use crate::load::Recorded;
use crate::report::{secs, thousands, Check, Phase, PhaseFigures, PhaseLine, Summary};
use crate::run::{Kill, Timeline, CLAIM_SLACK, PROVIDER_TIMEOUT_SECS};
use crate::Args;

/// The lease of the instances' jobs: three provider time-outs, at least 60 s.
pub fn lease() -> Duration {
    Duration::from_secs((PROVIDER_TIMEOUT_SECS * 3).max(60))
}

/// Stops new syncs being scheduled, waits for the queue to empty and the deliveries' signals,
/// then checks jobs, takeovers and deliveries.
pub async fn drain_checks(
    args: &Args,
    pool: &PgPool,
    recorded: &Recorded,
    kill: &Kill,
    timeline: &Timeline,
) -> Result<Vec<Check>> {
    let timeout = Duration::from_secs(args.drain_timeout_secs);
    checks::hold_schedule(pool).await?;
    println!(
        "waiting (up to {} s) for every job to end and every delivery's signal",
        timeout.as_secs()
    );
    let states = checks::wait_jobs_ended(pool, timeout).await?;
    let wrong = checks::wait_delivered(pool, &recorded.acks, timeout).await?;
    let takeovers = checks::takeovers(pool, kill.pid, &kill.held, timeline.kill.utc).await?;
    Ok(vec![
        delivery_check(recorded, &wrong),
        jobs_check(&states),
        takeover_check(&takeovers),
    ])
}

fn delivery_check(recorded: &Recorded, wrong: &[(String, i64)]) -> Check {
    let missing = wrong.iter().filter(|w| w.1 == 0).count();
    let doubled = wrong.len() - missing;
    let mut detail = format!(
        "{} deliveries acknowledged: {} without a signal, {} with more than one",
        thousands(recorded.acks.len() as u64),
        missing,
        doubled
    );
    if let Some(sample) = wrong.first() {
        detail.push_str(&format!(" (e.g. `{}`: {})", sample.0, sample.1));
    }
    Check {
        name: "every acknowledged delivery became exactly one signal",
        passed: wrong.is_empty() && !recorded.acks.is_empty(),
        detail,
    }
}

fn jobs_check(states: &checks::JobStates) -> Check {
    Check {
        name: "every sync job ended",
        passed: states.ended() && states.succeeded > 0,
        detail: format!(
            "{} succeeded, {} failed (attempts used up on injected faults); {} running, {} \
             queued and due, {} queued for later",
            thousands(states.succeeded as u64),
            states.failed,
            states.running,
            states.queued_due,
            states.queued_later
        ),
    }
}

fn takeover_check(t: &checks::Takeovers) -> Check {
    let bound = lease() + CLAIM_SLACK;
    let late = t.delays.iter().filter(|d| **d > bound).count();
    let range = match (t.delays.iter().min(), t.delays.iter().max()) {
        (Some(a), Some(b)) => format!("{} to {} after the kill", secs(*a), secs(*b)),
        _ => "none to take over".to_string(),
    };
    Check {
        name: "the killed instance's leases were taken over within the lease",
        passed: t.held > 0 && t.not_taken.is_empty() && late == 0,
        detail: format!(
            "{} jobs held at the kill, {} taken over {range} (lease {} + {} claim slack), {} \
             later than that, {} not taken over",
            t.held,
            t.delays.len(),
            secs(lease()),
            secs(CLAIM_SLACK),
            late,
            t.not_taken.len()
        ),
    }
}

pub fn overlap_check(fake: &FakeApi) -> Check {
    let stats = fake.stats();
    Check {
        name: "no connection synced by two jobs at once",
        passed: stats.overlaps == 0 && stats.served > 0,
        detail: format!(
            "{} event requests answered over {} connections ({} `429`, {} `500` injected); {} \
             requests overlapped another of their connection, on {} connections",
            thousands(stats.served),
            thousands(stats.connections as u64),
            thousands(stats.rate_limited),
            thousands(stats.server_errors),
            stats.overlaps,
            stats.overlapping_connections
        ),
    }
}

/// Before the kill, while the instance is down (until it is ready again), after.
pub async fn phase_lines(
    pool: &PgPool,
    recorded: &Recorded,
    t: &Timeline,
) -> Result<Vec<PhaseLine>> {
    let spans = [
        ("before the kill", t.start, t.kill),
        ("instance down", t.kill, t.back),
        ("after the restart", t.back, t.end),
    ];
    let mut lines = Vec::new();
    for (name, from, to) in spans {
        let phase = Phase {
            name,
            from: from.at,
            to: to.at,
        };
        lines.push(PhaseLine {
            ingest: PhaseFigures::of(&recorded.deliveries, &phase)?,
            reads: PhaseFigures::of(&recorded.reads, &phase)?,
            signals: checks::signals_between(pool, from.utc, to.utc).await?,
            phase,
        });
    }
    Ok(lines)
}

pub fn summary(
    args: &Args,
    checks: Vec<Check>,
    phases: Vec<PhaseLine>,
    recorded: &Recorded,
    timeline: &Timeline,
) -> Summary {
    let command = std::env::args()
        .skip(1)
        .fold("scripts/fault-run".to_string(), |acc, a| acc + " " + &a);
    let mut notes = vec![format!(
        "Kill at {:.1} s of {} s, instance ready again at {:.1} s; {} deliveries sent to the \
         other instance after a refused connection.",
        (timeline.kill.at - timeline.start.at).as_secs_f64(),
        args.duration_secs,
        (timeline.back.at - timeline.start.at).as_secs_f64(),
        thousands(recorded.rerouted)
    )];
    if !recorded.error_samples.is_empty() {
        notes.push(format!(
            "Delivery errors (first {}): {}",
            recorded.error_samples.len(),
            recorded.error_samples.join("; ")
        ));
    }
    Summary {
        command,
        machine: machine(),
        commit: git_commit(),
        settings: settings(args),
        checks,
        phases,
        notes,
    }
}

fn settings(args: &Args) -> Vec<(&'static str, String)> {
    vec![
        ("`--rate`", format!("{}/s", args.rate)),
        ("`--tenants`", args.tenants.to_string()),
        ("`--readers`", args.readers.to_string()),
        ("`--connections`", thousands(args.connections as u64)),
        ("sync interval", format!("{} s", args.sync_interval_secs)),
        (
            "provider latency",
            format!("{} ms", args.provider_latency_ms),
        ),
        (
            "faults",
            format!("{:.1} % of answers", args.fault_rate * 100.0),
        ),
        (
            "`POBLYSH_SYNC_CONCURRENCY`",
            args.sync_concurrency.to_string(),
        ),
        (
            "`POBLYSH_DB_MAX_CONNECTIONS`",
            args.db_connections.to_string(),
        ),
    ]
}

fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "n/a".to_string());
    format!("{cpus} CPUs, load average {load} at the end, PostgreSQL on the same machine")
}

fn git_commit() -> String {
    std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".to_string())
}
