//! The three instances of the run, each the release server in its own process on the shared
//! PostgreSQL database: started together, one killed with `SIGKILL` and started again.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use reqwest::{Client, Url};

use crate::server;

/// What every instance shares.
pub struct FleetSpec {
    pub bin: PathBuf,
    pub root: PathBuf,
    pub database_url: String,
    pub token: String,
    pub crypto_key: String,
    /// Lines of `.env.test` beside each instance (roles excepted).
    pub env: Vec<(String, String)>,
    pub db_connections: u32,
    pub ready_timeout: Duration,
}

/// One instance; its process may be gone (killed) and started again.
pub struct Instance {
    pub name: &'static str,
    pub roles: &'static str,
    pub server: Option<server::Server>,
    /// Starts so far (the log of an earlier start `n` is kept as `server-<n>.log`).
    starts: u32,
}

impl Instance {
    pub fn new(name: &'static str, roles: &'static str) -> Self {
        Self {
            name,
            roles,
            server: None,
            starts: 0,
        }
    }

    pub fn serves_api(&self) -> bool {
        self.roles.split(',').any(|r| r == "api")
    }

    pub fn base(&self) -> Option<Url> {
        self.server.as_ref().map(|s| s.base.clone())
    }

    pub fn pid(&self) -> Option<u32> {
        self.server.as_ref().map(|s| s.pid)
    }

    fn dir(&self, spec: &FleetSpec) -> PathBuf {
        spec.root.join(self.name)
    }

    /// Spawns the process (not waiting for it to be ready).
    pub fn spawn(&mut self, spec: &FleetSpec) -> Result<()> {
        let dir = self.dir(spec);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut env = format!("POBLYSH_ROLES={}\n", self.roles);
        for (name, value) in &spec.env {
            env.push_str(&format!("{name}={value}\n"));
        }
        std::fs::write(dir.join(".env.test"), env).context("writing .env.test")?;
        // The log of the previous start is kept beside the new one.
        let log = dir.join("server.log");
        if self.starts > 0 && log.exists() {
            std::fs::rename(&log, dir.join(format!("server-{}.log", self.starts)))
                .context("keeping the previous log")?;
        }
        let srv = server::start(&server::Spec {
            bin: &spec.bin,
            workdir: &dir,
            database_url: &spec.database_url,
            token: &spec.token,
            crypto_key: &spec.crypto_key,
            db_connections: spec.db_connections,
        })?;
        self.starts += 1;
        self.server = Some(srv);
        Ok(())
    }

    /// Waits until `/readyz` answers 200.
    pub async fn wait_ready(&mut self, client: &Client, timeout: Duration) -> Result<Duration> {
        let name = self.name;
        let srv = self
            .server
            .as_mut()
            .ok_or_else(|| anyhow!("{name} is not running"))?;
        match srv.wait_ready(client, timeout).await {
            Ok(took) => Ok(took),
            Err(err) => Err(anyhow!(
                "{name}: {err:#}\nlast lines of its log:\n{}",
                srv.log_tail(30)
            )),
        }
    }

    /// `kill -9`; the process is reaped and forgotten.
    pub fn kill9(&mut self) -> Result<u32> {
        let srv = self
            .server
            .take()
            .ok_or_else(|| anyhow!("{} is not running", self.name))?;
        let pid = srv.pid;
        let status = Command::new("kill")
            .arg("-KILL")
            .arg(pid.to_string())
            .status()
            .context("running kill -KILL")?;
        if !status.success() {
            bail!("kill -KILL {pid} failed");
        }
        // Dropping reaps the process.
        drop(srv);
        Ok(pid)
    }

    /// SIGTERM and wait.
    pub async fn stop(&mut self) -> Result<()> {
        if let Some(srv) = self.server.take() {
            let status = srv.stop().await?;
            if !status.success() {
                eprintln!("warning: {} exited with {status} after SIGTERM", self.name);
            }
        }
        Ok(())
    }
}

/// Starts every instance at once and waits until all are ready; the time each took.
pub async fn start_all(
    fleet: &mut [Instance],
    spec: &FleetSpec,
    client: &Client,
) -> Result<Vec<Duration>> {
    let started = Instant::now();
    for instance in fleet.iter_mut() {
        instance.spawn(spec)?;
    }
    let waits = fleet
        .iter_mut()
        .map(|i| i.wait_ready(client, spec.ready_timeout));
    let took = futures::future::try_join_all(waits).await?;
    println!(
        "started {} instances at once on the empty database; all ready after {} ms",
        fleet.len(),
        started.elapsed().as_millis()
    );
    Ok(took)
}

/// The API instances' base URLs (those running now).
pub fn api_bases(fleet: &[Instance]) -> Vec<Url> {
    fleet
        .iter()
        .filter(|i| i.serves_api())
        .filter_map(Instance::base)
        .collect()
}
