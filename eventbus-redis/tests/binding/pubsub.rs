//! Pub/sub mode: CloudEvents and legacy payloads, raw PUBLISH interop,
//! counted drops, retries and the DLQ.

use std::time::Duration;

use crate::common::*;
use eventbus_core::transport::{DeadLetterInfo, Topics};
use eventbus_redis::ConsumerOptions;
use eventbus_redis::cloudevents::AttributesReader;
use serde_json::json;

fn only(t: &[&str]) -> Topics {
    Topics::Types(t.iter().map(|s| s.to_string()).collect())
}

#[tokio::test]
async fn cloudevents_on_the_type_channel() {
    let server = server();
    let client = client(&with(&server.url(), "mode=pubsub")).await;
    let consumer = client
        .consumer(
            "g",
            only(&["review_created", "review_approved"]),
            fast_opts(),
        )
        .await
        .unwrap();
    let p = event("review_created", json!({"id": "1"}));
    client.publish_one("review_created", &p).await.unwrap();
    let got = read_n(&consumer, 1, Duration::from_secs(5)).await;
    assert_eq!(&*got[0].event_type, "review_created");
    assert_eq!(&got[0].payload[..], &p[..]);
    assert_eq!(got[0].attempt, 1);
    consumer.ack(&[got[0].id]).await.unwrap();
    assert_eq!(consumer.stats().delivered, 1);
    assert_eq!(consumer.stats().dropped, 0);
}

#[tokio::test]
async fn raw_legacy_publish_arrives_wrapped() {
    let server = server();
    let client = client(&with(&server.url(), "mode=pubsub")).await;
    let consumer = client
        .consumer("g", only(&["review_approved"]), fast_opts())
        .await
        .unwrap();
    // What an existing Python service does.
    let n = server
        .cmd(&["PUBLISH", "review_approved", r#"{"id": "5b0c"}"#])
        .unwrap();
    assert_eq!(n, "1");
    let got = read_n(&consumer, 1, Duration::from_secs(5)).await;
    let e = eventbus_redis::codec::decode_event(&got[0].payload).unwrap();
    assert_eq!(e.ty(), "review_approved");
    assert_eq!(e.source().as_str(), "/redis/review_approved");
    assert_eq!(e.datacontenttype(), Some("application/json"));
    assert!(e.time().is_some());
    assert!(!e.id().is_empty());
    assert_eq!(data(&got[0]), json!({"id": "5b0c"}));
}

#[tokio::test]
async fn legacy_codec_publishes_bare_data() {
    let server = server();
    let legacy = client(&with(&server.url(), "mode=pubsub&codec=legacy")).await;
    // A plain subscriber sees exactly the bare JSON.
    let plain = client(&with(&server.url(), "mode=pubsub")).await;
    let consumer = plain
        .consumer("g", only(&["review_created"]), fast_opts())
        .await
        .unwrap();
    let raw = redis::Client::open(server.url()).unwrap();
    let mut raw = raw.get_async_pubsub().await.unwrap();
    raw.subscribe("review_created").await.unwrap();
    legacy
        .publish_one(
            "review_created",
            &event("review_created", json!({"id": "x"})),
        )
        .await
        .unwrap();
    {
        use futures::StreamExt;
        let msg = raw.on_message().next().await.unwrap();
        assert_eq!(
            msg.get_payload_bytes(),
            br#"{"id":"x"}"#,
            "bare data on the wire"
        );
    }
    let got = read_n(&consumer, 1, Duration::from_secs(5)).await;
    // Wrapped on arrival, so data is the bare payload that was on the wire.
    assert_eq!(data(&got[0]), json!({"id": "x"}));
    let e = eventbus_redis::codec::decode_event(&got[0].payload).unwrap();
    assert_eq!(e.source().as_str(), "/redis/review_created");
}

#[tokio::test]
async fn pattern_subscription_for_all_types_with_prefix() {
    let server = server();
    let client = client(&with(&server.url(), "mode=pubsub&prefix=svc")).await;
    let all = client
        .consumer("audit", Topics::All, fast_opts())
        .await
        .unwrap();
    client
        .publish_one("a", &event("a", json!(1)))
        .await
        .unwrap();
    client
        .publish_one("b", &event("b", json!(2)))
        .await
        .unwrap();
    server.cmd(&["PUBLISH", "other:c", "{}"]).unwrap();
    let got = read_n(&all, 2, Duration::from_secs(5)).await;
    let types: Vec<&str> = got.iter().map(|e| &*e.event_type).collect();
    assert_eq!(types, ["a", "b"]);
    assert_eq!(server.cmd(&["PUBSUB", "NUMPAT"]).unwrap(), "1");
    assert!(
        read_for(&all, Duration::from_millis(300)).await.is_empty(),
        "other prefixes are not ours"
    );
}

#[tokio::test]
async fn drops_are_counted_never_silent() {
    let server = server();
    let client = client(&with(&server.url(), "mode=pubsub")).await;
    let mut opts = ConsumerOptions::default();
    opts.pubsub_buffer = 10;
    opts.block = Duration::from_millis(200);
    let consumer = client.consumer("g", only(&["t"]), opts).await.unwrap();
    let payloads: Vec<Vec<u8>> = (0..100).map(|i| event("t", json!(i))).collect();
    let batch: Vec<(&str, &[u8])> = payloads.iter().map(|p| ("t", p.as_slice())).collect();
    client.publish(&batch).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = read_for(&consumer, Duration::from_millis(500)).await;
    let stats = consumer.stats();
    assert_eq!(got.len(), 10);
    assert_eq!(stats.dropped, 90, "{stats:?}");
    assert_eq!(
        got.len() as u64 + stats.dropped,
        100,
        "every message accounted for"
    );
}

#[tokio::test]
async fn retry_later_and_dead_letter_in_pubsub_mode() {
    let server = server();
    let client = client(&with(&server.url(), "mode=pubsub")).await;
    let consumer = client
        .consumer("g", only(&["t"]), fast_opts())
        .await
        .unwrap();
    client
        .publish_one("t", &event("t", json!(1)))
        .await
        .unwrap();
    let e = read_n(&consumer, 1, Duration::from_secs(5)).await.remove(0);
    consumer
        .retry_later(e.id, Duration::from_millis(100))
        .await
        .unwrap();
    let again = read_n(&consumer, 1, Duration::from_secs(5)).await.remove(0);
    assert_eq!(again.attempt, 2);
    assert_eq!(again.payload, e.payload);
    let id = consumer
        .dead_letter(&again, &DeadLetterInfo::new("h", 2, "nope"))
        .await
        .unwrap();
    let dl = client.dead_letters(10).await.unwrap();
    assert_eq!(dl.len(), 1);
    assert_eq!(dl[0].origin.as_deref(), Some("t"));
    assert_eq!(dl[0].group, "g");
    // Replay publishes on the channel again.
    assert_eq!(client.replay(&id).await.unwrap().as_deref(), Some("g"));
    let replayed = read_n(&consumer, 1, Duration::from_secs(5)).await.remove(0);
    assert_eq!(replayed.payload, e.payload);
    assert_eq!(client.dead_letter_count().await.unwrap(), 0);
}

#[tokio::test]
async fn subscriber_reconnects_after_a_redis_restart() {
    let mut server = server();
    let client = client(&with(&server.url(), "mode=pubsub")).await;
    let consumer = client
        .consumer("g", only(&["t"]), fast_opts())
        .await
        .unwrap();
    server.restart().unwrap();
    // Publish until the resubscribed consumer gets one (at-most-once: some
    // published before it resubscribed are lost, and that is by design).
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        assert!(std::time::Instant::now() < deadline, "never resubscribed");
        client
            .publish_one("t", &event("t", json!("after")))
            .await
            .unwrap();
        if !consumer.read(10).await.unwrap().is_empty() {
            break;
        }
    }
    assert!(consumer.stats().reconnects >= 1);
}
