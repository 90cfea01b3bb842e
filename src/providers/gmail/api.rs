//! Calls to the Gmail API (<https://developers.google.com/gmail/api/reference/rest>), every one
//! on the mailbox of the access token (`userId=me`), under `POBLYSH_GMAIL_API_BASE_URL`
//! (default `https://gmail.googleapis.com`), with the paths of Google's discovery document
//! (`gmail/v1/users/{userId}/...`).
//!
//! How an answer fails: `401` is a refused token; `429`, and `403` whose reason is
//! `rateLimitExceeded` or `userRateLimitExceeded`, are Gmail's quota
//! (<https://developers.google.com/gmail/api/guides/handle-errors#exceeded-rate-limit>): the engine
//! backs off with jitter, never sooner than `Retry-After`; `5xx` is unavailable; `404` is
//! given back to the caller (history too old, a message gone); anything else is rejected with
//! Google's message.

use reqwest::header::{HeaderMap, ACCEPT};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;
use url::Url;

use super::super::google::api;
use crate::connector::{join_path, read_body, retry_after_header, transport};
use crate::connector::{ProviderCallError, ProviderContext, MAX_BODY_BYTES};
use crate::crypto::Secret;

/// Where Gmail answers.
const API_BASE: &str = "https://gmail.googleapis.com";
/// The headers read from a message: never its body.
pub(super) const METADATA_HEADERS: [&str; 4] = ["From", "To", "Subject", "Date"];
/// The members of a message asked for (`fields`): its snippet, a piece of the body, is never
/// sent (<https://developers.google.com/gmail/api/guides/performance#partial>).
const MESSAGE_FIELDS: &str = "id,threadId,labelIds,internalDate,historyId,payload/headers";

/// The API under these settings.
pub(super) struct Gmail<'a> {
    ctx: ProviderContext<'a>,
    token: &'a Secret,
    base: Url,
}

/// `users.getProfile`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Profile {
    pub email_address: String,
    pub history_id: String,
}

/// `users.history.list`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct HistoryList {
    #[serde(default)]
    pub history: Vec<History>,
    pub history_id: Option<String>,
    pub next_page_token: Option<String>,
}

/// One history record.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct History {
    #[serde(default)]
    pub messages_added: Vec<MessageAdded>,
}

/// A message added in a history record.
#[derive(Debug, Deserialize)]
pub(super) struct MessageAdded {
    pub message: MessageRef,
}

/// A message named by its id.
#[derive(Debug, Deserialize)]
pub(super) struct MessageRef {
    pub id: String,
}

/// `users.messages.list`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct MessageList {
    #[serde(default)]
    pub messages: Vec<MessageRef>,
    pub next_page_token: Option<String>,
}

/// `users.messages.get?format=metadata`.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Message {
    pub id: String,
    pub thread_id: Option<String>,
    #[serde(default)]
    pub label_ids: Vec<String>,
    pub internal_date: Option<String>,
    pub payload: Option<Payload>,
}

/// The top-level part of a message: only its headers are asked for.
#[derive(Clone, Debug, Deserialize)]
pub(super) struct Payload {
    #[serde(default)]
    pub headers: Vec<Header>,
}

/// One header.
#[derive(Clone, Debug, Deserialize)]
pub(super) struct Header {
    pub name: String,
    pub value: String,
}

/// `users.watch`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Watch {
    pub history_id: String,
    pub expiration: String,
}

impl<'a> Gmail<'a> {
    pub(super) fn new(ctx: ProviderContext<'a>, token: &'a Secret) -> Self {
        Self {
            base: ctx.settings.api_base(API_BASE),
            ctx,
            token,
        }
    }

    /// `{base}/gmail/v1/users/me{path}`.
    fn url(&self, path: &str) -> Url {
        join_path(&self.base, &format!("/gmail/v1/users/me{path}"))
    }

    /// `users.getProfile` (1 quota unit).
    pub(super) async fn profile(&self) -> Result<Profile, ProviderCallError> {
        let profile: Profile = self
            .get(self.url("/profile"), "users.getProfile")
            .await?
            .ok_or_else(|| {
                ProviderCallError::Rejected("Gmail answered 404 to users.getProfile".into())
            })?;
        checked_history_id(&profile.history_id, "users.getProfile")?;
        Ok(profile)
    }

    /// `users.history.list` of added messages after `start` (2 units); `None` when the
    /// history is too old (`404`).
    pub(super) async fn history(
        &self,
        start: &str,
        page_token: Option<&str>,
        max_results: u32,
    ) -> Result<Option<HistoryList>, ProviderCallError> {
        let mut url = self.url("/history");
        {
            let mut query = url.query_pairs_mut();
            query
                .append_pair("startHistoryId", start)
                .append_pair("historyTypes", "messageAdded")
                .append_pair("maxResults", &max_results.to_string());
            if let Some(token) = page_token {
                query.append_pair("pageToken", token);
            }
        }
        let list: Option<HistoryList> = self.get(url, "users.history.list").await?;
        if let Some(id) = list.as_ref().and_then(|l| l.history_id.as_deref()) {
            checked_history_id(id, "users.history.list")?;
        }
        Ok(list)
    }

    /// `users.messages.list`, newest first, spam and trash left out (5 units).
    pub(super) async fn messages(
        &self,
        page_token: Option<&str>,
        max_results: u32,
    ) -> Result<MessageList, ProviderCallError> {
        let mut url = self.url("/messages");
        {
            let mut query = url.query_pairs_mut();
            query
                .append_pair("includeSpamTrash", "false")
                .append_pair("maxResults", &max_results.to_string());
            if let Some(token) = page_token {
                query.append_pair("pageToken", token);
            }
        }
        self.get(url, "users.messages.list").await?.ok_or_else(|| {
            ProviderCallError::Rejected("Gmail answered 404 to users.messages.list".into())
        })
    }

    /// `users.messages.get?format=metadata` with [`METADATA_HEADERS`] only (5 units); `None`
    /// when the message is gone.
    pub(super) async fn message(&self, id: &str) -> Result<Option<Message>, ProviderCallError> {
        let mut url = self.url("/messages");
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.push(id);
        }
        {
            let mut query = url.query_pairs_mut();
            query.append_pair("format", "metadata");
            for name in METADATA_HEADERS {
                query.append_pair("metadataHeaders", name);
            }
            query.append_pair("fields", MESSAGE_FIELDS);
        }
        self.get(url, "users.messages.get").await
    }

    /// `users.watch` on `topic` for messages in the inbox or sent (100 units).
    pub(super) async fn watch(&self, topic: &str) -> Result<Watch, ProviderCallError> {
        let body = serde_json::json!({
            "topicName": topic,
            "labelIds": ["INBOX", "SENT"],
            "labelFilterBehavior": "include",
        });
        let response = self
            .ctx
            .http
            .post(self.url("/watch"))
            .bearer_auth(self.token.expose())
            .header(ACCEPT, "application/json")
            .json(&body)
            .send()
            .await
            .map_err(transport)?;
        let watch: Watch = read(response, "users.watch").await?.ok_or_else(|| {
            ProviderCallError::Rejected("Gmail answered 404 to users.watch".into())
        })?;
        checked_history_id(&watch.history_id, "users.watch")?;
        Ok(watch)
    }

    /// `users.stop` (50 units).
    pub(super) async fn stop(&self) -> Result<(), ProviderCallError> {
        let response = self
            .ctx
            .http
            .post(self.url("/stop"))
            .bearer_auth(self.token.expose())
            .send()
            .await
            .map_err(transport)?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = read_body(response, MAX_BODY_BYTES).await?;
        check(status, &headers, &body, "users.stop").map(|_| ())
    }

    async fn get<T: DeserializeOwned>(
        &self,
        url: Url,
        what: &str,
    ) -> Result<Option<T>, ProviderCallError> {
        let response = self
            .ctx
            .http
            .get(url)
            .bearer_auth(self.token.expose())
            .header(ACCEPT, "application/json")
            .send()
            .await
            .map_err(transport)?;
        read(response, what).await
    }
}

/// A `2xx` body read as `T`; `None` for a `404`.
async fn read<T: DeserializeOwned>(
    response: reqwest::Response,
    what: &str,
) -> Result<Option<T>, ProviderCallError> {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = read_body(response, MAX_BODY_BYTES).await?;
    if !check(status, &headers, &body, what)? {
        return Ok(None);
    }
    serde_json::from_slice(&body).map(Some).map_err(|_| {
        ProviderCallError::Rejected(format!("Gmail answered {what} with an unreadable body"))
    })
}

/// Sorts an answer: `Ok(true)` for `2xx`, `Ok(false)` for `404`, else the failure the engine
/// acts on, as every Google API's (see the module docs).
pub(super) fn check(
    status: u16,
    headers: &HeaderMap,
    body: &[u8],
    what: &str,
) -> Result<bool, ProviderCallError> {
    match status {
        200..=299 => Ok(true),
        404 => Ok(false),
        _ => Err(api::error(
            status,
            retry_after_header(headers),
            body,
            &format!("Gmail {what}"),
        )),
    }
}

/// A history id as Gmail sends it: an unsigned 64-bit integer, as a string
/// (`format: uint64` in the discovery document).
pub(super) fn parse_history_id(text: &str) -> Option<u64> {
    if text.is_empty() || text.len() > 20 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

fn checked_history_id(text: &str, what: &str) -> Result<(), ProviderCallError> {
    parse_history_id(text).map(|_| ()).ok_or_else(|| {
        ProviderCallError::Rejected(format!(
            "Gmail answered {what} with an unreadable historyId"
        ))
    })
}

/// A history id from a push (a number or a string of digits).
pub(super) fn history_id_of(value: &Value) -> Option<u64> {
    match value {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => parse_history_id(s),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use reqwest::header::{HeaderValue, RETRY_AFTER};

    use super::*;

    fn google_error(code: u16, reason: &str) -> Vec<u8> {
        // The shape of https://developers.google.com/gmail/api/guides/handle-errors.
        serde_json::to_vec(&serde_json::json!({
            "error": {
                "code": code,
                "message": "Rate Limit Exceeded",
                "errors": [{ "domain": "usageLimits", "message": "Rate Limit Exceeded", "reason": reason }],
                "status": "RESOURCE_EXHAUSTED"
            }
        }))
        .expect("json")
    }

    #[test]
    fn quota_answers_are_rate_limits_that_keep_retry_after() {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, HeaderValue::from_static("12"));
        for (status, reason) in [
            (429, "rateLimitExceeded"),
            (403, "userRateLimitExceeded"),
            (403, "rateLimitExceeded"),
        ] {
            assert!(
                matches!(
                    check(status, &headers, &google_error(status, reason), "x"),
                    Err(ProviderCallError::RateLimited {
                        retry_after: Some(12)
                    })
                ),
                "{status} {reason}"
            );
        }
        let none = HeaderMap::new();
        assert!(matches!(
            check(403, &none, &google_error(403, "insufficientPermissions"), "x"),
            Err(ProviderCallError::Rejected(m)) if m.contains("Rate Limit Exceeded")
        ));
        assert!(matches!(check(404, &none, b"", "x"), Ok(false)));
        assert!(matches!(check(204, &none, b"", "x"), Ok(true)));
        assert!(matches!(
            check(401, &none, b"", "x"),
            Err(ProviderCallError::Unauthorized)
        ));
        assert!(matches!(
            check(500, &none, b"<html>", "x"),
            Err(ProviderCallError::Unavailable(_))
        ));
    }

    #[test]
    fn urls_keep_the_base_path_and_name_one_message_per_segment() {
        let mut settings = crate::connector::ProviderSettings::bare("gmail");
        settings.api_base_url = Some(Url::parse("http://127.0.0.1:9/google/").expect("url"));
        let http = reqwest::Client::new();
        let token = Secret::new("t");
        let ctx = ProviderContext {
            http: &http,
            settings: &settings,
        };
        let gmail = Gmail::new(ctx, &token);
        assert_eq!(
            gmail.url("/history").as_str(),
            "http://127.0.0.1:9/google/gmail/v1/users/me/history"
        );
    }

    proptest! {
        #[test]
        fn history_ids_are_exactly_the_unsigned_64_bit_integers(n in any::<u64>(), junk in "[^0-9]{1,4}") {
            prop_assert_eq!(parse_history_id(&n.to_string()), Some(n));
            prop_assert_eq!(history_id_of(&Value::String(n.to_string())), Some(n));
            prop_assert_eq!(history_id_of(&serde_json::json!(n)), Some(n));
            let bad = format!("{n}{junk}");
            prop_assert_eq!(parse_history_id(&bad), None);
        }

        #[test]
        fn history_ids_past_64_bits_are_refused(extra in 1u64..1000) {
            let past = (u128::from(u64::MAX) + u128::from(extra)).to_string();
            prop_assert_eq!(parse_history_id(&past), None);
        }
    }

    #[test]
    fn odd_history_ids_are_refused() {
        for bad in ["", "-1", "+1", "1.5", "1e3", " 1"] {
            assert_eq!(parse_history_id(bad), None, "{bad}");
        }
        assert_eq!(history_id_of(&serde_json::json!(-1)), None);
        assert_eq!(history_id_of(&serde_json::json!(1.5)), None);
        assert_eq!(history_id_of(&Value::Null), None);
    }
}
