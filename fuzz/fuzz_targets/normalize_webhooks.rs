//! Every provider's webhook normalizer, account reader and router on arbitrary stored events:
//! nothing panics, a route only ever names one of the tenant's candidate connections, and a
//! delivery whose payload names an account is never routed to a connection of another account
//! (not even the tenant's only one). The pseudo-header `event-type` of an input is the event
//! type its verifier recorded.
#![no_main]

use connectors::connector::Connector;
use connectors::domain::{Connection, ConnectionId, ConnectionStatus};
use connectors::providers::CATALOGUE;
use fuzzing::{delivery, header, TENANT};
use libfuzzer_sys::fuzz_target;


fn connection(provider: &str, account: &str) -> Connection {
    let at = connectors::domain::now();
    let mut metadata = serde_json::Map::new();
    metadata.insert("email".into(), account.into());
    Connection {
        id: ConnectionId::generate(),
        tenant_id: TENANT,
        provider: provider.into(),
        external_account_id: account.into(),
        external_account_name: None,
        status: ConnectionStatus::Active,
        scopes: Vec::new(),
        token_expires_at: None,
        last_synced_at: None,
        last_error: None,
        metadata,
        created_at: at,
        updated_at: at,
    }
}

fn check(connector: &dyn Connector, data: &[u8]) {
    let slug = connector.descriptor().slug;
    let input = delivery(data);
    let event_type = header(&input.headers, "event-type").map(str::to_string);
    let event = fuzzing::event(slug, &input.headers, input.body, event_type);
    let _ = connector.normalize_webhook(&event);
    let named = connector.webhook_account(&input.headers, input.body);
    let stranger = connection(slug, "fuzz-stranger@example.com");
    let mut candidates = vec![stranger.clone()];
    if let Some(account) = &named {
        candidates.push(connection(slug, account));
    }
    for set in [
        &candidates[..],
        &candidates[..1],
        &candidates[candidates.len() - 1..],
    ] {
        if let Some(id) = connector.route_webhook(&event, set) {
            assert!(
                set.iter().any(|c| c.id == id),
                "{slug} routed outside the candidates"
            );
        }
    }
    let Some(account) = named else {
        return;
    };
    if account.eq_ignore_ascii_case(&stranger.external_account_id) {
        return;
    }
    assert_eq!(
        connector.route_webhook(&event, std::slice::from_ref(&stranger)),
        None,
        "{slug} routed a delivery naming {account:?} to another account's only connection"
    );
}

fuzz_target!(|data: &[u8]| {
    for connector in CATALOGUE {
        check(*connector, data);
    }
});
