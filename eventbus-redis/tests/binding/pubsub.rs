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

/// A raw subscriber (what any other service sees) on `channel`.
async fn raw_subscriber(server: &testkit::RedisServer, channel: &str) -> redis::aio::PubSub {
    let raw = redis::Client::open(server.url()).unwrap();
    let mut raw = raw.get_async_pubsub().await.unwrap();
    raw.subscribe(channel).await.unwrap();
    raw
}

/// The next message a raw subscriber gets, as bytes.
async fn next_raw(raw: &mut redis::aio::PubSub) -> Vec<u8> {
    use futures::StreamExt;
    let msg = tokio::time::timeout(Duration::from_secs(5), raw.on_message().next())
        .await
        .expect("a message within 5 s")
        .expect("the subscription is open");
    msg.get_payload_bytes().to_vec()
}

#[tokio::test]
async fn a_consumer_is_live_when_it_is_returned() {
    // `SUBSCRIBE` / `PSUBSCRIBE` is confirmed before `consumer` returns: a
    // message published at once is never missed.
    let server = server();
    let client = client(&with(&server.url(), "mode=pubsub&prefix=live")).await;
    for round in 0..50 {
        let topics = if round % 2 == 0 {
            only(&["t"])
        } else {
            Topics::All
        };
        let consumer = client.consumer("g", topics, fast_opts()).await.unwrap();
        client
            .publish_one("t", &event("t", json!(round)))
            .await
            .unwrap();
        let got = read_n(&consumer, 1, Duration::from_secs(5)).await;
        assert_eq!(data(&got[0]), json!(round), "round {round}");
    }
}

#[tokio::test]
async fn pubsub_alone_keeps_a_bare_channel_bare() {
    // `?mode=pubsub` alone: the codec is `auto`, each channel keeps the
    // format it carries.
    let server = server();
    let client = client(&with(&server.url(), "mode=pubsub")).await;
    assert_eq!(client.config().codec(), eventbus_redis::Codec::Auto);
    let consumer = client
        .consumer("g", only(&["review_created", "record_create"]), fast_opts())
        .await
        .unwrap();
    let mut raw = raw_subscriber(&server, "review_created").await;
    let mut raw_record = raw_subscriber(&server, "record_create").await;
    // Another service publishes bare JSON on review_created.
    server
        .cmd(&["PUBLISH", "review_created", r#"{"id": "from-django"}"#])
        .unwrap();
    assert_eq!(next_raw(&mut raw).await, br#"{"id": "from-django"}"#);
    let got = read_n(&consumer, 1, Duration::from_secs(5)).await;
    assert_eq!(data(&got[0]), json!({"id": "from-django"}));

    // Our CloudEvent goes out on it as bare data, as the others publish it.
    let ours = event("review_created", json!({"id": "from-rust"}));
    client.publish_one("review_created", &ours).await.unwrap();
    assert_eq!(next_raw(&mut raw).await, br#"{"id":"from-rust"}"#);
    // Scheduled ones too.
    client
        .publish_at("review_created", &ours, std::time::SystemTime::now())
        .await
        .unwrap();
    client.move_due(10).await.unwrap();
    assert_eq!(next_raw(&mut raw).await, br#"{"id":"from-rust"}"#);

    // A channel that carried no bare JSON gets CloudEvents, as before.
    let record = event("record_create", json!({"id": "r"}));
    client.publish_one("record_create", &record).await.unwrap();
    assert_eq!(next_raw(&mut raw_record).await, record);
}

#[tokio::test]
async fn the_codec_can_be_chosen_per_url_and_per_type() {
    let server = server();
    let mut raw = raw_subscriber(&server, "review_created").await;
    let mut raw_other = raw_subscriber(&server, "other").await;
    let ours = event("review_created", json!({"id": "x"}));
    let other = event("other", json!({"id": "o"}));

    // A type this service only publishes to, that Django reads as bare JSON.
    let per_type = client(&with(
        &server.url(),
        "mode=pubsub&legacy_types=review_created,review_approved",
    ))
    .await;
    per_type.publish_one("review_created", &ours).await.unwrap();
    assert_eq!(next_raw(&mut raw).await, br#"{"id":"x"}"#);
    per_type.publish_one("other", &other).await.unwrap();
    assert_eq!(next_raw(&mut raw_other).await, other);

    // `codec=cloudevents` is a choice: CloudEvents even on a bare channel.
    let chosen = client(&with(&server.url(), "mode=pubsub&codec=cloudevents")).await;
    let consumer = chosen
        .consumer("g", only(&["review_created"]), fast_opts())
        .await
        .unwrap();
    server
        .cmd(&["PUBLISH", "review_created", r#"{"id": "bare"}"#])
        .unwrap();
    next_raw(&mut raw).await;
    read_n(&consumer, 1, Duration::from_secs(5)).await;
    chosen.publish_one("review_created", &ours).await.unwrap();
    assert_eq!(next_raw(&mut raw).await, ours);

    // In code, per type.
    let config = eventbus_redis::RedisConfig::from_url(&with(&server.url(), "mode=pubsub"))
        .unwrap()
        .with_type_codec("other", eventbus_redis::Codec::Legacy);
    let coded = eventbus_redis::Client::connect(config).await.unwrap();
    coded.publish_one("other", &other).await.unwrap();
    assert_eq!(next_raw(&mut raw_other).await, br#"{"id":"o"}"#);
}

#[tokio::test]
async fn a_replayed_bare_message_is_the_original_bytes() {
    // Regression: replay republished the CloudEvent the bare message had
    // been wrapped into, with an id eventbus made up.
    for query in [
        "mode=pubsub",
        "mode=pubsub&codec=cloudevents",
        "mode=pubsub&codec=legacy",
    ] {
        let server = server();
        let client = client(&with(&server.url(), query)).await;
        let consumer = client
            .consumer("g", only(&["review_approved"]), fast_opts())
            .await
            .unwrap();
        let mut raw = raw_subscriber(&server, "review_approved").await;
        // Spacing and a trailing newline a re-encoding would not keep.
        let original = "{ \"id\" : \"5b0c\",\"n\":1.50 }\n";
        server
            .cmd(&["PUBLISH", "review_approved", original])
            .unwrap();
        assert_eq!(next_raw(&mut raw).await, original.as_bytes());
        let got = read_n(&consumer, 1, Duration::from_secs(5)).await.remove(0);
        assert!(
            eventbus_redis::codec::is_structured(&got.payload),
            "handed out wrapped"
        );
        let dlq_id = consumer
            .dead_letter(&got, &DeadLetterInfo::new("h", 1, "nope"))
            .await
            .unwrap();
        let dl = client.dead_letter(&dlq_id).await.unwrap().unwrap();
        assert_eq!(&dl.payload[..], original.as_bytes(), "{query}: as received");
        assert_eq!(dl.origin.as_deref(), Some("review_approved"));
        assert_eq!(client.replay(&dlq_id).await.unwrap().as_deref(), Some("g"));
        assert_eq!(
            next_raw(&mut raw).await,
            original.as_bytes(),
            "{query}: the replay is byte for byte what was received"
        );
        assert_eq!(client.dead_letter_count().await.unwrap(), 0);
    }
}

#[tokio::test]
async fn a_dead_letter_of_a_non_json_payload_keeps_its_channel() {
    let server = server();
    let client = client(&with(&server.url(), "mode=pubsub&prefix=svc")).await;
    let typed = client
        .consumer("g", only(&["t"]), fast_opts())
        .await
        .unwrap();
    let all = client
        .consumer("audit", Topics::All, fast_opts())
        .await
        .unwrap();
    server.cmd(&["PUBLISH", "svc:t", "not json \u{1}"]).unwrap();
    for consumer in [&typed, &all] {
        let got = read_n(consumer, 1, Duration::from_secs(5)).await.remove(0);
        assert_eq!(&got.payload[..], b"not json \x01");
        // What the worker records when nothing of the message is readable.
        consumer
            .dead_letter(&got, &DeadLetterInfo::new("h", 1, "not JSON"))
            .await
            .unwrap();
    }
    let dls = client.dead_letters(10).await.unwrap();
    assert_eq!(dls.len(), 2);
    for dl in dls {
        assert_eq!(dl.origin.as_deref(), Some("svc:t"), "{dl:?}");
        assert_eq!(dl.event_type.as_deref(), Some("t"), "{dl:?}");
        assert_eq!(dl.event_id, None);
        assert_eq!(&dl.payload[..], b"not json \x01");
    }
}

/// The log lines written while `f` runs (on this thread: a current-thread test).
async fn logs_of<F: std::future::Future<Output = ()>>(f: F) -> String {
    #[derive(Clone, Default)]
    struct Buf(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buf = Buf::default();
    let writer = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    f.await;
    String::from_utf8(buf.0.lock().unwrap().clone()).unwrap()
}

#[tokio::test]
async fn a_channel_carrying_both_formats_is_warned_about_once() {
    let server = server();
    let client = client(&with(&server.url(), "mode=pubsub")).await;
    let logs = logs_of(async {
        let consumer = client
            .consumer("g", only(&["review_created"]), fast_opts())
            .await
            .unwrap();
        for round in 0..3 {
            server
                .cmd(&["PUBLISH", "review_created", r#"{"id": "bare"}"#])
                .unwrap();
            let ce = event("review_created", json!({"id": round}));
            let ce = std::str::from_utf8(&ce).unwrap();
            server.cmd(&["PUBLISH", "review_created", ce]).unwrap();
            read_n(&consumer, 2, Duration::from_secs(5)).await;
        }
    })
    .await;
    let both: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("carries both bare JSON and CloudEvents JSON"))
        .collect();
    assert_eq!(both.len(), 1, "{logs}");
    assert!(
        both[0].contains("this service publishes bare JSON on it"),
        "{logs}"
    );
}

#[tokio::test]
async fn publishing_on_a_channel_of_unknown_format_is_warned_about_once_per_type() {
    let server = server();
    let implicit = client(&with(&server.url(), "mode=pubsub")).await;
    let chosen = client(&with(&server.url(), "mode=pubsub&codec=cloudevents")).await;
    let logs = logs_of(async {
        for _ in 0..3 {
            for ty in ["a", "b"] {
                let e = event(ty, json!({}));
                implicit.publish_one(ty, &e).await.unwrap();
                chosen.publish_one(ty, &e).await.unwrap();
            }
        }
    })
    .await;
    let guesses: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("publishing CloudEvents JSON on pub/sub channel"))
        .collect();
    assert_eq!(
        guesses.len(),
        2,
        "once for `a`, once for `b`, none from `codec=cloudevents`: {logs}"
    );
    assert!(guesses[0].contains("legacy_types=a"), "{logs}");
}
