//! Provider connectors. Each provider is a folder under `src/providers/<slug>/` and owns
//! everything specific to it; the engine reaches providers only through
//! [`crate::connector::Connector`] and the registry built from [`CATALOGUE`], and never
//! matches on a slug.

use crate::connector::{Connector, Descriptor};

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

/// Every provider this build knows, in catalogue order. Adding a provider is one line here.
pub static CATALOGUE: &[&dyn Connector] = &[
    &github::GithubConnector,
    &slack::SlackConnector,
    &jira::JiraConnector,
    &google_drive::GoogleDriveConnector,
    &google_calendar::GoogleCalendarConnector,
    &gmail::GmailConnector,
    &zoho_cliq::ZohoCliqConnector,
    &zoho_mail::ZohoMailConnector,
    &sandbox::SandboxConnector,
];

/// The descriptors of every provider this build knows (enabled or not).
pub fn descriptors() -> Vec<&'static Descriptor> {
    CATALOGUE.iter().map(|c| c.descriptor()).collect()
}
