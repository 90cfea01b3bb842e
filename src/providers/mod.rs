//! Provider connectors. Each provider is a folder under `src/providers/<slug>/` and owns
//! everything specific to it; core code reaches providers only through [`Connector`] and the
//! [`Registry`], and never matches on a slug.

mod descriptor;
mod registry;

pub mod github;
pub mod gmail;
mod google;
pub mod google_calendar;
pub mod google_drive;
pub mod jira;
pub mod sandbox;
pub mod slack;
mod zoho;
pub mod zoho_cliq;
pub mod zoho_mail;

pub use descriptor::{
    AuthType, Connector, Descriptor, RateLimitPolicy, SyncContext, TenantWebhook, WebhookUrl,
};
pub use registry::{descriptors, Registry, RegistryEntry};
