//! Facts about the run shared by the harnesses' reports: the machine, its load, the commit,
//! and numbers with thousands separators.

use std::fmt::Write as _;
use std::process::Command;

/// The machine the benchmark runs on (client, server and database alike).
#[derive(Clone, Debug)]
pub struct Machine {
    pub cpus: usize,
    pub cpu_model: Option<String>,
    /// `MemTotal` of `/proc/meminfo`, read only by [`Machine::detect_with_memory`].
    pub mem_total_kb: Option<u64>,
    pub load_before: Option<String>,
}

impl Machine {
    pub fn detect() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        Self {
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu_model: cpuinfo
                .lines()
                .find_map(|l| l.strip_prefix("model name"))
                .and_then(|rest| rest.split_once(':'))
                .map(|(_, model)| model.trim().to_string()),
            mem_total_kb: None,
            load_before: load_average(),
        }
    }

    /// [`Machine::detect`] and the memory, which [`Machine::describe`] then names too.
    pub fn detect_with_memory() -> Self {
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        Self {
            mem_total_kb: meminfo
                .lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|kb| kb.parse().ok()),
            ..Self::detect()
        }
    }

    /// A run's first line: `harness`, this machine and its load.
    pub fn headline(&self, harness: &str) -> String {
        format!(
            "{harness}: {}, load average {}",
            self.describe(),
            self.load_before.as_deref().unwrap_or("n/a")
        )
    }

    pub fn describe(&self) -> String {
        let mut text = format!("{} CPU(s)", self.cpus);
        if let Some(model) = &self.cpu_model {
            let _ = write!(text, " ({model})");
        }
        if let Some(kb) = self.mem_total_kb {
            let _ = write!(text, ", {:.1} GiB RAM", kb as f64 / 1024.0 / 1024.0);
        }
        text
    }
}

/// The 1, 5 and 15 minute load averages.
pub fn load_average() -> Option<String> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    Some(
        text.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
    )
}

/// `git describe --always --dirty` of the repository, when available.
pub fn git_commit() -> Option<String> {
    let out = Command::new("git")
        .args(["describe", "--always", "--dirty"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !text.is_empty()).then_some(text)
}

/// `1234567` as `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}
