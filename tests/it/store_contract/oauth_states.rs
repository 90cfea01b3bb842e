//! The storage contract: oAuth states.

use super::*;

#[tokio::test]
async fn an_oauth_state_is_consumed_once_and_then_reported_used() -> Outcome {
    let app = TestApp::spawn().await;
    let store = app.store();
    let t = tenant();
    let at = now();
    let new = oauth_state(t, b"hash-1", at, at + Duration::minutes(10));
    store.insert_oauth_state(&new).await?;

    let consumed = store.consume_oauth_state(b"hash-1", at).await?;
    let again = store.consume_oauth_state(b"hash-1", at).await?;

    match consumed {
        StateConsumption::Consumed(state) => {
            assert_eq!(state.state_hash, new.state_hash);
            assert_eq!(state.tenant_id, t);
            assert_eq!(state.provider, new.provider);
            assert_eq!(state.pkce_verifier_sealed, new.pkce_verifier_sealed);
            assert_eq!(state.scopes, new.scopes);
            assert_eq!(state.redirect_uri, new.redirect_uri);
            assert_eq!(state.return_to, new.return_to);
            assert_eq!(state.expires_at, new.expires_at);
        }
        other => panic!("expected Consumed, got {other:?}"),
    }
    assert!(
        matches!(again, StateConsumption::AlreadyUsed { return_to } if return_to == new.return_to)
    );
    Ok(())
}

#[tokio::test]
async fn an_expired_oauth_state_is_reported_expired_and_an_unknown_one_unknown() -> Outcome {
    let app = TestApp::spawn().await;
    let store = app.store();
    let at = now();
    let new = oauth_state(
        tenant(),
        b"hash-1",
        at - Duration::minutes(10),
        at - Duration::seconds(1),
    );
    store.insert_oauth_state(&new).await?;

    let expired = store.consume_oauth_state(b"hash-1", at).await?;
    let unknown = store.consume_oauth_state(b"no-such-hash", at).await?;

    assert!(
        matches!(expired, StateConsumption::Expired { return_to } if return_to == new.return_to)
    );
    assert!(matches!(unknown, StateConsumption::Unknown));
    Ok(())
}

#[tokio::test]
async fn purging_oauth_states_deletes_those_expired_before_the_cut_off() -> Outcome {
    let app = TestApp::spawn().await;
    let store = app.store();
    let t = tenant();
    let at = now();
    let expiring = |hash: &[u8], minutes: i64| {
        oauth_state(
            t,
            hash,
            at - Duration::hours(1),
            at + Duration::minutes(minutes),
        )
    };
    store.insert_oauth_state(&expiring(b"old", -2)).await?;
    store.insert_oauth_state(&expiring(b"recent", -1)).await?;
    store.insert_oauth_state(&expiring(b"live", 1)).await?;

    let first_purge = store.purge_oauth_states(at - Duration::minutes(1)).await?;
    let second_purge = store.purge_oauth_states(at).await?;

    assert_eq!((first_purge, second_purge), (1, 1));
    assert!(matches!(
        store.consume_oauth_state(b"recent", at).await?,
        StateConsumption::Unknown
    ));
    assert!(matches!(
        store.consume_oauth_state(b"live", at).await?,
        StateConsumption::Consumed(_)
    ));
    Ok(())
}
