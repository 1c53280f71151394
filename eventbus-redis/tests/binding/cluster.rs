//! The same code on a 3-node Redis Cluster: Streams, retries, the DLQ,
//! schedules, ticks, trimming and pub/sub.

use std::time::{Duration, SystemTime};

use crate::common::*;
use eventbus_core::transport::{DeadLetterInfo, Topics};
use serde_json::json;
use testkit::RedisCluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_schedule_and_dlq_on_a_cluster() {
    let cluster = RedisCluster::start(3).unwrap();
    let url = with(&cluster.url(), "maxlen=5");
    let client = client(&url).await;
    assert!(client.config().is_cluster());

    let a = client
        .consumer(
            "g",
            Topics::Types(vec!["a".into(), "b".into()]),
            fast_opts(),
        )
        .await
        .unwrap();
    let all = client
        .consumer("audit", Topics::All, fast_opts())
        .await
        .unwrap();
    let pa = event("a", json!(1));
    let pb = event("b", json!(2));
    client.publish(&[("a", &pa), ("b", &pb)]).await.unwrap();
    let got = read_n(&a, 2, Duration::from_secs(10)).await;
    let mut types: Vec<&str> = got.iter().map(|e| &*e.event_type).collect();
    types.sort();
    assert_eq!(types, ["a", "b"]);
    let seen = read_n(&all, 2, Duration::from_secs(10)).await;
    all.ack(&seen.iter().map(|e| e.id).collect::<Vec<_>>())
        .await
        .unwrap();

    // Retry with a bumped delivery count (Lua across the group's keys).
    let first = got.iter().find(|e| &*e.event_type == "a").unwrap().clone();
    let other = got.iter().find(|e| &*e.event_type == "b").unwrap().clone();
    a.ack(&[other.id]).await.unwrap();
    a.retry_later(first.id, Duration::from_millis(100))
        .await
        .unwrap();
    let again = read_n(&a, 1, Duration::from_secs(10)).await.remove(0);
    assert_eq!(again.attempt, 2);

    // Dead-letter atomically, list, replay to the group.
    let id = a
        .dead_letter(
            &again,
            &DeadLetterInfo::new("h", 2, "fails on a cluster too"),
        )
        .await
        .unwrap();
    let dl = client.dead_letters(10).await.unwrap();
    assert_eq!(dl.len(), 1);
    assert_eq!(dl[0].error, "fails on a cluster too");
    assert_eq!(client.replay(&id).await.unwrap().as_deref(), Some("g"));
    let replayed = read_n(&a, 1, Duration::from_secs(10)).await.remove(0);
    assert_eq!(replayed.payload, first.payload);
    a.ack(&[replayed.id]).await.unwrap();

    // Durable schedule, moved by the Lua mover.
    client
        .publish_at("a", &event("a", json!("scheduled")), SystemTime::now())
        .await
        .unwrap();
    assert_eq!(client.move_due(10).await.unwrap().0, 1);
    let s = read_n(&a, 1, Duration::from_secs(10)).await.remove(0);
    assert_eq!(data(&s), json!("scheduled"));
    a.ack(&[s.id]).await.unwrap();

    // Ticks.
    let other_client = crate::common::client(&url).await;
    assert!(client.claim_tick("cron", 10).await.unwrap());
    assert!(!other_client.claim_tick("cron", 10).await.unwrap());

    // Trim (XINFO/XPENDING/XTRIM in one script).
    for i in 0..10 {
        client
            .publish_one("b", &event("b", json!(i)))
            .await
            .unwrap();
    }
    let bs = read_n(&a, 10, Duration::from_secs(10)).await;
    a.ack(&bs.iter().map(|e| e.id).collect::<Vec<_>>())
        .await
        .unwrap();
    let audit = read_for(&all, Duration::from_millis(500)).await;
    all.ack(&audit.iter().map(|e| e.id).collect::<Vec<_>>())
        .await
        .unwrap();
    let reports = client.trim().await.unwrap();
    let b = reports
        .iter()
        .find(|r| r.stream == "{eventbus}:stream:b")
        .unwrap();
    assert_eq!(b.len_before, 11);
    assert_eq!(b.trimmed, 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pubsub_on_a_cluster() {
    let cluster = RedisCluster::start(3).unwrap();
    let client = client(&with(&cluster.url(), "mode=pubsub")).await;
    let sub = client
        .consumer("g", Topics::Types(vec!["t".into()]), fast_opts())
        .await
        .unwrap();
    client
        .publish_one("t", &event("t", json!(1)))
        .await
        .unwrap();
    // A legacy service publishing on another node reaches us too.
    cluster.nodes()[2]
        .cmd(&["PUBLISH", "t", r#"{"id": 2}"#])
        .unwrap();
    let got = read_n(&sub, 2, Duration::from_secs(10)).await;
    assert_eq!(data(&got[0]), json!(1));
    assert_eq!(data(&got[1]), json!({"id": 2}));
}
