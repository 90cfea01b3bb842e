//! The run's figures by phase, the checks, and the Markdown for `docs/benchmarks.md`.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::load::Sample;

/// A stretch of the run: before the kill, while the instance is down, after it is back.
#[derive(Clone, Copy)]
pub struct Phase {
    pub name: &'static str,
    pub from: Instant,
    pub to: Instant,
}

impl Phase {
    pub fn secs(&self) -> f64 {
        (self.to - self.from).as_secs_f64().max(1e-9)
    }
}

/// Requests of one kind that started in one phase.
pub struct PhaseFigures {
    pub ok: u64,
    pub errors: u64,
    /// Latency of the successful ones, µs.
    pub latency: Histogram<u64>,
}

impl PhaseFigures {
    pub fn of(samples: &[Sample], phase: &Phase) -> anyhow::Result<Self> {
        let mut latency = Histogram::new_with_bounds(1, 600_000_000, 3)
            .map_err(|e| anyhow::anyhow!("histogram: {e:?}"))?;
        let (mut ok, mut errors) = (0, 0);
        for s in samples
            .iter()
            .filter(|s| s.at >= phase.from && s.at < phase.to)
        {
            if s.ok {
                ok += 1;
                latency.saturating_record((s.took.as_micros() as u64).max(1));
            } else {
                errors += 1;
            }
        }
        Ok(Self {
            ok,
            errors,
            latency,
        })
    }

    pub fn p99_ms(&self) -> f64 {
        self.latency.value_at_quantile(0.99) as f64 / 1000.0
    }
}

/// One phase's line of the table.
pub struct PhaseLine {
    pub phase: Phase,
    pub ingest: PhaseFigures,
    pub reads: PhaseFigures,
    /// Signals stored in the phase.
    pub signals: i64,
}

/// One check with its verdict and what it rests on.
pub struct Check {
    pub name: &'static str,
    pub passed: bool,
    pub detail: String,
}

/// Everything the report prints.
pub struct Summary {
    pub command: String,
    pub machine: String,
    pub commit: String,
    pub settings: Vec<(&'static str, String)>,
    pub checks: Vec<Check>,
    pub phases: Vec<PhaseLine>,
    pub notes: Vec<String>,
}

pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

pub fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

pub fn markdown(s: &Summary) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "### Many instances under faults\n");
    let _ = writeln!(out, "```text\n{}\n```\n", s.command);
    let _ = writeln!(out, "{}; commit {}.\n", s.machine, s.commit);
    let settings: Vec<String> = s.settings.iter().map(|(k, v)| format!("{k} {v}")).collect();
    let _ = writeln!(out, "Settings: {}.\n", settings.join(", "));
    let _ = writeln!(out, "| Check | Result | Measured |\n|---|---|---|");
    for c in &s.checks {
        let verdict = if c.passed { "pass" } else { "**FAIL**" };
        let _ = writeln!(out, "| {} | {verdict} | {} |", c.name, c.detail);
    }
    let _ = writeln!(
        out,
        "\n| Phase | Length | Deliveries accepted/s | Delivery errors | Ingest p99 | Signals \
         stored/s | `GET /signals` req/s | Read errors | `GET /signals` p99 |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for p in &s.phases {
        let secs = p.phase.secs();
        let _ = writeln!(
            out,
            "| {} | {:.0} s | {:.0} | {} | {:.1} ms | {:.0} | {:.0} | {} | {:.1} ms |",
            p.phase.name,
            secs,
            p.ingest.ok as f64 / secs,
            p.ingest.errors,
            p.ingest.p99_ms(),
            p.signals as f64 / secs,
            p.reads.ok as f64 / secs,
            p.reads.errors,
            p.reads.p99_ms()
        );
    }
    if !s.notes.is_empty() {
        let _ = writeln!(out);
        for note in &s.notes {
            let _ = writeln!(out, "- {note}");
        }
    }
    out
}
