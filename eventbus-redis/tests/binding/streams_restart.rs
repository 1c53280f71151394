//! Redis restarts (append-only file on): nothing published before is lost,
//! pending entries are not forgotten, publishers and consumers reconnect.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use crate::common::*;
use eventbus_core::transport::Topics;
use serde_json::json;
use testkit::{RedisOptions, RedisServer};

#[tokio::test]
async fn restart_keeps_published_and_pending_entries() {
    let mut server = RedisServer::start_with(RedisOptions {
        appendonly: true,
        ..Default::default()
    })
    .unwrap();
    let client = client(&server.url()).await;
    let consumer = client
        .consumer("g", Topics::Types(vec!["t".into()]), fast_opts())
        .await
        .unwrap();
    for i in 0..50 {
        client
            .publish_one("t", &event("t", json!(i)))
            .await
            .unwrap();
    }
    let first = read_n(&consumer, 20, Duration::from_secs(5)).await;
    let (acked, in_flight) = first.split_at(10);
    consumer
        .ack(&acked.iter().map(|e| e.id).collect::<Vec<_>>())
        .await
        .unwrap();

    server.restart().unwrap();

    // Reading goes on: the 30 never read, then new ones.
    let mut handled: HashSet<i64> = acked.iter().map(|e| data(e).as_i64().unwrap()).collect();
    for i in 50..60 {
        client
            .publish_one("t", &event("t", json!(i)))
            .await
            .unwrap();
    }
    let rest = read_n(&consumer, 40, Duration::from_secs(20)).await;
    assert!(consumer.stats().reconnects >= 1, "{:?}", consumer.stats());
    // The ones in flight across the restart are still pending and can be acked.
    let mut ids: Vec<_> = in_flight.iter().map(|e| e.id).collect();
    ids.extend(rest.iter().map(|e| e.id));
    consumer.ack(&ids).await.unwrap();
    handled.extend(
        in_flight
            .iter()
            .chain(&rest)
            .map(|e| data(e).as_i64().unwrap()),
    );
    assert_eq!(handled.len(), 60, "every event handled once");
    assert_eq!(pending(&server, "{eventbus}:stream:t", "g"), 0);
}

#[tokio::test]
async fn publish_waits_for_redis_to_come_back() {
    let mut server = RedisServer::start_with(RedisOptions {
        appendonly: true,
        ..Default::default()
    })
    .unwrap();
    let client = client(&server.url()).await;
    let consumer = client
        .consumer("g", Topics::Types(vec!["t".into()]), fast_opts())
        .await
        .unwrap();
    server.stop();
    let started = Instant::now();
    let publisher = {
        let client = client.clone();
        tokio::spawn(async move { client.publish_one("t", &event("t", json!("during"))).await })
    };
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(
        !publisher.is_finished(),
        "still retrying while Redis is down"
    );
    server.start_again().unwrap();
    publisher
        .await
        .unwrap()
        .expect("published once Redis was back");
    assert!(started.elapsed() >= Duration::from_millis(800));
    let got = read_n(&consumer, 1, Duration::from_secs(20)).await;
    assert_eq!(data(&got[0]), json!("during"));
}

#[tokio::test]
async fn consumer_recreates_its_group_when_redis_lost_everything() {
    let server = server();
    let client = client(&server.url()).await;
    let consumer = client
        .consumer("g", Topics::Types(vec!["t".into()]), fast_opts())
        .await
        .unwrap();
    server.cmd(&["FLUSHALL"]).unwrap();
    client
        .publish_one("t", &event("t", json!(1)))
        .await
        .unwrap();
    let got = read_n(&consumer, 1, Duration::from_secs(5)).await;
    assert_eq!(data(&got[0]), json!(1));
}
