//! The storage contract: connections.

use super::*;

#[tokio::test]
async fn an_inserted_connection_reads_back_for_its_tenant_only() -> Outcome {
    let app = TestApp::spawn().await;
    let t = tenant();

    let inserted = app.connection(t, "github").await;

    assert_eq!(inserted.status, ConnectionStatus::Active);
    assert_eq!(inserted.scopes, vec!["repo".to_string()]);
    assert!(inserted.metadata.is_empty());
    assert_eq!(inserted.created_at, inserted.updated_at);
    let store = app.store();
    assert_eq!(
        store.get_connection(t, inserted.id).await?,
        Some(inserted.clone())
    );
    assert_eq!(store.get_connection(tenant(), inserted.id).await?, None);
    let unknown = connectors::domain::ConnectionId::generate();
    assert_eq!(store.get_connection(t, unknown).await?, None);
    Ok(())
}

#[tokio::test]
async fn connections_list_oldest_first_by_keyset_filtered_by_provider_and_status() -> Outcome {
    let app = TestApp::spawn().await;
    let store = app.store();
    let t = tenant();
    let t0 = now() - Duration::hours(1);
    let a = app.connection_at(t, "github", t0).await;
    let b = app.connection_at(t, "github", t0).await;
    let c = app
        .connection_at(t, "slack", t0 + Duration::minutes(1))
        .await;
    let d = app
        .connection_at(t, "github", t0 + Duration::minutes(2))
        .await;
    app.connection_at(tenant(), "github", t0).await;
    store
        .set_connection_status(t, d.id, ConnectionStatus::NeedsReauth, None, now())
        .await?;
    let mut tied = [a.id, b.id];
    tied.sort();

    let page_one = store
        .list_connections(t, &ConnectionFilter::default(), first(2))
        .await?;
    let last = page_one.last().expect("a full page");
    let page_two = store
        .list_connections(
            t,
            &ConnectionFilter::default(),
            after(last.created_at, last.id.0, 10),
        )
        .await?;
    let ids = |list: &[Connection]| list.iter().map(|c| c.id).collect::<Vec<_>>();
    let github = ConnectionFilter {
        provider: Some("github".into()),
        ..Default::default()
    };
    let needs_reauth = ConnectionFilter {
        status: Some(ConnectionStatus::NeedsReauth),
        ..Default::default()
    };
    let active_github = ConnectionFilter {
        provider: Some("github".into()),
        status: Some(ConnectionStatus::Active),
    };

    assert_eq!(ids(&page_one), tied.to_vec());
    assert_eq!(ids(&page_two), vec![c.id, d.id]);
    assert_eq!(
        ids(&store.list_connections(t, &github, first(10)).await?),
        vec![tied[0], tied[1], d.id]
    );
    assert_eq!(
        ids(&store.list_connections(t, &needs_reauth, first(10)).await?),
        vec![d.id]
    );
    assert_eq!(
        ids(&store.list_connections(t, &active_github, first(10)).await?),
        tied.to_vec()
    );
    Ok(())
}

#[tokio::test]
async fn a_connection_is_found_by_its_account_within_its_tenant_only() -> Outcome {
    let app = TestApp::spawn().await;
    let store = app.store();
    let t = tenant();
    let conn = app.connection(t, "github").await;

    let found = store
        .find_connection_id(t, "github", &conn.external_account_id)
        .await?;
    let elsewhere = store
        .find_connection_id(tenant(), "github", &conn.external_account_id)
        .await?;
    let other_provider = store
        .find_connection_id(t, "slack", &conn.external_account_id)
        .await?;

    assert_eq!(found, Some(conn.id));
    assert_eq!(elsewhere, None);
    assert_eq!(other_provider, None);
    Ok(())
}

#[tokio::test]
async fn upserting_a_new_account_creates_an_active_connection_with_its_credentials() -> Outcome {
    let app = TestApp::spawn().await;
    let store = app.store();
    let t = tenant();
    let new = upsert(t, "github", "acct-1", now());

    let conn = store.upsert_connection(&new).await?.expect("created");

    assert_eq!(conn.id, new.id);
    assert_eq!(conn.tenant_id, t);
    assert_eq!(conn.status, ConnectionStatus::Active);
    assert_eq!(conn.external_account_name.as_deref(), Some("octocat"));
    assert_eq!(conn.scopes, new.scopes);
    assert_eq!(conn.metadata, new.metadata);
    assert_eq!(conn.token_expires_at, new.tokens.expires_at);
    assert_eq!((conn.created_at, conn.updated_at), (new.now, new.now));
    assert_eq!(store.connection_tokens(t, conn.id).await?, Some(new.tokens));
    assert_eq!(
        store.connection_secrets(t, conn.id).await?,
        Some(b"secrets-1".to_vec())
    );
    Ok(())
}

#[tokio::test]
async fn upserting_the_same_account_again_updates_it_and_makes_it_active() -> Outcome {
    let app = TestApp::spawn().await;
    let store = app.store();
    let t = tenant();
    let original = upsert(t, "github", "acct-1", now() - Duration::minutes(5));
    store.upsert_connection(&original).await?.expect("created");
    store
        .set_connection_status(
            t,
            original.id,
            ConnectionStatus::NeedsReauth,
            Some("refresh token revoked"),
            now(),
        )
        .await?;
    let at = now();
    let again = ConnectionUpsert {
        external_account_name: Some("octocat-renamed".into()),
        scopes: vec!["repo".into(), "workflow".into()],
        tokens: tokens("access-2", None, Some(at + Duration::hours(2))),
        metadata: object(json!({ "site": "us" })),
        secrets_sealed: None,
        now: at,
        ..original.clone()
    };

    let conn = store.upsert_connection(&again).await?.expect("updated");

    assert_eq!(conn.id, original.id);
    assert_eq!(conn.status, ConnectionStatus::Active);
    assert_eq!(conn.last_error, None);
    assert_eq!(
        conn.external_account_name.as_deref(),
        Some("octocat-renamed")
    );
    assert_eq!(conn.scopes, again.scopes);
    assert_eq!(conn.metadata, object(json!({ "site": "us" })), "replaced");
    assert_eq!(conn.created_at, original.now);
    assert_eq!(conn.updated_at, at);
    assert_eq!(
        store.connection_tokens(t, conn.id).await?,
        Some(tokens(
            "access-2",
            Some("refresh-1"),
            Some(at + Duration::hours(2))
        )),
        "a missing refresh token keeps the old one"
    );
    assert_eq!(
        store.connection_secrets(t, conn.id).await?,
        Some(b"secrets-1".to_vec()),
        "no secrets keeps the old ones"
    );

    let with_secrets = ConnectionUpsert {
        secrets_sealed: Some(b"secrets-2".to_vec()),
        tokens: tokens("access-3", Some("refresh-3"), None),
        ..again
    };
    store
        .upsert_connection(&with_secrets)
        .await?
        .expect("updated");

    assert_eq!(
        store.connection_secrets(t, conn.id).await?,
        Some(b"secrets-2".to_vec())
    );
    assert_eq!(
        store.connection_tokens(t, conn.id).await?,
        Some(tokens("access-3", Some("refresh-3"), None))
    );
    Ok(())
}

#[tokio::test]
async fn upserting_an_account_stored_under_another_id_changes_nothing() -> Outcome {
    let app = TestApp::spawn().await;
    let store = app.store();
    let t = tenant();
    let first_connect = upsert(t, "github", "acct-1", now());
    let stored = store
        .upsert_connection(&first_connect)
        .await?
        .expect("created");
    let concurrent = ConnectionUpsert {
        id: connectors::domain::ConnectionId::generate(),
        tokens: tokens("access-other", Some("refresh-other"), None),
        ..upsert(t, "github", "acct-1", now())
    };

    let outcome = store.upsert_connection(&concurrent).await?;

    assert_eq!(outcome, None);
    assert_eq!(store.get_connection(t, stored.id).await?, Some(stored));
    assert_eq!(
        store.connection_tokens(t, first_connect.id).await?,
        Some(first_connect.tokens)
    );
    assert_eq!(store.get_connection(t, concurrent.id).await?, None);
    Ok(())
}

#[tokio::test]
async fn credentials_are_read_for_their_tenant_only() -> Outcome {
    let app = TestApp::spawn().await;
    let store = app.store();
    let t = tenant();
    let conn = connected(&app, t, "github").await?;
    let bare = app.connection(t, "github").await;

    assert_eq!(store.connection_tokens(tenant(), conn.id).await?, None);
    assert_eq!(store.connection_secrets(tenant(), conn.id).await?, None);
    assert_eq!(
        store.connection_tokens(t, bare.id).await?,
        Some(SealedTokens::default())
    );
    assert_eq!(store.connection_secrets(t, bare.id).await?, None);
    Ok(())
}

#[tokio::test]
async fn replacing_tokens_keeps_the_refresh_token_when_none_is_given() -> Outcome {
    let app = TestApp::spawn().await;
    let store = app.store();
    let t = tenant();
    let conn = connected(&app, t, "github").await?;
    let expires = now() + Duration::hours(3);

    store
        .replace_tokens(t, conn.id, &tokens("access-2", None, Some(expires)), now())
        .await?;
    store
        .replace_tokens(
            tenant(),
            conn.id,
            &tokens("intruder", Some("intruder"), None),
            now(),
        )
        .await?;

    assert_eq!(
        store.connection_tokens(t, conn.id).await?,
        Some(tokens("access-2", Some("refresh-1"), Some(expires)))
    );
    let read = store.get_connection(t, conn.id).await?.expect("there");
    assert_eq!(read.token_expires_at, Some(expires));

    store
        .replace_tokens(
            t,
            conn.id,
            &tokens("access-3", Some("refresh-3"), None),
            now(),
        )
        .await?;
    assert_eq!(
        store.connection_tokens(t, conn.id).await?,
        Some(tokens("access-3", Some("refresh-3"), None))
    );
    Ok(())
}

#[tokio::test]
async fn setting_a_status_records_its_error_for_the_tenants_connection_only() -> Outcome {
    let app = TestApp::spawn().await;
    let store = app.store();
    let t = tenant();
    let conn = app.connection(t, "github").await;
    let at = now();

    let changed = store
        .set_connection_status(t, conn.id, ConnectionStatus::Error, Some("boom"), at)
        .await?
        .expect("the tenant's connection");
    let elsewhere = store
        .set_connection_status(tenant(), conn.id, ConnectionStatus::Revoked, None, at)
        .await?;

    assert_eq!(changed.status, ConnectionStatus::Error);
    assert_eq!(changed.last_error.as_deref(), Some("boom"));
    assert_eq!(changed.updated_at, at);
    assert_eq!(elsewhere, None);
    assert_eq!(store.get_connection(t, conn.id).await?, Some(changed));
    Ok(())
}

#[tokio::test]
async fn revoking_a_connection_erases_its_tokens_and_provider_secrets() -> Outcome {
    let app = TestApp::spawn().await;
    let store = app.store();
    let t = tenant();
    let conn = connected(&app, t, "github").await?;

    let elsewhere = store.revoke_connection(tenant(), conn.id, now()).await?;
    let revoked = store
        .revoke_connection(t, conn.id, now())
        .await?
        .expect("revoked");

    assert_eq!(elsewhere, None);
    assert_eq!(revoked.status, ConnectionStatus::Revoked);
    assert_eq!(revoked.token_expires_at, None);
    assert_eq!(
        store.connection_tokens(t, conn.id).await?,
        Some(SealedTokens::default())
    );
    assert_eq!(store.connection_secrets(t, conn.id).await?, None);
    Ok(())
}

#[tokio::test]
async fn deleting_a_connection_takes_its_signals_and_jobs_along() -> Outcome {
    let app = TestApp::spawn().await;
    let store = app.store();
    let t = tenant();
    let conn = app.connection(t, "github").await;
    let kept = app.connection(t, "github").await;
    let gone_signal = signal(&conn, "pull_request", 1);
    let kept_signal = signal(&kept, "pull_request", 1);
    store
        .insert_signals(&[gone_signal.clone(), kept_signal.clone()])
        .await?;
    let gone_job = app
        .job(job(&conn, JobStatus::Succeeded, JobType::Full, 5))
        .await;

    let by_stranger = store.delete_connection(tenant(), conn.id).await?;
    let deleted = store.delete_connection(t, conn.id).await?;
    let again = store.delete_connection(t, conn.id).await?;

    assert!(!by_stranger);
    assert!(deleted);
    assert!(!again);
    assert_eq!(store.get_connection(t, conn.id).await?, None);
    assert_eq!(store.get_signal(t, gone_signal.id).await?, None);
    assert_eq!(store.get_job(t, gone_job.id).await?, None);
    assert!(store.get_signal(t, kept_signal.id).await?.is_some());
    Ok(())
}

#[tokio::test]
async fn connections_needing_refresh_are_active_with_a_refresh_token_and_soonest_first() -> Outcome
{
    let app = TestApp::spawn().await;
    let store = app.store();
    let t = tenant();
    let at = now();
    let expiring = |account: &str, refresh: Option<&str>, in_minutes: i64| ConnectionUpsert {
        tokens: tokens("a", refresh, Some(at + Duration::minutes(in_minutes))),
        ..upsert(t, "github", account, at)
    };
    let later = store
        .upsert_connection(&expiring("later", Some("r"), 5))
        .await?
        .expect("new");
    let soonest = store
        .upsert_connection(&expiring("soonest", Some("r"), 1))
        .await?
        .expect("new");
    store
        .upsert_connection(&expiring("no-refresh-token", None, 1))
        .await?
        .expect("new");
    let reauth = store
        .upsert_connection(&expiring("needs-reauth", Some("r"), 1))
        .await?
        .expect("new");
    store
        .set_connection_status(t, reauth.id, ConnectionStatus::NeedsReauth, None, at)
        .await?;
    store
        .upsert_connection(&expiring("beyond-horizon", Some("r"), 120))
        .await?
        .expect("new");
    app.connection(t, "github").await;
    let horizon = at + Duration::minutes(10);

    let due = store.connections_needing_refresh(horizon, 10).await?;
    let one = store.connections_needing_refresh(horizon, 1).await?;

    let ids: Vec<_> = due.iter().map(|c| c.id).collect();
    assert_eq!(ids, vec![soonest.id, later.id]);
    assert_eq!(one.len(), 1);
    assert_eq!(one[0].id, soonest.id);
    Ok(())
}

#[tokio::test]
async fn a_second_lock_on_a_connection_waits_until_the_first_is_dropped() -> Outcome {
    let app = TestApp::spawn().await;
    let store = app.store();
    let conn = app.connection(tenant(), "github").await;
    let other = app.connection(tenant(), "github").await;
    let held = store.lock_connection(conn.id).await?;

    let unrelated =
        tokio::time::timeout(StdDuration::from_secs(5), store.lock_connection(other.id)).await;
    let contender = store.clone();
    let id = conn.id;
    let mut second =
        tokio::spawn(async move { contender.lock_connection(id).await.map(|_lock| ()) });
    let while_held = tokio::time::timeout(StdDuration::from_millis(300), &mut second).await;
    drop(held);
    let once_dropped = tokio::time::timeout(StdDuration::from_secs(5), second).await;

    assert!(
        matches!(unrelated, Ok(Ok(_))),
        "another connection's lock is free"
    );
    assert!(while_held.is_err(), "the second lock waited");
    once_dropped.expect("the second lock was taken once the first was dropped")??;
    Ok(())
}

/// The sealed values of `field`, all of them.
async fn sealed(store: &Arc<dyn Store>, field: SealedField) -> anyhow::Result<Vec<SealedValue>> {
    Ok(store.sealed_values(field, None, 100).await?)
}

#[tokio::test]
async fn sealed_values_page_through_every_sealed_column_by_row_key() -> Outcome {
    let app = TestApp::spawn().await;
    let store = app.store();
    let t = tenant();
    let a = connected(&app, t, "github").await?;
    let b = connected(&app, t, "slack").await?;
    app.connection(t, "github").await;
    let at = now();
    let hashes = [b"hash-a".to_vec(), b"hash-b".to_vec()];
    for hash in &hashes {
        store
            .insert_oauth_state(&oauth_state(t, hash, at, at + Duration::minutes(10)))
            .await?;
    }
    let without_verifier = NewOAuthState {
        pkce_verifier_sealed: None,
        ..oauth_state(t, b"hash-c", at, at + Duration::minutes(10))
    };
    store.insert_oauth_state(&without_verifier).await?;

    for field in SealedField::ALL {
        let value: &[u8] = match field {
            SealedField::AccessToken => b"access-1",
            SealedField::RefreshToken => b"refresh-1",
            SealedField::ProviderSecrets => b"secrets-1",
            SealedField::PkceVerifier => b"pkce-1",
        };
        let mut expected: Vec<SealedValue> = match field {
            SealedField::PkceVerifier => hashes
                .iter()
                .map(|h| SealedValue {
                    field,
                    row: h.clone(),
                    tenant_id: t,
                    provider: "github".into(),
                    sealed: value.to_vec(),
                })
                .collect(),
            _ => [&a, &b]
                .iter()
                .map(|c| SealedValue {
                    field,
                    row: c.id.0.as_bytes().to_vec(),
                    tenant_id: t,
                    provider: c.provider.clone(),
                    sealed: value.to_vec(),
                })
                .collect(),
        };
        expected.sort_by(|x, y| x.row.cmp(&y.row));

        let page_one = store.sealed_values(field, None, 1).await?;
        let page_two = store
            .sealed_values(field, Some(&page_one[0].row), 10)
            .await?;

        assert_eq!(page_one, expected[..1].to_vec(), "{field:?}");
        assert_eq!(page_two, expected[1..].to_vec(), "{field:?}");
    }
    Ok(())
}

#[tokio::test]
async fn a_sealed_value_is_replaced_only_while_it_is_still_the_one_read() -> Outcome {
    let app = TestApp::spawn().await;
    let store = app.store();
    let t = tenant();
    let conn = connected(&app, t, "github").await?;
    let at = now();
    store
        .insert_oauth_state(&oauth_state(t, b"hash-a", at, at + Duration::minutes(10)))
        .await?;

    for field in SealedField::ALL {
        let read = sealed(&store, field).await?.remove(0);

        let replaced = store.replace_sealed(&read, b"resealed").await?;
        let stale = store.replace_sealed(&read, b"resealed-again").await?;

        assert!(replaced, "{field:?}");
        assert!(!stale, "{field:?}: the value read is gone");
        let now_stored = sealed(&store, field).await?.remove(0);
        assert_eq!(now_stored.sealed, b"resealed".to_vec(), "{field:?}");
    }
    let resealed = Some(b"resealed".to_vec());
    let creds = store.connection_tokens(t, conn.id).await?.expect("there");
    assert_eq!(
        (creds.access_token, creds.refresh_token),
        (resealed.clone(), resealed.clone())
    );
    assert_eq!(store.connection_secrets(t, conn.id).await?, resealed);
    match store.consume_oauth_state(b"hash-a", now()).await? {
        StateConsumption::Consumed(state) => {
            assert_eq!(state.pkce_verifier_sealed, resealed)
        }
        other => panic!("expected the state to be consumed, got {other:?}"),
    }
    Ok(())
}

#[tokio::test]
async fn a_metadata_patch_sets_members_removes_nulls_and_reaches_only_the_tenants_connection(
) -> Outcome {
    let app = TestApp::spawn().await;
    let store = app.store();
    let t = tenant();
    let mut first = upsert(t, "gmail", "a", now());
    first.metadata = object(json!({ "email": "a@example.com", "history_id": "1" }));
    let conn = store.upsert_connection(&first).await?.expect("created");

    let patched = store
        .patch_connection_metadata(
            t,
            conn.id,
            &object(json!({ "history_id": "2", "email": null, "label": "work" })),
            now(),
        )
        .await?;
    assert!(patched);
    let read = store.get_connection(t, conn.id).await?.expect("there");
    assert_eq!(
        Value::Object(read.metadata),
        json!({ "history_id": "2", "label": "work" })
    );

    let foreign = store
        .patch_connection_metadata(tenant(), conn.id, &object(json!({ "x": 1 })), now())
        .await?;
    assert!(!foreign, "another tenant's patch reaches nothing");
    let read = store.get_connection(t, conn.id).await?.expect("there");
    assert!(!read.metadata.contains_key("x"));
    Ok(())
}
