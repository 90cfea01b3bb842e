//! The sandbox's remote API mode: when `POBLYSH_SANDBOX_API_BASE_URL` is set, sync pages come
//! from an HTTP API instead of the in-process trickle ([`super::sync`]), so outages, rate
//! limits and latency can be played by a fake server (tests, benchmarks). The contract:
//!
//! ```text
//! GET {base}/v1/events?after={seq}&limit=100
//! Authorization: Bearer <the connection's access token>
//!
//! 200 application/json
//! {"events": [{"seq": 41, "type": "event.created", "id": "item-21", "title": "Item 21 created",
//!              "occurred_at": "2026-11-25T10:00:00Z", "actor": {"id": "u1", "name": "Ada"}}],
//!  "has_more": true}
//! ```
//!
//! - `after` is the last `seq` already stored (0 on a first sync); events come in ascending
//!   `seq`, at most `limit` of them.
//! - The cursor stored with a page is `{"after": <its last seq>}`, unchanged by an empty page.
//!   A trickle cursor, or any cursor this mode cannot read, starts again from `after=0`:
//!   dedupe keys make the replay harmless.
//! - Each event becomes the signal a webhook delivery of the same change becomes
//!   ([`super::event`]); types other than `event.created` and `event.updated` are skipped.
//! - Answers: `401` is [`ProviderCallError::Unauthorized`] (the engine refreshes once);
//!   `429`, and `503` with `Retry-After`, are [`ProviderCallError::RateLimited`] (integer
//!   `Retry-After` seconds, at most [`crate::connector::MAX_RETRY_AFTER_SECS`]); other `5xx`,
//!   transport errors and time-outs are
//!   [`ProviderCallError::Unavailable`]; other statuses, and a `200` whose body is not the
//!   JSON above, are [`ProviderCallError::Rejected`]. The engine retries all but the first
//!   with backoff, and a failed page commits nothing.

use reqwest::header::{HeaderMap, ACCEPT};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use url::Url;

use super::event::Change;
use crate::connector::ProviderCallError;
use crate::connector::SyncContext;
use crate::connector::{read_body, MAX_BODY_BYTES};
use crate::connector::{retry_after_header, transport};
use crate::connector::{SignalDraft, SyncPage};

/// Events asked for per page.
pub const PAGE_LIMIT: u32 = 100;

/// Where the API sync stands: the last `seq` stored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Cursor {
    after: u64,
}

impl Cursor {
    /// The stored cursor, or the beginning when there is none or it is not ours.
    fn read(value: Option<&Value>) -> Self {
        value
            .and_then(|v| serde_json::from_value(v.clone()).ok())
            .unwrap_or_default()
    }
}

/// One listed event.
#[derive(Deserialize)]
struct Event {
    seq: u64,
    #[serde(rename = "type")]
    event_type: String,
    #[serde(flatten)]
    change: Change,
}

/// The body of a `200`.
#[derive(Deserialize)]
struct Listing {
    events: Vec<Event>,
    has_more: bool,
}

/// The page after `cursor` from the API at `base`.
pub(super) async fn page(
    ctx: SyncContext<'_>,
    base: &Url,
    cursor: Option<&Value>,
) -> Result<SyncPage, ProviderCallError> {
    let cursor = Cursor::read(cursor);
    let response = ctx
        .provider
        .http
        .get(events_url(base, cursor))
        .bearer_auth(ctx.access_token.expose())
        .header(ACCEPT, "application/json")
        .send()
        .await
        .map_err(transport)?;
    check_status(response.status().as_u16(), response.headers())?;
    let body = read_body(response, MAX_BODY_BYTES).await?;
    read_page(cursor, &body)
}

/// `{base}/v1/events?after=…&limit=…`, keeping any path `base` has.
fn events_url(base: &Url, cursor: Cursor) -> Url {
    let mut url = crate::connector::join_path(base, "/v1/events");
    url.query_pairs_mut()
        .append_pair("after", &cursor.after.to_string())
        .append_pair("limit", &PAGE_LIMIT.to_string());
    url
}

/// Sorts an answer's status into success or the failure the engine acts on.
pub(super) fn check_status(status: u16, headers: &HeaderMap) -> Result<(), ProviderCallError> {
    let retry_after = retry_after_header(headers);
    match status {
        200..=299 => Ok(()),
        401 => Err(ProviderCallError::Unauthorized),
        429 => Err(ProviderCallError::RateLimited { retry_after }),
        503 if retry_after.is_some() => Err(ProviderCallError::RateLimited { retry_after }),
        500..=599 => Err(ProviderCallError::Unavailable(format!(
            "the sandbox API answered {status}"
        ))),
        _ => Err(ProviderCallError::Rejected(format!(
            "the sandbox API answered {status}"
        ))),
    }
}

/// The signals and next cursor of a `200`'s body.
fn read_page(cursor: Cursor, body: &[u8]) -> Result<SyncPage, ProviderCallError> {
    let listing: Listing = serde_json::from_slice(body).map_err(|_| {
        ProviderCallError::Rejected(
            "the sandbox API answered a body that is not an event list".into(),
        )
    })?;
    let mut after = cursor.after;
    let mut signals: Vec<SignalDraft> = Vec::with_capacity(listing.events.len());
    for event in listing.events {
        after = after.max(event.seq);
        match event.change.signal(&event.event_type) {
            Ok(draft) => signals.extend(draft),
            Err(problem) => tracing::warn!(seq = event.seq, problem, "skipped a sandbox event"),
        }
    }
    Ok(SyncPage {
        signals,
        // A page that did not move the cursor cannot lead anywhere new.
        more: listing.has_more && after > cursor.after,
        cursor: serde_json::json!(Cursor { after }),
        metadata: None,
    })
}

#[cfg(test)]
mod tests {
    use reqwest::header::{HeaderValue, RETRY_AFTER};
    use serde_json::json;

    use super::*;

    fn event(seq: u64, event_type: &str) -> Value {
        json!({
            "seq": seq,
            "type": event_type,
            "id": format!("item-{seq}"),
            "title": format!("Item {seq}"),
            "occurred_at": "2026-11-25T10:00:00Z",
            "actor": { "id": "u1", "name": "Ada" }
        })
    }

    fn body(events: Vec<Value>, has_more: bool) -> Vec<u8> {
        serde_json::to_vec(&json!({ "events": events, "has_more": has_more })).expect("json")
    }

    fn headers(retry_after: Option<&'static str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(value) = retry_after {
            headers.insert(RETRY_AFTER, HeaderValue::from_static(value));
        }
        headers
    }

    #[test]
    fn statuses_map_to_what_the_engine_does_next() {
        let none = headers(None);
        assert!(check_status(200, &none).is_ok());
        assert!(matches!(
            check_status(401, &none),
            Err(ProviderCallError::Unauthorized)
        ));
        assert!(matches!(
            check_status(429, &headers(Some("17"))),
            Err(ProviderCallError::RateLimited {
                retry_after: Some(17)
            })
        ));
        assert!(matches!(
            check_status(429, &headers(Some("Wed, 21 Oct 2026 07:28:00 GMT"))),
            Err(ProviderCallError::RateLimited { retry_after: None })
        ));
        for huge in ["9223372036854775807", "99999999999999999999999999"] {
            assert!(matches!(
                check_status(429, &headers(Some(huge))),
                Err(ProviderCallError::RateLimited {
                    retry_after: Some(crate::connector::MAX_RETRY_AFTER_SECS)
                })
            ));
        }
        assert!(matches!(
            check_status(503, &headers(Some("30"))),
            Err(ProviderCallError::RateLimited {
                retry_after: Some(30)
            })
        ));
        for status in [500, 502, 503] {
            assert!(
                matches!(
                    check_status(status, &none),
                    Err(ProviderCallError::Unavailable(_))
                ),
                "{status}"
            );
        }
        for status in [301, 400, 403, 404] {
            assert!(
                matches!(
                    check_status(status, &none),
                    Err(ProviderCallError::Rejected(_))
                ),
                "{status}"
            );
        }
    }

    #[test]
    fn a_page_becomes_signals_and_the_cursor_moves_to_its_last_seq() {
        let page = read_page(
            Cursor { after: 40 },
            &body(
                vec![
                    event(41, "event.created"),
                    event(42, "event.deleted"),
                    event(43, "event.updated"),
                ],
                true,
            ),
        )
        .expect("page");
        let kinds: Vec<_> = page.signals.iter().map(|s| s.kind.as_str()).collect();
        assert_eq!(kinds, ["sandbox_event_created", "sandbox_event_updated"]);
        assert_eq!(page.cursor, json!({ "after": 43 }));
        assert!(page.more);
        assert_eq!(
            page.signals[0].dedupe_key,
            "sandbox_event_created:item-41:2026-11-25T10:00:00Z"
        );
    }

    #[test]
    fn an_empty_page_keeps_the_cursor_and_ends_the_sync() {
        let page = read_page(Cursor { after: 7 }, &body(vec![], true)).expect("page");
        assert!(page.signals.is_empty());
        assert_eq!(page.cursor, json!({ "after": 7 }));
        assert!(!page.more, "has_more without progress would loop");
    }

    #[test]
    fn an_event_with_an_unreadable_time_is_skipped_and_the_cursor_passes_it() {
        let mut bad = event(5, "event.created");
        bad["occurred_at"] = json!("soon");
        let page = read_page(
            Cursor { after: 4 },
            &body(vec![bad, event(6, "event.created")], false),
        )
        .expect("page");
        assert_eq!(page.signals.len(), 1);
        assert_eq!(page.cursor, json!({ "after": 6 }));
    }

    #[test]
    fn bodies_that_are_not_an_event_list_are_rejected() {
        let whole = body(vec![event(1, "event.created")], false);
        let truncated = &whole[..whole.len() / 2];
        let missing_seq = body(vec![json!({ "type": "event.created", "id": "x" })], false);
        for bad in [
            truncated,
            b"" as &[u8],
            b"<html>busy</html>",
            br#"{"items": []}"#,
            br#"[]"#,
            br#"{"events": {}, "has_more": false}"#,
            &missing_seq,
        ] {
            assert!(
                matches!(
                    read_page(Cursor::default(), bad),
                    Err(ProviderCallError::Rejected(_))
                ),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn cursors_of_other_shapes_start_from_the_beginning() {
        assert_eq!(Cursor::read(None), Cursor { after: 0 });
        assert_eq!(Cursor::read(Some(&Value::Null)), Cursor { after: 0 });
        let trickle = json!({ "seq": 12, "at": "2026-11-25T10:00:00Z" });
        assert_eq!(Cursor::read(Some(&trickle)), Cursor { after: 0 });
        assert_eq!(
            Cursor::read(Some(&json!({ "after": "x" }))),
            Cursor { after: 0 }
        );
        assert_eq!(
            Cursor::read(Some(&json!({ "after": 41 }))),
            Cursor { after: 41 }
        );
    }

    #[test]
    fn the_events_url_keeps_the_base_path() {
        let cursor = Cursor { after: 41 };
        let url = events_url(&Url::parse("http://127.0.0.1:9/").expect("url"), cursor);
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:9/v1/events?after=41&limit=100"
        );
        let url = events_url(
            &Url::parse("https://x.example/sandbox/").expect("url"),
            cursor,
        );
        assert_eq!(
            url.as_str(),
            "https://x.example/sandbox/v1/events?after=41&limit=100"
        );
    }

    #[test]
    fn a_webhook_and_a_listing_of_the_same_change_give_the_same_signal() {
        let listed = event(41, "event.created");
        let page = read_page(Cursor::default(), &body(vec![listed.clone()], false)).expect("page");
        let mut delivered = listed;
        let object = delivered.as_object_mut().expect("object");
        object.remove("seq");
        object.remove("type");
        let webhook = crate::connector::WebhookEvent {
            tenant_id: crate::domain::TenantId(uuid::Uuid::new_v4()),
            provider: "sandbox".into(),
            event_type: Some("event.created".into()),
            headers: Default::default(),
            body: serde_json::to_vec(&delivered).expect("json"),
            received_at: crate::domain::now(),
        };
        let crate::connector::Normalized::Signals(signals) =
            super::super::webhook::normalize(&webhook).expect("normalized")
        else {
            panic!("the delivery is mapped");
        };
        assert_eq!(signals, page.signals);
    }
}
