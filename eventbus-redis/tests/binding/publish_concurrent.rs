//! Concurrent publishes share pipelines: every event arrives once, in each
//! caller's order, and one caller's failure is not another's.

use std::time::Duration;

use crate::common::*;
use eventbus_core::transport::Topics;
use eventbus_redis::StartFrom;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_publishers_each_see_every_event_arrive_once_in_order() {
    let server = server();
    let client = client(&server.url()).await;
    let mut opts = fast_opts();
    opts.start = StartFrom::Earliest;
    let consumer = client
        .consumer("g", Topics::Types(vec!["tick".into()]), opts)
        .await
        .unwrap();
    const TASKS: u64 = 32;
    const EACH: u64 = 60;
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            if t % 4 == 0 {
                // Some callers publish batches among the single publishes.
                for i in (0..EACH).step_by(3) {
                    let ps: Vec<Vec<u8>> = (i..i + 3)
                        .map(|i| event("tick", json!({ "task": t, "i": i })))
                        .collect();
                    let batch: Vec<(&str, &[u8])> = ps.iter().map(|p| ("tick", &p[..])).collect();
                    client.publish(&batch).await.unwrap();
                }
                return;
            }
            for i in 0..EACH {
                let p = event("tick", json!({ "task": t, "i": i }));
                client.publish_one("tick", &p).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let entries = read_n(&consumer, (TASKS * EACH) as usize, Duration::from_secs(20)).await;
    assert_eq!(entries.len() as u64, TASKS * EACH);
    let mut next = vec![0u64; TASKS as usize];
    for e in &entries {
        let d = data(e);
        let (t, i) = (d["task"].as_u64().unwrap(), d["i"].as_u64().unwrap());
        assert_eq!(
            next[t as usize], i,
            "task {t}: events in publish order, once"
        );
        next[t as usize] += 1;
    }
    assert!(next.iter().all(|&n| n == EACH));
    assert_eq!(
        server.cmd(&["XLEN", "{eventbus}:stream:tick"]).unwrap(),
        (TASKS * EACH).to_string()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_publish_does_not_fail_the_others_sharing_its_pipeline() {
    let server = server();
    // Not a stream: XADD to it fails with WRONGTYPE.
    server
        .cmd(&["SET", "{eventbus}:stream:broken", "not a stream"])
        .unwrap();
    let client = client(&server.url()).await;
    let good = event("fine", json!({}));
    let bad = event("broken", json!({}));
    for _round in 0..20 {
        let mut tasks = Vec::new();
        for t in 0..16 {
            let (client, good, bad) = (client.clone(), good.clone(), bad.clone());
            tasks.push(tokio::spawn(async move {
                if t == 7 {
                    let err = client.publish_one("broken", &bad).await.unwrap_err();
                    assert!(err.to_string().contains("WRONGTYPE"), "{err}");
                } else {
                    client.publish_one("fine", &good).await.unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    }
    assert_eq!(
        server.cmd(&["XLEN", "{eventbus}:stream:fine"]).unwrap(),
        (20 * 15).to_string()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pubsub_publishes_all_reach_a_subscriber() {
    let server = server();
    let client = client(&with(&server.url(), "mode=pubsub")).await;
    let consumer = client
        .consumer("g", Topics::Types(vec!["ping".into()]), fast_opts())
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for t in 0..16u64 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..50u64 {
                let p = event("ping", json!({ "task": t, "i": i }));
                client.publish_one("ping", &p).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let entries = read_n(&consumer, 16 * 50, Duration::from_secs(10)).await;
    assert_eq!(entries.len(), 16 * 50);
    assert_eq!(consumer.stats().dropped, 0);
}
