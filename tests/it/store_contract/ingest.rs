//! The storage contract: deliveries stored side by side, which the store commits in groups.
//! Each caller still learns exactly what became of its own delivery.

use std::collections::HashMap;

use connectors::domain::ConnectionId;
use futures::future::join_all;

use super::*;

#[tokio::test]
async fn concurrent_redeliveries_each_learn_whether_theirs_was_stored() -> Outcome {
    let app = TestApp::spawn().await;
    let store = app.store();
    let t = tenant();
    let earlier = delivery(t, "github", "stored-before", now());
    store.insert_webhook_event(&earlier).await?;
    // Three copies of each of ten keys, and two more of the key stored before, all at once.
    let mut deliveries: Vec<NewWebhookEvent> = (0..30)
        .map(|i| delivery(t, "github", &format!("key-{}", i % 10), now()))
        .collect();
    deliveries.push(delivery(t, "github", "stored-before", now()));
    deliveries.push(delivery(t, "github", "stored-before", now()));

    let outcomes = join_all(deliveries.iter().map(|d| store.insert_webhook_event(d))).await;

    let mut stored_per_key: HashMap<&str, Vec<Uuid>> = HashMap::new();
    for (new, outcome) in deliveries.iter().zip(outcomes) {
        let (id, duplicate) = outcome?;
        if duplicate {
            assert_ne!(id, new.id, "a duplicate names the event stored before it");
        } else {
            assert_eq!(id, new.id, "a stored delivery names itself");
            stored_per_key.entry(&new.dedupe_key).or_default().push(id);
        }
        let event = store.get_webhook_event(t, id).await?.expect("stored");
        assert_eq!(event.dedupe_key, new.dedupe_key);
    }
    for i in 0..10 {
        let key = format!("key-{i}");
        let stored = stored_per_key.get(key.as_str()).map_or(0, Vec::len);
        assert_eq!(stored, 1, "exactly one delivery of {key} is stored");
    }
    assert!(!stored_per_key.contains_key("stored-before"));
    for copy in &deliveries[30..] {
        assert!(store.get_webhook_event(t, copy.id).await?.is_none());
    }
    Ok(())
}

#[tokio::test]
async fn concurrent_redeliveries_answer_with_the_one_event_stored() -> Outcome {
    let app = TestApp::spawn().await;
    let store = app.store();
    let t = tenant();
    let copies: Vec<NewWebhookEvent> = (0..8)
        .map(|_| delivery(t, "github", "same-key", now()))
        .collect();

    let outcomes = join_all(copies.iter().map(|d| store.insert_webhook_event(d))).await;

    let outcomes: Vec<(Uuid, bool)> = outcomes.into_iter().collect::<Result<_, _>>()?;
    let stored: Vec<&(Uuid, bool)> = outcomes.iter().filter(|(_, dup)| !dup).collect();
    assert_eq!(stored.len(), 1, "{outcomes:?}");
    let (id, _) = stored[0];
    assert!(
        outcomes.iter().all(|(other, _)| other == id),
        "{outcomes:?}"
    );
    assert!(copies.iter().any(|c| c.id == *id));
    Ok(())
}

#[tokio::test]
async fn one_bad_delivery_among_concurrent_ones_fails_alone() -> Outcome {
    let app = TestApp::spawn().await;
    let store = app.store();
    let t = tenant();
    // A connection that does not exist breaks the foreign key of this one delivery only.
    let bad = NewWebhookEvent {
        connection_id: Some(ConnectionId::generate()),
        ..delivery(t, "github", "bad", now())
    };
    let mut goods: Vec<NewWebhookEvent> = (0..20)
        .map(|i| delivery(t, "github", &format!("good-{i}"), now()))
        .collect();
    // A redelivery among them is still told it is one.
    goods.push(delivery(t, "github", "good-0", now()));

    let (bad_result, good_results) = tokio::join!(
        store.insert_webhook_event(&bad),
        join_all(goods.iter().map(|d| store.insert_webhook_event(d)))
    );

    assert!(bad_result.is_err(), "the bad delivery is refused");
    assert!(store.get_webhook_event(t, bad.id).await?.is_none());
    let results: Vec<(Uuid, bool)> = good_results.into_iter().collect::<Result<_, _>>()?;
    for (good, (id, duplicate)) in goods[1..20].iter().zip(&results[1..20]) {
        assert_eq!(
            (*id, *duplicate),
            (good.id, false),
            "{} is stored",
            good.dedupe_key
        );
        assert!(store.get_webhook_event(t, good.id).await?.is_some());
    }
    // Of the two copies of `good-0`, one is stored and the other names it.
    let mut copies = [(goods[0].id, results[0]), (goods[20].id, results[20])];
    copies.sort_by_key(|(_, (_, duplicate))| *duplicate);
    let [(first, stored), (_, redelivered)] = copies;
    assert_eq!(stored, (first, false));
    assert_eq!(redelivered, (first, true));
    Ok(())
}
