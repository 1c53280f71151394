//! Streams mode: publish, consume, ack; groups; global consumers; legacy codec.

use std::collections::HashSet;
use std::time::Duration;

use crate::common::*;
use eventbus_core::transport::Topics;
use eventbus_redis::StartFrom;
use serde_json::json;

fn only(types: &[&str]) -> Topics {
    Topics::Types(types.iter().map(|t| t.to_string()).collect())
}

#[tokio::test]
async fn publish_consume_ack() {
    let server = server();
    let client = client(&server.url()).await;
    let consumer = client
        .consumer("reviews.on_created", only(&["review_created"]), fast_opts())
        .await
        .unwrap();
    let payloads: Vec<Vec<u8>> = (0..10)
        .map(|i| event("review_created", json!({ "id": i })))
        .collect();
    let batch: Vec<(&str, &[u8])> = payloads
        .iter()
        .map(|p| ("review_created", p.as_slice()))
        .collect();
    client.publish(&batch).await.unwrap();

    let entries = read_n(&consumer, 10, Duration::from_secs(5)).await;
    let ids: Vec<i64> = entries
        .iter()
        .map(|e| data(e)["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, (0..10).collect::<Vec<_>>(), "in publish order");
    for e in &entries {
        assert_eq!(&*e.event_type, "review_created");
        assert_eq!(e.attempt, 1);
        // What we hand out is exactly what was published.
        assert!(payloads.iter().any(|p| p[..] == e.payload[..]));
        let ce = eventbus_redis::codec::decode_event(&e.payload).unwrap();
        use eventbus_redis::cloudevents::AttributesReader;
        assert_eq!(ce.ty(), "review_created");
    }
    let pending = server
        .cmd(&[
            "XPENDING",
            "{eventbus}:stream:review_created",
            "reviews.on_created",
        ])
        .unwrap();
    assert!(pending.starts_with("10\n"), "{pending}");
    let ids: Vec<_> = entries.iter().map(|e| e.id).collect();
    consumer.ack(&ids).await.unwrap();
    let pending = server
        .cmd(&[
            "XPENDING",
            "{eventbus}:stream:review_created",
            "reviews.on_created",
        ])
        .unwrap();
    assert!(pending.starts_with("0\n"), "{pending}");
    // The wire: one field, the structured CloudEvent.
    let raw = server
        .cmd(&[
            "XRANGE",
            "{eventbus}:stream:review_created",
            "-",
            "+",
            "COUNT",
            "1",
        ])
        .unwrap();
    let lines: Vec<&str> = raw.lines().collect();
    assert_eq!(lines[1], "cloud_event");
    assert_eq!(lines[2].as_bytes(), &payloads[0][..]);
    assert_eq!(
        server.cmd(&["SMEMBERS", "{eventbus}:types"]).unwrap(),
        "review_created"
    );
}

#[tokio::test]
async fn competing_consumers_share_a_group_and_groups_each_get_all() {
    let server = server();
    let client = client(&server.url()).await;
    let a1 = client
        .consumer("g-a", only(&["t"]), fast_opts())
        .await
        .unwrap();
    let a2 = client
        .consumer("g-a", only(&["t"]), fast_opts())
        .await
        .unwrap();
    let b = client
        .consumer("g-b", only(&["t"]), fast_opts())
        .await
        .unwrap();
    assert_ne!(a1.name(), a2.name());

    let n = 200;
    let payloads: Vec<Vec<u8>> = (0..n).map(|i| event("t", json!({ "i": i }))).collect();
    // Many publishes in flight at once on the shared connection.
    let tasks: Vec<_> = payloads
        .iter()
        .cloned()
        .map(|p| {
            let c = client.clone();
            tokio::spawn(async move { c.publish_one("t", &p).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }

    let read_some = |c: eventbus_redis::Consumer| async move {
        let mut got = Vec::new();
        loop {
            let batch = c.read(7).await.unwrap();
            if batch.is_empty() {
                break;
            }
            let ids: Vec<_> = batch.iter().map(|e| e.id).collect();
            c.ack(&ids).await.unwrap();
            got.extend(batch.into_iter().map(|e| data(&e)["i"].as_i64().unwrap()));
        }
        got
    };
    let (x, y, z) = tokio::join!(read_some(a1), read_some(a2), read_some(b));
    let group_a: HashSet<i64> = x.iter().chain(&y).copied().collect();
    assert_eq!(
        x.len() + y.len(),
        n as usize,
        "each entry once within a group"
    );
    assert_eq!(group_a.len(), n as usize);
    assert!(
        !x.is_empty() && !y.is_empty(),
        "both competing consumers got work: {} / {}",
        x.len(),
        y.len()
    );
    assert_eq!(z.len(), n as usize, "the other group gets every entry");
}

#[tokio::test]
async fn idle_consumer_wakes_when_an_entry_arrives() {
    let server = server();
    let client = client(&server.url()).await;
    let mut opts = fast_opts();
    opts.block = Duration::from_secs(30);
    opts.retry_poll = Duration::from_secs(60);
    opts.claim_interval = Duration::from_secs(60);
    let consumer = client.consumer("g", only(&["t"]), opts).await.unwrap();
    // First read runs housekeeping; make sure the reader is blocked afterwards.
    let reader = tokio::spawn(async move {
        loop {
            let got = consumer.read(10).await.unwrap();
            if !got.is_empty() {
                return got;
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    client
        .publish_one("t", &event("t", json!(1)))
        .await
        .unwrap();
    // Far less than the 30 s block: the blocked XREADGROUP returned on arrival.
    let got = tokio::time::timeout(Duration::from_secs(10), reader)
        .await
        .expect("woke on arrival")
        .unwrap();
    assert_eq!(got.len(), 1);
}

#[tokio::test]
async fn blocking_reads_do_not_stall_the_shared_connection() {
    let server = server();
    let client = client(&server.url()).await;
    let mut opts = fast_opts();
    opts.block = Duration::from_secs(30);
    opts.retry_poll = Duration::from_secs(60);
    opts.claim_interval = Duration::from_secs(60);
    let idle = client
        .consumer("idle", only(&["nothing"]), opts)
        .await
        .unwrap();
    let blocked = tokio::spawn(async move { idle.read(1).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    for i in 0..20 {
        tokio::time::timeout(
            Duration::from_secs(5),
            client.publish_one("t", &event("t", json!(i))),
        )
        .await
        .expect("publish is not stuck behind the blocked read")
        .unwrap();
    }
    blocked.abort();
}

#[tokio::test]
async fn global_consumer_sees_types_first_published_later() {
    let server = server();
    let client = client(&server.url()).await;
    client
        .publish_one("early", &event("early", json!(0)))
        .await
        .unwrap();
    let mut opts = fast_opts();
    opts.start = StartFrom::Earliest;
    let all = client.consumer("audit", Topics::All, opts).await.unwrap();
    let got = read_n(&all, 1, Duration::from_secs(5)).await;
    assert_eq!(&*got[0].event_type, "early");

    // A type nobody had published when the consumer started.
    client
        .publish(&[
            ("brand_new", &event("brand_new", json!(1))),
            ("brand_new", &event("brand_new", json!(2))),
            ("early", &event("early", json!(3))),
        ])
        .await
        .unwrap();
    let got = read_n(&all, 3, Duration::from_secs(5)).await;
    let mut types: Vec<&str> = got.iter().map(|e| &*e.event_type).collect();
    types.sort();
    assert_eq!(types, ["brand_new", "brand_new", "early"]);
}

#[tokio::test]
async fn legacy_codec_writes_bare_data_and_reads_it_wrapped() {
    let server = server();
    let legacy = client(&with(&server.url(), "codec=legacy")).await;
    let consumer = legacy
        .consumer("g", only(&["review_created"]), fast_opts())
        .await
        .unwrap();
    legacy
        .publish_one(
            "review_created",
            &event("review_created", json!({"id": "abc"})),
        )
        .await
        .unwrap();
    // Bare JSON from another producer, straight into the stream.
    server
        .cmd(&[
            "XADD",
            "{eventbus}:stream:review_created",
            "*",
            "data",
            r#"{"id": "raw"}"#,
        ])
        .unwrap();
    let raw = server
        .cmd(&[
            "XRANGE",
            "{eventbus}:stream:review_created",
            "-",
            "+",
            "COUNT",
            "1",
        ])
        .unwrap();
    assert_eq!(
        raw.lines().collect::<Vec<_>>()[1..],
        ["data", r#"{"id":"abc"}"#]
    );

    let got = read_n(&consumer, 2, Duration::from_secs(5)).await;
    assert_eq!(data(&got[0]), json!({"id": "abc"}));
    assert_eq!(data(&got[1]), json!({"id": "raw"}));
    let ce = eventbus_redis::codec::decode_event(&got[1].payload).unwrap();
    use eventbus_redis::cloudevents::AttributesReader;
    assert_eq!(ce.ty(), "review_created");
    assert_eq!(ce.source().as_str(), "/redis/review_created");
}

#[tokio::test]
async fn malformed_entries_are_handed_out_not_dropped() {
    let server = server();
    let client = client(&server.url()).await;
    let consumer = client
        .consumer("g", only(&["t"]), fast_opts())
        .await
        .unwrap();
    server
        .cmd(&[
            "XADD",
            "{eventbus}:stream:t",
            "*",
            "cloud_event",
            "not json",
        ])
        .unwrap();
    server
        .cmd(&["XADD", "{eventbus}:stream:t", "*", "something", "else"])
        .unwrap();
    let got = read_n(&consumer, 2, Duration::from_secs(5)).await;
    assert_eq!(&got[0].payload[..], b"not json");
    assert!(got[1].payload.is_empty());
    assert!(eventbus_redis::codec::decode_event(&got[0].payload).is_err());
}

#[tokio::test]
async fn names_are_validated() {
    let server = server();
    let client = client(&server.url()).await;
    let err = client.publish_one("bad type", b"{}").await.unwrap_err();
    assert!(
        err.to_string().contains("invalid event type `bad type`"),
        "{err}"
    );
    let err = client
        .consumer("", only(&["t"]), fast_opts())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("invalid group"), "{err}");
}
