//! The mailbox watch (<https://developers.google.com/gmail/api/guides/push>): `users.watch`
//! asks Gmail to publish the mailbox's changes (inbox and sent only) to the Pub/Sub topic
//! `POBLYSH_GMAIL_PUBSUB_TOPIC`; the push subscription on that topic delivers them to
//! `POST /webhooks/gmail` ([`super::push`]). A watch lasts seven days, and Google recommends
//! calling `watch` again once a day: the watch is therefore recorded as lasting at most
//! [`RENEW_WITHIN`], so the engine renews it about daily, well inside Google's expiry (kept in
//! the subscription's state as `expiration`). Calling `watch` again renews the same watch;
//! `users.stop` ends it on disconnect.

use chrono::TimeZone;
use serde_json::json;

use super::api::Gmail;
use crate::connector::{Metadata, Opened, ProviderCallError, SubscriptionContext};
use crate::domain::now;

/// The resource a connection subscribes to.
pub(super) const RESOURCE: &str = "mailbox";
/// The setting naming the Pub/Sub topic.
pub(super) const TOPIC: &str = "PUBSUB_TOPIC";
/// The longest a watch is recorded to last before it is renewed.
const RENEW_WITHIN: chrono::Duration = chrono::Duration::days(1);

/// Checks `POBLYSH_GMAIL_PUBSUB_TOPIC`: `projects/{project}/topics/{topic}`.
pub(super) fn check_topic(text: &str) -> Result<(), String> {
    let parts: Vec<&str> = text.split('/').collect();
    match parts.as_slice() {
        ["projects", project, "topics", topic]
            if !project.is_empty() && !topic.is_empty() && !text.contains(char::is_whitespace) =>
        {
            Ok(())
        }
        _ => Err("must be a Pub/Sub topic name, projects/{project}/topics/{topic}".into()),
    }
}

/// Opens (or renews: the same call) the watch.
pub(super) async fn open(ctx: SubscriptionContext<'_>) -> Result<Opened, ProviderCallError> {
    let topic = ctx.provider.settings.extra(TOPIC).ok_or_else(|| {
        ProviderCallError::Rejected("POBLYSH_GMAIL_PUBSUB_TOPIC is not set: no watch".into())
    })?;
    let opened_at = now();
    let watch = Gmail::new(ctx.provider, ctx.access_token)
        .watch(topic)
        .await?;
    let expiration = watch
        .expiration
        .parse::<i64>()
        .ok()
        .and_then(|ms| chrono::Utc.timestamp_millis_opt(ms).single())
        .ok_or_else(|| {
            ProviderCallError::Rejected(
                "Gmail answered users.watch with an unreadable expiration".into(),
            )
        })?;
    let renew_by = opened_at
        .checked_add_signed(RENEW_WITHIN)
        .unwrap_or(expiration);
    let mut state = Metadata::new();
    state.insert("expiration".into(), json!(watch.expiration));
    state.insert("history_id".into(), json!(watch.history_id));
    state.insert("topic".into(), json!(topic));
    Ok(Opened {
        // One watch per mailbox: renewing names the same one, so the engine never stops it.
        external_id: ctx.connection.external_account_id.clone(),
        expires_at: Some(expiration.min(renew_by)),
        state,
        metadata: None,
    })
}

/// Ends the watch.
pub(super) async fn close(ctx: SubscriptionContext<'_>) -> Result<(), ProviderCallError> {
    Gmail::new(ctx.provider, ctx.access_token).stop().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_are_full_names() {
        assert!(check_topic("projects/myproject/topics/gmail").is_ok());
        for bad in [
            "gmail",
            "projects//topics/gmail",
            "projects/p/topics/",
            "projects/p/subscriptions/s",
            "projects/p/topics/a b",
            "projects/p/topics/a/b",
        ] {
            assert!(check_topic(bad).is_err(), "{bad}");
        }
    }
}
