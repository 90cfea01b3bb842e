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
