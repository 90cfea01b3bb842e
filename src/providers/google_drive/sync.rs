//! Drive's changes feed (<https://developers.google.com/workspace/drive/api/guides/manage-changes>).
//!
//! - At connect, `changes.getStartPageToken` (shared drives included) is kept in the
//!   connection's metadata with when it was taken ([`start_at_connect`]): the first step lists
//!   from it, so a change made between connect and the first sync is reported, and removes it.
//!   A connection without it (made before it was kept) takes the token at its first step,
//!   which emits nothing.
//! - Every later step lists `changes.list?pageToken=...` with `includeRemoved=true`, shared
//!   drives (`includeItemsFromAllDrives`, `supportsAllDrives`), `spaces=drive` and an explicit
//!   `fields` mask. A page with `nextPageToken` is followed at once (`more`); the page with
//!   `newStartPageToken` ends the round, and that token is where the next round starts.
//! - Kinds: `file_deleted` for a removed change (the file is gone or no longer visible) or a
//!   trashed file; `file_created` for a file created at or after the round's window began
//!   (`since`, when the round's starting token was taken); `file_updated` otherwise. Changes
//!   to shared drives themselves (`changeType: drive`) are not files and are skipped. Actor from
//!   `lastModifyingUser`, title the file name, url `webViewLink`.
//! - Dedupe key: the file id and the change's `time`, so a replayed page stores nothing twice.
//!
//! The cursor: `{"page_token", "since", "round_started"?}`; `round_started` is when the first
//! page of an unfinished round was asked for, the next round's `since`.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::super::google::api;
use crate::connector::{Metadata, ProviderCallError, SignalDraft, SyncContext, SyncPage};
use crate::domain::{format_time, now, parse_rfc3339, Actor, Connection, SignalKind, Timestamp};

/// Changes per page (Drive's default is 100, its most 1000).
const PAGE_SIZE: &str = "100";

/// The fields of a change list the sync reads
/// (<https://developers.google.com/workspace/drive/api/guides/fields-parameter>).
pub(super) const FIELDS: &str = "nextPageToken,newStartPageToken,changes(changeType,removed,fileId,time,file(id,name,mimeType,createdTime,modifiedTime,trashed,webViewLink,lastModifyingUser(displayName,emailAddress,permissionId)))";

/// Where the feed stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Cursor {
    /// The page token to list from.
    pub page_token: String,
    /// When this round's window began: files created since are `file_created`.
    pub since: String,
    /// When this round's first page was asked for; absent between rounds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub round_started: Option<String>,
}

impl Cursor {
    pub(super) fn read(value: &Value) -> Result<Self, ProviderCallError> {
        let cursor: Cursor = serde_json::from_value(value.clone()).map_err(|e| {
            ProviderCallError::Rejected(format!("unreadable Google Drive cursor: {e}"))
        })?;
        if cursor.page_token.is_empty() {
            return Err(ProviderCallError::Rejected(
                "unreadable Google Drive cursor: empty page token".into(),
            ));
        }
        parse_rfc3339(&cursor.since).map_err(|e| {
            ProviderCallError::Rejected(format!("unreadable Google Drive cursor: {e}"))
        })?;
        if let Some(started) = &cursor.round_started {
            parse_rfc3339(started).map_err(|e| {
                ProviderCallError::Rejected(format!("unreadable Google Drive cursor: {e}"))
            })?;
        }
        Ok(cursor)
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StartPageToken {
    start_page_token: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ChangeList {
    #[serde(default, deserialize_with = "api::readable_items")]
    changes: Vec<Change>,
    #[serde(default)]
    next_page_token: Option<String>,
    #[serde(default)]
    new_start_page_token: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Change {
    #[serde(default)]
    change_type: Option<String>,
    #[serde(default)]
    removed: bool,
    #[serde(default)]
    file_id: Option<String>,
    time: String,
    #[serde(default)]
    file: Option<File>,
}

#[derive(Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
struct File {
    id: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    mime_type: Option<String>,
    #[serde(default)]
    created_time: Option<String>,
    #[serde(default)]
    modified_time: Option<String>,
    #[serde(default)]
    trashed: bool,
    #[serde(default)]
    web_view_link: Option<String>,
    #[serde(default)]
    last_modifying_user: Option<User>,
}

#[derive(Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
struct User {
    #[serde(default)]
    display_name: Option<String>,
    #[serde(default)]
    email_address: Option<String>,
    #[serde(default)]
    permission_id: Option<String>,
}

/// `changes.getStartPageToken`, shared drives included.
pub(super) async fn start_page_token(
    ctx: crate::connector::ProviderContext<'_>,
    access_token: &crate::crypto::Secret,
) -> Result<String, ProviderCallError> {
    let mut url = api::url(ctx.settings, "/drive/v3/changes/startPageToken");
    url.query_pairs_mut()
        .append_pair("supportsAllDrives", "true");
    let request = ctx.http.get(url).bearer_auth(access_token.expose());
    let answer: StartPageToken =
        api::json(request, "Google Drive changes.getStartPageToken").await?;
    if answer.start_page_token.is_empty() {
        return Err(ProviderCallError::Rejected(
            "Google Drive answered an empty startPageToken".into(),
        ));
    }
    Ok(answer.start_page_token)
}

/// The metadata member holding the start page token taken at connect.
const START_TOKEN: &str = "start_page_token";
/// The metadata member holding when it was taken (RFC 3339).
const START_TOKEN_AT: &str = "start_page_token_at";

/// The start page token taken at connect, as connection metadata.
pub(super) async fn start_at_connect(
    ctx: crate::connector::ProviderContext<'_>,
    access_token: &crate::crypto::Secret,
) -> Result<Metadata, ProviderCallError> {
    let taken_at = format_time(&now());
    let token = start_page_token(ctx, access_token).await?;
    let mut metadata = Metadata::new();
    metadata.insert(START_TOKEN.into(), json!(token));
    metadata.insert(START_TOKEN_AT.into(), json!(taken_at));
    Ok(metadata)
}

/// Where a first sync starts: the start page token taken at connect, when the connection's
/// metadata holds a readable one.
fn kept_start(connection: &Connection) -> Option<Cursor> {
    let text = |member: &str| {
        connection
            .metadata
            .get(member)
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let cursor = Cursor {
        page_token: text(START_TOKEN)?,
        since: text(START_TOKEN_AT)?,
        round_started: None,
    };
    Cursor::read(&json!(cursor)).ok()
}

/// One step of the sync.
pub(super) async fn page(
    ctx: SyncContext<'_>,
    cursor: Option<&Value>,
) -> Result<SyncPage, ProviderCallError> {
    match cursor {
        Some(value) if !value.is_null() => list(ctx, Cursor::read(value)?, None).await,
        _ => match kept_start(ctx.connection) {
            // The kept token is used up once the first page's cursor is stored.
            Some(start) => {
                let mut used = Metadata::new();
                used.insert(START_TOKEN.into(), Value::Null);
                used.insert(START_TOKEN_AT.into(), Value::Null);
                list(ctx, start, Some(used)).await
            }
            None => start_now(ctx).await,
        },
    }
}

/// The first step of a connection that kept no start page token: takes one, emits nothing.
async fn start_now(ctx: SyncContext<'_>) -> Result<SyncPage, ProviderCallError> {
    let token = start_page_token(ctx.provider, ctx.access_token).await?;
    Ok(SyncPage {
        signals: Vec::new(),
        cursor: json!(Cursor {
            page_token: token,
            since: format_time(&now()),
            round_started: None,
        }),
        more: false,
        metadata: None,
    })
}

/// Lists the page at `cursor`; `metadata` goes with it.
async fn list(
    ctx: SyncContext<'_>,
    cursor: Cursor,
    metadata: Option<Metadata>,
) -> Result<SyncPage, ProviderCallError> {
    let started = cursor
        .round_started
        .clone()
        .unwrap_or_else(|| format_time(&now()));
    let mut url = api::url(ctx.provider.settings, "/drive/v3/changes");
    url.query_pairs_mut()
        .append_pair("pageToken", &cursor.page_token)
        .append_pair("pageSize", PAGE_SIZE)
        .append_pair("includeRemoved", "true")
        .append_pair("includeItemsFromAllDrives", "true")
        .append_pair("supportsAllDrives", "true")
        .append_pair("spaces", "drive")
        .append_pair("fields", FIELDS);
    let request = ctx
        .provider
        .http
        .get(url)
        .bearer_auth(ctx.access_token.expose());
    let list: ChangeList = api::json(request, "Google Drive changes.list").await?;
    let since = parse_rfc3339(&cursor.since)
        .map_err(|e| ProviderCallError::Rejected(format!("unreadable Google Drive cursor: {e}")))?;
    let signals = signals(&list, since, &ctx.connection.id.to_string());
    let (cursor, more) = match (list.next_page_token, list.new_start_page_token) {
        (Some(next), _) if !next.is_empty() => (
            Cursor {
                page_token: next,
                since: cursor.since,
                round_started: Some(started),
            },
            true,
        ),
        (_, Some(new_start)) if !new_start.is_empty() => (
            Cursor {
                page_token: new_start,
                since: started,
                round_started: None,
            },
            false,
        ),
        _ => return Err(ProviderCallError::Rejected(
            "Google Drive answered a change list with neither nextPageToken nor newStartPageToken"
                .into(),
        )),
    };
    Ok(SyncPage {
        signals,
        cursor: json!(cursor),
        more,
        metadata,
    })
}

/// The signals of one page. A change that cannot be read is logged and skipped: the rest of
/// the page, and the cursor past it, still count.
fn signals(list: &ChangeList, since: Timestamp, connection: &str) -> Vec<SignalDraft> {
    let mut out = Vec::with_capacity(list.changes.len());
    for change in &list.changes {
        match signal(change, since, connection) {
            Ok(Some(draft)) => out.push(draft),
            Ok(None) => {}
            Err(error) => tracing::warn!(%error, "skipped a Google Drive change"),
        }
    }
    out
}

fn signal(
    change: &Change,
    since: Timestamp,
    connection: &str,
) -> Result<Option<SignalDraft>, ProviderCallError> {
    if change.change_type.as_deref().is_some_and(|t| t != "file") {
        return Ok(None);
    }
    let Some(file_id) = change
        .file_id
        .clone()
        .or_else(|| change.file.as_ref().map(|f| f.id.clone()))
        .filter(|id| !id.is_empty())
    else {
        return Err(ProviderCallError::Rejected(
            "Google Drive answered a file change without a fileId".into(),
        ));
    };
    let occurred_at = parse_rfc3339(&change.time).map_err(|e| {
        ProviderCallError::Rejected(format!(
            "Google Drive answered a change time that is not RFC 3339: {e}"
        ))
    })?;
    let file = change.file.as_ref().filter(|_| !change.removed);
    let kind = match file {
        None => "file_deleted",
        Some(f) if f.trashed => "file_deleted",
        Some(f) => {
            let created = f
                .created_time
                .as_deref()
                .and_then(|t| parse_rfc3339(t).ok());
            if created.is_some_and(|c| c >= since) {
                "file_created"
            } else {
                "file_updated"
            }
        }
    };
    let actor = file
        .and_then(|f| f.last_modifying_user.as_ref())
        .and_then(|u| {
            let id = u
                .permission_id
                .clone()
                .or_else(|| u.email_address.clone())?;
            Some(Actor {
                id,
                name: u.display_name.clone(),
                email: u.email_address.clone(),
            })
        });
    let payload = json!({
        "file_id": file_id,
        "removed": change.removed,
        "time": change.time,
        "file": file,
    });
    Ok(Some(SignalDraft {
        kind: SignalKind::of(kind),
        occurred_at,
        actor,
        title: file.and_then(|f| f.name.clone()),
        url: file.and_then(|f| f.web_view_link.clone()),
        external_id: Some(file_id.clone()),
        dedupe_key: format!("google_drive:{connection}:{file_id}:{}", change.time),
        payload,
    }))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn list(body: Value) -> ChangeList {
        serde_json::from_value(body).expect("a change list")
    }

    #[test]
    fn changes_become_created_updated_and_deleted() {
        let since = parse_rfc3339("2026-12-01T00:00:00Z").expect("time");
        let page = list(json!({
            "kind": "drive#changeList",
            "newStartPageToken": "900",
            "changes": [
                {"changeType": "file", "fileId": "f1", "removed": false, "time": "2026-12-01T10:00:00.000Z",
                 "file": {"id": "f1", "name": "Plan.docx", "createdTime": "2026-12-01T09:59:00.000Z",
                          "webViewLink": "https://docs.google.com/document/d/f1/edit",
                          "lastModifyingUser": {"displayName": "Ada", "emailAddress": "ada@example.com", "permissionId": "0712"}}},
                {"changeType": "file", "fileId": "f2", "removed": false, "time": "2026-12-01T10:01:00.000Z",
                 "file": {"id": "f2", "name": "Old.txt", "createdTime": "2025-01-01T00:00:00.000Z"}},
                {"changeType": "file", "fileId": "f3", "removed": false, "time": "2026-12-01T10:02:00.000Z",
                 "file": {"id": "f3", "name": "Bin.txt", "trashed": true}},
                {"changeType": "file", "fileId": "f4", "removed": true, "time": "2026-12-01T10:03:00.000Z"},
                {"changeType": "drive", "driveId": "d1", "removed": false, "time": "2026-12-01T10:04:00.000Z"}
            ]
        }));
        let drafts = signals(&page, since, "c1");
        let kinds: Vec<&str> = drafts.iter().map(|d| d.kind.as_str()).collect();
        assert_eq!(
            kinds,
            [
                "file_created",
                "file_updated",
                "file_deleted",
                "file_deleted"
            ]
        );
        let first = &drafts[0];
        assert_eq!(first.title.as_deref(), Some("Plan.docx"));
        assert_eq!(
            first.url.as_deref(),
            Some("https://docs.google.com/document/d/f1/edit")
        );
        let actor = first.actor.as_ref().expect("actor");
        assert_eq!(
            (actor.id.as_str(), actor.name.as_deref()),
            ("0712", Some("Ada"))
        );
        assert_eq!(
            first.dedupe_key,
            "google_drive:c1:f1:2026-12-01T10:00:00.000Z"
        );
        assert_eq!(drafts[3].external_id.as_deref(), Some("f4"));
        assert!(drafts[3].title.is_none());
    }

    #[test]
    fn a_change_that_cannot_be_read_is_skipped_and_the_rest_of_its_page_kept() {
        let since = now();
        let good = json!({"changeType": "file", "fileId": "ok", "time": "2026-12-01T10:00:00Z",
                          "file": {"id": "ok", "name": "Plan"}});
        for bad in [
            json!({"changeType": "file", "time": "2026-12-01T10:00:00Z"}),
            json!({"changeType": "file", "fileId": "f", "time": "yesterday"}),
            json!({"changeType": "file", "fileId": "f"}),
            json!({"changeType": "file", "fileId": "f", "time": 7}),
        ] {
            let page = list(json!({"changes": [bad, good.clone()], "newStartPageToken": "9"}));
            let drafts = signals(&page, since, "c");
            assert_eq!(drafts.len(), 1, "{bad}");
            assert_eq!(drafts[0].external_id.as_deref(), Some("ok"));
            assert_eq!(page.new_start_page_token.as_deref(), Some("9"));
        }
    }

    fn connection(metadata: Value) -> Connection {
        use crate::domain::{ConnectionId, ConnectionStatus, TenantId};
        Connection {
            id: ConnectionId::generate(),
            tenant_id: TenantId(uuid::Uuid::new_v4()),
            provider: "google_drive".into(),
            external_account_id: "110169484474386276334".into(),
            external_account_name: None,
            status: ConnectionStatus::Active,
            scopes: vec![],
            token_expires_at: None,
            last_synced_at: None,
            last_error: None,
            metadata: metadata.as_object().cloned().unwrap_or_default(),
            created_at: now(),
            updated_at: now(),
        }
    }

    #[test]
    fn a_first_sync_starts_from_the_token_kept_at_connect_when_it_reads() {
        let kept = connection(json!({
            "email": "paula@zylker.com",
            "start_page_token": "100",
            "start_page_token_at": "2026-12-06T07:00:00Z",
        }));
        assert_eq!(
            kept_start(&kept),
            Some(Cursor {
                page_token: "100".into(),
                since: "2026-12-06T07:00:00Z".into(),
                round_started: None,
            })
        );
        for unreadable in [
            json!({}),
            json!({"start_page_token": "100"}),
            json!({"start_page_token": "", "start_page_token_at": "2026-12-06T07:00:00Z"}),
            json!({"start_page_token": "100", "start_page_token_at": "at connect"}),
            json!({"start_page_token": 100, "start_page_token_at": "2026-12-06T07:00:00Z"}),
        ] {
            assert_eq!(
                kept_start(&connection(unreadable.clone())),
                None,
                "{unreadable}"
            );
        }
    }

    proptest! {
        /// The cursor codec: what is written reads back, and garbage is refused, never a panic.
        #[test]
        fn cursors_round_trip(token in "[0-9A-Za-z_-]{1,40}", secs in 0i64..4_000_000_000, started in proptest::option::of(0i64..4_000_000_000)) {
            let at = |s: i64| format_time(&chrono::DateTime::from_timestamp(s, 0).expect("in range"));
            let cursor = Cursor { page_token: token, since: at(secs), round_started: started.map(at) };
            let read = Cursor::read(&json!(cursor)).expect("reads");
            prop_assert_eq!(read, cursor);
        }

        #[test]
        fn garbage_cursors_are_refused(value in proptest::arbitrary::any::<(String, String, u8)>()) {
            let (token, since, _) = value;
            let _ = Cursor::read(&json!({"page_token": token, "since": since}));
            let empty = json!({"page_token": "", "since": "2026-01-01T00:00:00Z"});
            prop_assert!(Cursor::read(&empty).is_err());
            prop_assert!(Cursor::read(&json!(token)).is_err());
        }
    }
}
