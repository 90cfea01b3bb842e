//! Key rotation re-seals every stored secret under the new key, resumably.

use connectors::crypto::{CryptoKey, Vault};
use connectors::keys::rotate;
use connectors::tokens::open_tokens;

use crate::connect::connect_sandbox;
use crate::helpers::{tenant, TestApp};

#[tokio::test]
async fn rotation_reseals_every_secret_and_can_be_resumed() {
    let app = TestApp::spawn().await;
    let t = tenant();
    let connection = connect_sandbox(&app, t).await;
    connect_sandbox(&app, tenant()).await;
    let old = app.state.config.crypto_key.clone();
    let new = CryptoKey::generate();
    let rotating = Vault::new(new.clone(), vec![old.clone()]);

    // An interrupted run: one value re-sealed, then stopped.
    let first = rotate(app.store().as_ref(), &rotating, 1, Some(1))
        .await
        .expect("rotate");
    assert_eq!(first.resealed, 1);
    // Running again finishes the job: 2 connections × 2 tokens + 2 PKCE verifiers, one done.
    let rest = rotate(app.store().as_ref(), &rotating, 2, None)
        .await
        .expect("rotate");
    assert_eq!(first.resealed + rest.resealed, 6, "{rest:?}");
    let again = rotate(app.store().as_ref(), &rotating, 100, None)
        .await
        .expect("rotate");
    assert_eq!(again.resealed, 0, "nothing left to do");
    assert_eq!(again.examined, 6);

    // The new key alone now opens the tokens; the old key alone no longer does.
    let id = connection["id"]
        .as_str()
        .expect("id")
        .parse()
        .expect("uuid");
    let conn = app
        .store()
        .get_connection(t, id)
        .await
        .expect("get")
        .expect("exists");
    let mut state = app.state.clone();
    state.services.vault = Vault::new(new, vec![]);
    let tokens = open_tokens(&state, &conn)
        .await
        .expect("opens under the new key");
    assert!(tokens.access_token.expose().starts_with("sandbox-access."));
    state.services.vault = Vault::new(old, vec![]);
    assert!(open_tokens(&state, &conn).await.is_err());
}

/// A connection's sealed provider secrets: opened for the row they were sealed for, refused
/// in any other row, erased on disconnect, and re-sealed by a rotation like the tokens.
#[tokio::test]
async fn provider_secrets_are_bound_to_their_row_and_rotate_with_the_tokens() {
    use connectors::domain::{now, ConnectionUpsert, SealedTokens};
    use connectors::tokens::{open_secrets, seal_secrets};

    let app = TestApp::spawn().await;
    let t = tenant();
    let (first, second) = (
        app.connection(t, "sandbox").await,
        app.connection(t, "sandbox").await,
    );
    let mut values = serde_json::Map::new();
    values.insert("signing_key".into(), "s3cr3t-value".into());
    let sealed = seal_secrets(&app.state, t, "sandbox", first.id, &values).expect("sealed");
    assert!(!String::from_utf8_lossy(&sealed).contains("s3cr3t-value"));
    let upsert = |id, account: &str, secrets: Option<Vec<u8>>| ConnectionUpsert {
        id,
        tenant_id: t,
        provider: "sandbox".into(),
        external_account_id: account.to_string(),
        external_account_name: None,
        scopes: vec![],
        tokens: SealedTokens::default(),
        metadata: Default::default(),
        secrets_sealed: secrets,
        now: now(),
    };
    let store = app.store();
    store
        .upsert_connection(&upsert(
            first.id,
            &first.external_account_id,
            Some(sealed.clone()),
        ))
        .await
        .expect("upsert")
        .expect("updated");
    let opened = open_secrets(&app.state, &first).await.expect("opens");
    assert_eq!(opened.get("signing_key"), Some("s3cr3t-value"));
    assert_eq!(format!("{opened:?}"), "ProviderSecrets(1 [redacted])");

    // The same bytes in another row do not open.
    store
        .upsert_connection(&upsert(
            second.id,
            &second.external_account_id,
            Some(sealed),
        ))
        .await
        .expect("upsert")
        .expect("updated");
    assert!(open_secrets(&app.state, &second).await.is_err());
    store
        .revoke_connection(t, second.id, now())
        .await
        .expect("revoke")
        .expect("revoked");

    // A rotation re-seals them; the new key alone opens them.
    let old = app.state.config.crypto_key.clone();
    let new = CryptoKey::generate();
    let report = rotate(
        store.as_ref(),
        &Vault::new(new.clone(), vec![old]),
        100,
        None,
    )
    .await
    .expect("rotate");
    assert_eq!(report.resealed, 1, "{report:?}");
    let mut state = app.state.clone();
    state.services.vault = Vault::new(new, vec![]);
    let reopened = open_secrets(&state, &first)
        .await
        .expect("opens under the new key");
    assert_eq!(reopened.get("signing_key"), Some("s3cr3t-value"));

    // A disconnect erases them.
    store
        .revoke_connection(t, first.id, now())
        .await
        .expect("revoke")
        .expect("revoked");
    assert_eq!(
        store.connection_secrets(t, first.id).await.expect("read"),
        None
    );
}
