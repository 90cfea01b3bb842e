//! The connection's dynamic webhook, as a subscription on the resource `issues`
//! (<https://developer.atlassian.com/cloud/jira/platform/webhooks/#registering-a-webhook-using-the-rest-api-for-oauth-2-0-apps>):
//!
//! ```text
//! POST   /rest/api/3/webhook          {"url": tenant URL, "webhooks": [{"events", "jqlFilter"}]}
//!        → 200 {"webhookRegistrationResult": [{"createdWebhookId": 1000} | {"errors": [...]}]}
//! PUT    /rest/api/3/webhook/refresh  {"webhookIds": [1000]} → 200 {"expirationDate": ...}
//! DELETE /rest/api/3/webhook          {"webhookIds": [1000]} → 202
//! ```
//!
//! Atlassian answers `200` even when it refused a webhook: the refusal is in
//! `webhookRegistrationResult[].errors`, and the subscription fails with it. A webhook lapses
//! 30 days after it was registered or last refreshed; the engine renews at four fifths of
//! that. `expirationDate` is an integer (epoch ms) in the OpenAPI schema and a Jira time string
//! in its example: both are read. The webhook's id is kept in the connection's metadata
//! (`webhook_ids`) so deliveries (`matchedWebhookIds`) route to it.

use chrono::Duration;
use reqwest::Method;
use serde_json::{json, Value};

use super::api::{call, cloud_id, site_url};
use super::time::{from_millis, parse_jira_time};
use super::webhook::{EVENTS, WEBHOOK_IDS};
use crate::connector::{Metadata, Opened, ProviderCallError, SubscriptionContext};
use crate::domain::{now, Timestamp};

/// The resource a connection subscribes to.
pub(super) const RESOURCE: &str = "issues";
/// The setting naming the webhook's JQL filter.
pub(super) const JQL_SETTING: &str = "WEBHOOK_JQL";
/// The filter when the setting is absent: every issue of every project (the filter is
/// required, and only `=`, `!=`, `IN` and `NOT IN` on a few fields are allowed).
pub(super) const DEFAULT_JQL: &str = "project != \"POBLYSH-NO-SUCH-PROJECT\"";
/// How long a dynamic webhook lives after registration or refresh.
const LIFETIME_DAYS: i64 = 30;

fn jql(ctx: &SubscriptionContext<'_>) -> String {
    ctx.provider
        .settings
        .extra(JQL_SETTING)
        .map(str::trim)
        .filter(|j| !j.is_empty())
        .unwrap_or(DEFAULT_JQL)
        .to_string()
}

/// Registers the webhook.
pub(super) async fn open(ctx: SubscriptionContext<'_>) -> Result<Opened, ProviderCallError> {
    let filter = jql(&ctx);
    let body = json!({
        "url": ctx.webhook_url.as_str(),
        "webhooks": [{ "events": EVENTS, "jqlFilter": filter }],
    });
    let url = site_url(ctx.provider.settings, cloud_id(ctx.connection), "/webhook");
    let (_, answer) = call(
        ctx.provider.http,
        ctx.access_token,
        Method::POST,
        url,
        Some(&body),
        "Jira webhook registration",
    )
    .await?;
    let id = registered_id(&answer)?;
    let mut state = Metadata::new();
    state.insert("jql_filter".into(), json!(filter));
    let mut metadata = Metadata::new();
    metadata.insert(WEBHOOK_IDS.into(), json!([id]));
    Ok(Opened {
        external_id: id.to_string(),
        expires_at: Some(now() + Duration::days(LIFETIME_DAYS)),
        state,
        metadata: Some(metadata),
    })
}

/// The id of the one webhook registered, or Atlassian's reasons for refusing it.
fn registered_id(answer: &Value) -> Result<i64, ProviderCallError> {
    let first = answer
        .get("webhookRegistrationResult")
        .and_then(Value::as_array)
        .and_then(|r| r.first())
        .ok_or_else(|| {
            ProviderCallError::Rejected(
                "Jira answered the webhook registration without a result".into(),
            )
        })?;
    if let Some(id) = first.get("createdWebhookId").and_then(Value::as_i64) {
        return Ok(id);
    }
    let errors: Vec<&str> = first
        .get("errors")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let why: String = if errors.is_empty() {
        "no reason given".to_string()
    } else {
        errors.join("; ")
    }
    .chars()
    .filter(|c| !c.is_control())
    .take(300)
    .collect();
    Err(ProviderCallError::Rejected(format!(
        "Jira refused the webhook: {why}"
    )))
}

fn webhook_id(ctx: &SubscriptionContext<'_>) -> Result<i64, ProviderCallError> {
    ctx.subscription
        .external_id
        .as_deref()
        .and_then(|id| id.parse::<i64>().ok())
        .ok_or_else(|| ProviderCallError::Rejected("the webhook was never registered".into()))
}

/// Extends the webhook's life.
pub(super) async fn renew(ctx: SubscriptionContext<'_>) -> Result<Opened, ProviderCallError> {
    let id = webhook_id(&ctx)?;
    let url = site_url(
        ctx.provider.settings,
        cloud_id(ctx.connection),
        "/webhook/refresh",
    );
    let (_, answer) = call(
        ctx.provider.http,
        ctx.access_token,
        Method::PUT,
        url,
        Some(&json!({ "webhookIds": [id] })),
        "Jira webhook refresh",
    )
    .await?;
    let expires_at = expiration(answer.get("expirationDate")).ok_or_else(|| {
        ProviderCallError::Rejected("Jira answered the refresh without an expirationDate".into())
    })?;
    Ok(Opened {
        external_id: id.to_string(),
        expires_at: Some(expires_at),
        state: ctx.subscription.state.clone(),
        metadata: None,
    })
}

/// `expirationDate` as epoch milliseconds or a Jira time.
fn expiration(value: Option<&Value>) -> Option<Timestamp> {
    match value? {
        Value::Number(n) => from_millis(n.as_i64()?),
        Value::String(s) => parse_jira_time(s),
        _ => None,
    }
}

/// Deletes the webhook.
pub(super) async fn close(ctx: SubscriptionContext<'_>) -> Result<(), ProviderCallError> {
    let id = webhook_id(&ctx)?;
    let url = site_url(ctx.provider.settings, cloud_id(ctx.connection), "/webhook");
    call(
        ctx.provider.http,
        ctx.access_token,
        Method::DELETE,
        url,
        Some(&json!({ "webhookIds": [id] })),
        "Jira webhook deletion",
    )
    .await
    .map(|_| ())
}

/// Checks `POBLYSH_JIRA_WEBHOOK_JQL` at start-up: clauses `field op value` joined by `AND` or
/// `OR`, with only the fields and operators Atlassian allows in a webhook's filter.
pub(super) fn check_jql(text: &str) -> Result<(), String> {
    let tokens = lex(text)?;
    let mut i = 0;
    let mut depth = 0usize;
    let mut clauses = 0;
    let word = |t: Option<&Token>| match t {
        Some(Token::Word(w)) => Some(w.to_ascii_lowercase()),
        _ => None,
    };
    loop {
        while tokens.get(i) == Some(&Token::Open) {
            depth += 1;
            i += 1;
        }
        let field = word(tokens.get(i)).ok_or("expected a field")?;
        if !allowed_field(&field) {
            return Err(format!(
                "the field {field:?} cannot be used in a webhook filter (issueKey, project, \
                 issuetype, status, assignee, reporter, issue.property[...], cf[id])"
            ));
        }
        i += 1;
        match (tokens.get(i), word(tokens.get(i + 1))) {
            (Some(Token::Eq | Token::NotEq), _) => i += 1,
            (Some(Token::Word(w)), _) if w.eq_ignore_ascii_case("in") => i += 1,
            (Some(Token::Word(w)), Some(next)) if w.eq_ignore_ascii_case("not") && next == "in" => {
                i += 2
            }
            _ => return Err("only the operators =, !=, IN and NOT IN are allowed".into()),
        }
        match tokens.get(i) {
            Some(Token::Word(_) | Token::Quoted) => i += 1,
            Some(Token::Open) => {
                i += 1;
                loop {
                    match tokens.get(i) {
                        Some(Token::Word(_) | Token::Quoted) => i += 1,
                        _ => return Err("expected a value in the list".into()),
                    }
                    match tokens.get(i) {
                        Some(Token::Comma) => i += 1,
                        Some(Token::Close) => {
                            i += 1;
                            break;
                        }
                        _ => return Err("expected , or ) in the list".into()),
                    }
                }
            }
            _ => return Err("expected a value".into()),
        }
        clauses += 1;
        while tokens.get(i) == Some(&Token::Close) {
            depth = depth.checked_sub(1).ok_or("unbalanced parentheses")?;
            i += 1;
        }
        match word(tokens.get(i)).as_deref() {
            None if i == tokens.len() => break,
            Some("and" | "or") => i += 1,
            _ => return Err("clauses must be joined by AND or OR (no ORDER BY)".into()),
        }
    }
    if depth != 0 || clauses == 0 {
        return Err("unbalanced parentheses".into());
    }
    Ok(())
}

fn allowed_field(field: &str) -> bool {
    matches!(
        field,
        "issuekey" | "key" | "project" | "issuetype" | "type" | "status" | "assignee" | "reporter"
    ) || field.starts_with("issue.property[")
        || (field.starts_with("cf[") && field.ends_with(']'))
}

#[derive(Debug, PartialEq, Eq)]
enum Token {
    Word(String),
    Quoted,
    Open,
    Close,
    Comma,
    Eq,
    NotEq,
}

fn lex(text: &str) -> Result<Vec<Token>, String> {
    if text.len() > 2000 {
        return Err("the filter is too long".into());
    }
    let mut tokens = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {}
            '(' => tokens.push(Token::Open),
            ')' => tokens.push(Token::Close),
            ',' => tokens.push(Token::Comma),
            '=' => tokens.push(Token::Eq),
            '!' if chars.peek() == Some(&'=') => {
                chars.next();
                tokens.push(Token::NotEq);
            }
            '"' | '\'' => {
                let mut closed = false;
                while let Some(d) = chars.next() {
                    if d == '\\' {
                        chars.next();
                    } else if d == c {
                        closed = true;
                        break;
                    }
                }
                if !closed {
                    return Err("an unterminated quoted value".into());
                }
                tokens.push(Token::Quoted);
            }
            c if c.is_alphanumeric() || "_-.[]".contains(c) => {
                let mut w = String::from(c);
                while let Some(&d) = chars.peek() {
                    if d.is_alphanumeric() || "_-.[]".contains(d) {
                        w.push(d);
                        chars.next();
                    } else {
                        break;
                    }
                }
                tokens.push(Token::Word(w));
            }
            other => return Err(format!("{other:?} is not allowed in a webhook filter")),
        }
    }
    Ok(tokens)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn filters_with_the_allowed_fields_and_operators_pass() {
        for ok in [
            DEFAULT_JQL,
            "project = PROJ",
            "project IN (PROJ, EXP) AND status = done",
            "issuetype = Bug",
            "(project = A OR project = \"B C\") AND status NOT IN (Done, 'Won\\'t')",
            "cf[10014] = EPIC-1",
            "issue.property[flag].enabled = true",
        ] {
            assert_eq!(check_jql(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "project ~ PROJ",
            "updated > -1d",
            "summary = x",
            "project = A ORDER BY created",
            "project IS EMPTY",
            "watchCount = 1",
            "project = (A",
            "project IN (A, B",
            "(project = A",
            "project = A)",
            "project = \"unterminated",
            "project = A AND",
        ] {
            assert!(check_jql(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn refusals_in_a_200_are_failures_with_atlassians_reasons() {
        // The example answer of the OpenAPI document: the first webhook registered.
        let example = json!({"webhookRegistrationResult":[{"createdWebhookId":1000},{"errors":["The clause watchCount is unsupported"]},{"createdWebhookId":1001}]});
        assert_eq!(registered_id(&example).expect("id"), 1000);
        let refused = json!({"webhookRegistrationResult":[{"errors":["The clause watchCount is unsupported"]}]});
        match registered_id(&refused) {
            Err(ProviderCallError::Rejected(why)) => {
                assert_eq!(
                    why,
                    "Jira refused the webhook: The clause watchCount is unsupported"
                )
            }
            other => panic!("{other:?}"),
        }
        assert!(registered_id(&json!({"webhookRegistrationResult": []})).is_err());
        assert!(registered_id(&json!({})).is_err());
    }

    #[test]
    fn expiration_dates_are_read_as_numbers_and_as_jira_times() {
        assert_eq!(
            expiration(Some(&json!(1559392950000_i64))).map(|t| t.to_rfc3339()),
            Some("2019-06-01T12:42:30+00:00".to_string())
        );
        assert_eq!(
            expiration(Some(&json!("2019-06-01T12:42:30.000+0000"))).map(|t| t.to_rfc3339()),
            Some("2019-06-01T12:42:30+00:00".to_string())
        );
        assert_eq!(expiration(Some(&json!(true))), None);
        assert_eq!(expiration(None), None);
    }

    proptest! {
        #[test]
        fn arbitrary_filters_never_panic(text in ".{0,80}") {
            let _ = check_jql(&text);
        }
    }
}
