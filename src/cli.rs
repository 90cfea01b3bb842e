//! The `connectors` command line.

use clap::{Parser, Subcommand};

/// Poblysh Connectors: connect tenants' SaaS tools and turn their activity into signals.
///
/// Configuration comes from POBLYSH_* environment variables layered over .env, .env.local,
/// .env.<profile> and .env.<profile>.local in the working directory.
#[derive(Debug, Parser)]
#[command(name = "connectors", version, about, long_about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// What to do; `serve` when none is given.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP API (applies pending migrations first). The default.
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Print the OpenAPI 3.1 document to stdout.
    Openapi,
    /// Manage encryption keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
}

/// Key management.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Print a fresh random 32-byte key, base64-encoded, for POBLYSH_CRYPTO_KEY.
    Generate,
    /// Re-seal every stored secret under POBLYSH_CRYPTO_KEY. Put the old key in
    /// POBLYSH_CRYPTO_PREVIOUS_KEYS first; safe to run again if interrupted.
    Rotate,
}
