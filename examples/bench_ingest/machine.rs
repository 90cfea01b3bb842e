//! Facts about the run shared by the harnesses' reports: the machine, its load, the commit,
//! and numbers with thousands separators.

use std::process::Command;

/// The machine the benchmark runs on (client, server and database alike).
#[derive(Clone, Debug)]
pub struct Machine {
    pub cpus: usize,
    pub cpu_model: Option<String>,
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
            load_before: load_average(),
        }
    }

    pub fn describe(&self) -> String {
        match &self.cpu_model {
            Some(model) => format!("{} CPU(s) ({model})", self.cpus),
            None => format!("{} CPU(s)", self.cpus),
        }
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
