//! Checking what Core sends for an endpoint: the URL against the egress rules (its form, and
//! that its host resolves to an address deliveries may reach), the description's length, and
//! event types, providers and kinds against what this deployment knows. Every problem is
//! collected under its field's name for one `400 VALIDATION_FAILED`.

use serde_json::{Map, Value};

use super::endpoints::FilterBody;
use crate::domain::{EndpointFilter, EventType, SignalKind};
use crate::http::{ApiError, AppState};
use crate::push::{EgressError, EgressPolicy};

/// The longest URL accepted.
const MAX_URL_LEN: usize = 2048;
/// The longest description accepted, in characters.
const MAX_DESCRIPTION_CHARS: usize = 500;

/// Parses a JSON body, naming `body` when it is not the expected object.
pub(super) fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::invalid_field("body", format!("must be a JSON object: {e}")))
}

/// Checks the URL's form and that its host resolves to an address deliveries may reach.
pub(super) async fn check_url(policy: &EgressPolicy, url: &str, errors: &mut Map<String, Value>) {
    if url.len() > MAX_URL_LEN {
        errors.insert(
            "url".into(),
            format!("must be at most {MAX_URL_LEN} bytes").into(),
        );
        return;
    }
    let checked = match policy.check_url(url) {
        Ok(parsed) => policy.resolve(&parsed).await.map(|_| ()),
        Err(e) => Err(e),
    };
    if let Err(e) = checked {
        let problem = match e {
            EgressError::NotHttps if policy_allows_http(policy) => {
                "must be an absolute http or https URL".to_string()
            }
            other => other.to_string(),
        };
        errors.insert("url".into(), problem.into());
    }
}

fn policy_allows_http(policy: &EgressPolicy) -> bool {
    policy.check_url("http://localhost/").is_ok()
}

/// Parses the filter members, recording every problem under its field's name.
pub(super) fn parse_filter(
    state: &AppState,
    event_types: Option<Vec<String>>,
    filter: Option<FilterBody>,
    errors: &mut Map<String, Value>,
) -> EndpointFilter {
    let filter = filter.unwrap_or_default();
    let registry = &state.registry;
    let mut parse = |field: &str, items: Option<Vec<String>>, ok: &dyn Fn(&str) -> bool| {
        let items = items?;
        if items.is_empty() {
            errors.insert(
                field.into(),
                "must list at least one value (leave it out for all)".into(),
            );
        } else if let Some(bad) = items.iter().find(|i| !ok(i)) {
            errors.insert(field.into(), format!("{bad:?} is not known").into());
        }
        Some(items)
    };
    let types = parse("event_types", event_types, &|t| {
        t.parse::<EventType>().is_ok()
    });
    let providers = parse("filter.providers", filter.providers, &|p| {
        registry.parse(p).is_some()
    });
    let kinds = parse("filter.kinds", filter.kinds, &|k| {
        SignalKind::parse(k).is_ok_and(|k| registry.knows_kind(&k))
    });
    EndpointFilter {
        event_types: types.map(|t| t.iter().filter_map(|t| t.parse().ok()).collect()),
        providers,
        kinds,
    }
}

pub(super) fn check_description(description: &Option<String>, errors: &mut Map<String, Value>) {
    if description
        .as_ref()
        .is_some_and(|d| d.chars().count() > MAX_DESCRIPTION_CHARS)
    {
        errors.insert(
            "description".into(),
            format!("must be at most {MAX_DESCRIPTION_CHARS} characters").into(),
        );
    }
}

pub(super) fn finish(errors: Map<String, Value>) -> Result<(), ApiError> {
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApiError::validation(errors))
    }
}
