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

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn the_catalogue_claims_only_what_a_provider_does() {
        for d in descriptors() {
            // A provider that neither receives webhooks nor syncs produces nothing: it may not
            // list kinds Core would then filter on in vain.
            if !d.webhooks && !d.sync {
                assert!(d.kinds.is_empty(), "{} lists kinds it never emits", d.slug);
            } else {
                assert!(
                    !d.kinds.is_empty(),
                    "{} produces signals of no kind",
                    d.slug
                );
            }
            let unique: HashSet<_> = d.kinds.iter().collect();
            assert_eq!(unique.len(), d.kinds.len(), "{} repeats a kind", d.slug);
            for kind in d.kinds {
                assert!(
                    kind.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                    "{} kind {kind:?} is not snake_case",
                    d.slug
                );
            }
        }
    }

    #[test]
    fn slugs_are_unique_and_snake_case() {
        let slugs: HashSet<_> = descriptors().iter().map(|d| d.slug).collect();
        assert_eq!(slugs.len(), CATALOGUE.len());
        assert!(slugs
            .iter()
            .all(|s| s.chars().all(|c| c.is_ascii_lowercase() || c == '_')));
    }
}
