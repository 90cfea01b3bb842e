//! The `connectors` binary: parses the command line, loads configuration, starts telemetry and
//! hands over to the library.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use connectors::app::App;
use connectors::cli::{Cli, Command, KeysCommand};
use connectors::config::{Config, StartupNote};
use connectors::crypto::CryptoKey;
use connectors::telemetry;

/// glibc's allocator serializes the API threads and the SQLite worker threads on its arena
/// locks under load; mimalloc's per-thread heaps do not. (`.cargo/config.toml` builds it to
/// commit memory as it is used, so the idle process stays small.)
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit code for configuration errors.
const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Serve) {
        Command::Openapi => {
            print!("{}", connectors::openapi::json());
            ExitCode::SUCCESS
        }
        Command::Keys {
            command: KeysCommand::Generate,
        } => {
            println!("{}", CryptoKey::generate().to_base64().as_str());
            ExitCode::SUCCESS
        }
        Command::Keys {
            command: KeysCommand::Rotate,
        } => with_config(rotate),
        Command::Serve => with_config(serve),
        Command::Migrate => with_config(migrate),
    }
}

fn with_config(run: fn(Config) -> anyhow::Result<()>) -> ExitCode {
    let config = match Config::load() {
        Ok(config) => config,
        Err(err) => {
            eprintln!("connectors: configuration error: {err}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let _guard = telemetry::init_logging(&config.log_level, config.log_format);
    report_startup_notes(&config);
    match run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = format!("{err:#}"), "fatal");
            eprintln!("connectors: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

fn serve(config: Config) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        // Handlers are installed before the listener is bound, so a SIGTERM
        // that follows the first accepted connection always stops us cleanly.
        let shutdown = shutdown_signal()?;
        let app = App::build(config).await?;
        app.run(shutdown).await
    })
}

fn migrate(config: Config) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let store = connectors::app::open_store(&config).await?;
        store.migrate().await?;
        store.close().await;
        tracing::info!(backend = store.backend().as_str(), "migrations applied");
        Ok(())
    })
}

fn rotate(config: Config) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let store = connectors::app::open_store(&config).await?;
        store.migrate().await?;
        let vault = connectors::crypto::Vault::new(
            config.crypto_key.clone(),
            config.previous_crypto_keys.clone(),
        );
        let report = connectors::keys::rotate(store.as_ref(), &vault, 500, None).await?;
        store.close().await;
        tracing::info!(
            examined = report.examined,
            resealed = report.resealed,
            raced = report.raced,
            key_id = format!("{:08x}", vault.current_key_id()),
            "key rotation finished"
        );
        println!(
            "examined {} sealed values, re-sealed {} under key {:08x}",
            report.examined,
            report.resealed,
            vault.current_key_id()
        );
        Ok(())
    })
}

/// Installs the Ctrl-C and SIGTERM handlers now and returns a future that
/// completes when either arrives.
#[cfg(unix)]
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut terminate =
        signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {},
            _ = terminate.recv() => {},
        }
        tracing::info!("shutdown requested; finishing in-flight requests");
    })
}

/// Returns a future that completes on Ctrl-C.
#[cfg(not(unix))]
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutdown requested; finishing in-flight requests");
    })
}

fn report_startup_notes(config: &Config) {
    for note in &config.startup_notes {
        match note {
            StartupNote::OperatorTokenGenerated { path, token } => {
                tracing::info!(path = %path.display(), "generated an operator token (shown once below)");
                // Shown once, on the terminal, so a developer can call the API right away.
                eprintln!(
                    "\n  Operator token (saved to {}):\n\n    {}\n\n  Use it as: Authorization: Bearer <token>\n",
                    path.display(),
                    token.expose()
                );
            }
            StartupNote::OperatorTokenReused { path } => {
                tracing::info!(path = %path.display(), "using the operator token stored by an earlier start");
            }
            StartupNote::CryptoKeyGenerated { path } => {
                tracing::info!(path = %path.display(), "generated a crypto key");
            }
            StartupNote::CryptoKeyReused { path } => {
                tracing::info!(path = %path.display(), "using the crypto key stored by an earlier start");
            }
            StartupNote::EphemeralSecrets => {
                tracing::info!(
                    "test profile: operator token and crypto key are generated in memory"
                );
            }
        }
    }
}
