//! Black-box tests over HTTP. Each test starts its own service over a fresh database: SQLite by
//! default, PostgreSQL when `POBLYSH_TEST_DATABASE_URL` is set.

mod helpers;

mod auth;
mod binding;
mod cli;
mod connect;
mod connections;
mod edge;
mod errors;
mod faults;
mod filters;
mod floors;
mod github;
mod gmail;
mod gmail_push;
mod google_calendar;
mod google_discovery;
mod google_drive;
mod google_fake;
mod google_push;
mod guide;
mod jira;
mod jwks;
mod keys;
mod listen;
mod meta;
mod oidc;
mod openapi;
mod outage;
mod pagination;
mod providers_oauth;
mod refresh;
mod slack;
mod slack_sync;
mod store_contract;
mod subscriptions;
mod sync;
mod sync_faults;
mod tenancy;
mod tenants;
mod validation;
mod webhook_bodies;
mod webhooks;
mod zoho_cliq;
mod zoho_mail;
