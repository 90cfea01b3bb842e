//! The server under test: the release `connectors` binary in its own process, plus what
//! `/proc` tells about it (resident memory, CPU time).

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use reqwest::{Client, StatusCode, Url};

/// Finds the server binary: `explicit`, or `connectors` in the profile directory this example
/// was built into (`target/release/examples/bench_signals` → `target/release/connectors`).
pub fn locate(explicit: Option<&Path>) -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locating this executable")?;
    let path = match explicit {
        Some(path) => path.to_path_buf(),
        None => exe
            .parent()
            .and_then(Path::parent)
            .context("this executable has no profile directory")?
            .join(format!("connectors{}", std::env::consts::EXE_SUFFIX)),
    };
    if !path.is_file() {
        bail!(
            "server binary {} not found; build it first with `cargo build --release` \
             (or pass --server-bin)",
            path.display()
        );
    }
    // The library is rebuilt with this example; a server binary older than it lags behind.
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let lib = path.with_file_name("libconnectors.rlib");
    if let (Some(server), Some(lib)) = (modified(&path), modified(&lib)) {
        if server < lib {
            eprintln!(
                "warning: {} is older than the library this harness was built with; run \
                 `cargo build --release` so the server carries the current code",
                path.display()
            );
        }
    }
    Ok(path)
}

/// Warns when `harness` is a debug build, finds the server binary ([`locate`]) and creates a
/// fresh work directory named after `harness` in `data_dir` (created when missing), or by
/// default in the system temp directory (removed when dropped); then prints `lines` (what the
/// run is about) and where the binary and the directory are.
pub fn setup(
    harness: &str,
    server_bin: &Option<PathBuf>,
    data_dir: &Option<PathBuf>,
    lines: &[String],
) -> Result<(PathBuf, tempfile::TempDir)> {
    if cfg!(debug_assertions) {
        eprintln!(
            "warning: this harness is a debug build; its own overhead will distort the figures \
             (use cargo run --release)"
        );
    }
    let server_bin = locate(server_bin.as_deref())?;
    let prefix = format!("{harness}_");
    let mut builder = tempfile::Builder::new();
    builder.prefix(&prefix);
    let workdir = match data_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            builder.tempdir_in(dir)
        }
        None => builder.tempdir(),
    }
    .context("creating the work directory")?;
    for line in lines {
        println!("{line}");
    }
    println!("server binary: {}", server_bin.display());
    println!("work directory: {}", workdir.path().display());
    Ok((server_bin, workdir))
}

/// The process's exit code for `harness`'s outcome; an error goes to stderr first.
pub fn exit_code(harness: &str, outcome: Result<()>) -> ExitCode {
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("{harness}: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// How to start the server.
pub struct Spec<'a> {
    pub bin: &'a Path,
    /// Working and data directory (no dotenv files there); the log goes here too.
    pub workdir: &'a Path,
    pub database_url: &'a str,
    pub token: &'a str,
    pub crypto_key: &'a str,
    pub db_connections: u32,
}

/// A running server; killed on drop unless stopped.
pub struct Server {
    child: Child,
    pub pid: u32,
    /// `http://127.0.0.1:<port>/`.
    pub base: Url,
    pub log_path: PathBuf,
    exited: bool,
}

/// A port that was free a moment ago.
fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}

/// Starts `connectors serve` with a clean `POBLYSH_*` environment.
pub fn start(spec: &Spec<'_>) -> Result<Server> {
    let addr = format!("127.0.0.1:{}", free_port()?);
    let log_path = spec.workdir.join("server.log");
    let log =
        File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
    let mut command = Command::new(spec.bin);
    command
        .arg("serve")
        .current_dir(spec.workdir)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("POBLYSH_") {
            command.env_remove(&key);
        }
    }
    command
        .env("POBLYSH_PROFILE", "test")
        .env("POBLYSH_DATABASE_URL", spec.database_url)
        .env("POBLYSH_API_BIND_ADDR", &addr)
        .env("POBLYSH_OPERATOR_TOKEN", spec.token)
        .env("POBLYSH_CRYPTO_KEY", spec.crypto_key)
        .env("POBLYSH_LOG_LEVEL", "warn")
        .env(
            "POBLYSH_DB_MAX_CONNECTIONS",
            spec.db_connections.to_string(),
        )
        .env("POBLYSH_DATA_DIR", spec.workdir);
    let child = command
        .spawn()
        .with_context(|| format!("starting {}", spec.bin.display()))?;
    Ok(Server {
        pid: child.id(),
        child,
        base: Url::parse(&format!("http://{addr}/"))?,
        log_path,
        exited: false,
    })
}

impl Server {
    /// Polls `GET /readyz` until it answers 200; fails if the process exits or `timeout` passes.
    pub async fn wait_ready(&mut self, client: &Client, timeout: Duration) -> Result<Duration> {
        let started = Instant::now();
        let url = self.base.join("readyz")?;
        loop {
            if let Some(status) = self.child.try_wait()? {
                self.exited = true;
                bail!("the server exited with {status} before it was ready");
            }
            let last = match client
                .get(url.clone())
                .timeout(Duration::from_secs(1))
                .send()
                .await
            {
                Ok(response) if response.status() == StatusCode::OK => return Ok(started.elapsed()),
                Ok(response) => format!("HTTP {}", response.status()),
                Err(err) => err.to_string(),
            };
            if started.elapsed() > timeout {
                bail!(
                    "the server was not ready within {} s (last answer from /readyz: {last})",
                    timeout.as_secs()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The last `lines` lines of the server's log.
    pub fn log_tail(&self, lines: usize) -> String {
        match std::fs::read(&self.log_path) {
            Ok(bytes) => {
                let text = String::from_utf8_lossy(&bytes);
                let all: Vec<&str> = text.lines().collect();
                let tail = all[all.len().saturating_sub(lines)..].join("\n");
                if tail.is_empty() {
                    "(empty)".to_string()
                } else {
                    tail
                }
            }
            Err(err) => format!("(cannot read: {err})"),
        }
    }

    /// SIGTERM, then waits up to 15 s for a graceful exit before killing.
    pub async fn stop(mut self) -> Result<ExitStatus> {
        if self.exited {
            bail!("the server had already exited");
        }
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid.to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.try_wait()? {
                self.exited = true;
                return Ok(status);
            }
            if Instant::now() > deadline {
                self.child.kill()?;
                let status = self.child.wait()?;
                self.exited = true;
                eprintln!("warning: the server did not stop within 15 s of SIGTERM; killed it");
                return Ok(status);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if !self.exited {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `VmRSS` of `pid`, in kB.
pub fn rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kb| kb.parse().ok())
}

/// User plus system CPU seconds of `/proc/<which>` (a pid or `self`), all threads.
pub fn cpu_seconds(which: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{which}/stat")).ok()?;
    // Fields after the parenthesised command name start at field 3 (state); utime and stime
    // are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / clock_ticks())
}

/// `getconf CLK_TCK`, 100 when unavailable (the Linux default).
fn clock_ticks() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .and_then(|text| text.trim().parse().ok())
            .filter(|ticks: &f64| *ticks > 0.0)
            .unwrap_or(100.0)
    })
}

/// The JSON body of `response`, which must answer `expected`; `what` names the request in
/// errors.
pub async fn ok_json(
    response: reqwest::Response,
    expected: StatusCode,
    what: &str,
) -> Result<serde_json::Value> {
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    if status != expected {
        bail!(
            "{what} answered {status}: {}",
            text.chars().take(300).collect::<String>()
        );
    }
    serde_json::from_str(&text).with_context(|| format!("{what}: not JSON"))
}
