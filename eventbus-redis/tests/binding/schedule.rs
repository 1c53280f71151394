//! Durable schedules: the mover script, many movers, recurring ticks.

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use crate::common::*;
use eventbus_core::transport::Topics;
use eventbus_redis::SchedulerOptions;
use serde_json::json;

fn only(t: &str) -> Topics {
    Topics::Types(vec![t.to_owned()])
}

#[tokio::test]
async fn due_entries_move_and_future_ones_wait() {
    let server = server();
    let client = client(&server.url()).await;
    let consumer = client
        .consumer("g", only("reminder"), fast_opts())
        .await
        .unwrap();
    let past = event("reminder", json!("past"));
    let future = event("reminder", json!("future"));
    client
        .publish_at(
            "reminder",
            &past,
            SystemTime::now() - Duration::from_secs(1),
        )
        .await
        .unwrap();
    client
        .publish_after("reminder", &future, Duration::from_secs(3600))
        .await
        .unwrap();
    assert_eq!(client.scheduled_count().await.unwrap(), 2);
    assert!(
        read_for(&consumer, Duration::from_millis(300))
            .await
            .is_empty(),
        "nothing moves by itself"
    );

    let (moved, next) = client.move_due(100).await.unwrap();
    assert_eq!(moved, 1);
    let next = next.expect("the future one is next");
    assert!(next > SystemTime::now() + Duration::from_secs(3500));
    let got = read_n(&consumer, 1, Duration::from_secs(5)).await;
    assert_eq!(&got[0].payload[..], &past[..], "moved byte for byte");
    assert_eq!(client.scheduled_count().await.unwrap(), 1);
    assert_eq!(client.move_due(100).await.unwrap().0, 0);
}

#[tokio::test]
async fn many_movers_move_each_entry_once() {
    let server = server();
    let client = client(&server.url()).await;
    let consumer = client
        .consumer("g", only("job"), fast_opts())
        .await
        .unwrap();
    let n = 300;
    let now = SystemTime::now();
    for i in 0..n {
        client
            .publish_at(
                "job",
                &event("job", json!(i)),
                now + Duration::from_millis(i % 300),
            )
            .await
            .unwrap();
    }
    // Eight instances, each with its own connection, racing to move.
    let mut movers = Vec::new();
    for _ in 0..8 {
        let c = crate::common::client(&server.url()).await;
        movers.push(c.spawn_scheduler(SchedulerOptions::default()));
    }
    let got = read_n(&consumer, n as usize, Duration::from_secs(10)).await;
    let distinct: HashSet<i64> = got.iter().map(|e| data(e).as_i64().unwrap()).collect();
    assert_eq!(distinct.len(), n as usize);
    assert!(
        read_for(&consumer, Duration::from_millis(500))
            .await
            .is_empty(),
        "no duplicates"
    );
    assert_eq!(client.scheduled_count().await.unwrap(), 0);
    drop(movers);
}

#[tokio::test]
async fn scheduler_wakes_at_the_due_time_and_survives_publisher_restart() {
    let server = server();
    let consumer_client = client(&server.url()).await;
    let consumer = consumer_client
        .consumer("g", only("later"), fast_opts())
        .await
        .unwrap();
    {
        // The publisher schedules and goes away.
        let publisher = client(&server.url()).await;
        publisher
            .publish_after(
                "later",
                &event("later", json!(1)),
                Duration::from_millis(400),
            )
            .await
            .unwrap();
    }
    let mut opts = SchedulerOptions::default();
    opts.poll_interval = Duration::from_millis(100);
    let _scheduler = consumer_client.spawn_scheduler(opts);
    let got = read_n(&consumer, 1, Duration::from_secs(5)).await;
    assert_eq!(data(&got[0]), json!(1));
}

#[tokio::test]
async fn schedule_members_are_opaque_and_binary_safe() {
    let server = server();
    let client = client(&server.url()).await;
    let consumer = client.consumer("g", only("x"), fast_opts()).await.unwrap();
    // Same payload twice at the same time: still two events.
    let p = event("x", json!({"text": "a:b\nc 12:34 \u{e9}"}));
    let at = SystemTime::now();
    client.publish_at("x", &p, at).await.unwrap();
    client.publish_at("x", &p, at).await.unwrap();
    client.move_due(10).await.unwrap();
    let got = read_n(&consumer, 2, Duration::from_secs(5)).await;
    assert!(got.iter().all(|e| e.payload[..] == p[..]));
}

#[tokio::test]
async fn claim_tick_fires_once_per_tick_across_instances() {
    let server = server();
    let a = client(&server.url()).await;
    let b = client(&server.url()).await;
    let mut wins = 0;
    for tick in [1_000u64, 2_000, 3_000] {
        let (x, y) = tokio::join!(a.claim_tick("nightly", tick), b.claim_tick("nightly", tick));
        let (x, y) = (x.unwrap(), y.unwrap());
        assert!(x ^ y, "exactly one instance wins tick {tick}");
        wins += 1;
    }
    assert_eq!(wins, 3);
    // An old tick cannot fire again (a late or restarted instance).
    assert!(!a.claim_tick("nightly", 2_000).await.unwrap());
    // Schedules are independent.
    assert!(b.claim_tick("hourly", 2_000).await.unwrap());
    assert_eq!(
        server.cmd(&["GET", "{eventbus}:tick:nightly"]).unwrap(),
        "3000"
    );
}

#[tokio::test]
async fn pubsub_mode_schedules_publish_on_the_channel() {
    let server = server();
    let client = client(&with(&server.url(), "mode=pubsub")).await;
    let consumer = client
        .consumer("g", only("ping"), fast_opts())
        .await
        .unwrap();
    client
        .publish_at("ping", &event("ping", json!(1)), SystemTime::now())
        .await
        .unwrap();
    client.move_due(10).await.unwrap();
    let got = read_n(&consumer, 1, Duration::from_secs(5)).await;
    assert_eq!(data(&got[0]), json!(1));
}
