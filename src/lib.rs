//! Poblysh Connectors: a multi-tenant service that connects tenants' SaaS tools and turns
//! what happens there into normalized signals.
//!
//! The crate is a library with a thin `connectors` binary (`src/main.rs`). [`app::App`] builds
//! the whole service from a [`config::Config`], so tests start exactly what production runs.

pub mod api;
pub mod app;
pub mod cli;
pub mod config;
pub mod connector;
pub mod crypto;
pub mod domain;
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub mod ingest;
pub mod keys;
pub mod oauth;
pub mod openapi;
pub mod providers;
pub mod push;
pub mod services;
pub mod store;
pub mod subscriptions;
pub mod telemetry;
pub mod tokens;
