//! Delivery semantics through the bus on Redis Streams, against a real
//! `redis-server` per test: groups, competing consumers, retries with
//! backoff, dead letters and their replay, poison messages, malformed
//! entries written with raw redis commands. Mirrors `memory_delivery.rs`.
#![cfg(feature = "redis")]

#[path = "redis_support/mod.rs"]
mod redis_support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use eventbus::RetryPolicy;
use eventbus::{Bus, Context, Event, HandlerDef};
use parking_lot::Mutex;
use redis_support::*;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event("e2e.ping")]
struct Ping {
    n: u32,
}

type Seen = Arc<Mutex<Vec<u32>>>;

fn recorder(name: &'static str, seen: &Seen) -> HandlerDef {
    let seen = seen.clone();
    HandlerDef::new(name, move |p: Ping| {
        let seen = seen.clone();
        async move {
            seen.lock().push(p.n);
        }
    })
}

fn sorted(seen: &Seen) -> Vec<u32> {
    let mut v = seen.lock().clone();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_group_gets_every_event() {
    let server = server();
    let (a, b) = (Seen::default(), Seen::default());
    let bus = Bus::builder()
        .service("svc")
        .without_registered()
        .handler(recorder("a", &a))
        .handler(recorder("b", &b))
        .connect(&server.url())
        .await
        .unwrap();
    assert_eq!(bus.transport().name(), "redis-streams");
    let running = bus.spawn();
    for n in 0..25 {
        bus.publish(Ping { n }).await.unwrap();
    }
    bus.publish_batch((25..50).map(|n| Ping { n }))
        .await
        .unwrap();
    wait_until("both groups handled 50 events", || {
        a.lock().len() >= 50 && b.lock().len() >= 50
    })
    .await;
    running.shutdown().await.unwrap();
    assert_eq!(sorted(&a), (0..50).collect::<Vec<_>>(), "each once");
    assert_eq!(sorted(&b), (0..50).collect::<Vec<_>>(), "each once");
    // One Redis consumer group per handler, on the type's stream.
    let groups = server
        .cmd(&["XINFO", "GROUPS", &stream_key("e2e.ping")])
        .unwrap();
    assert!(
        groups.contains("svc.a") && groups.contains("svc.b"),
        "{groups}"
    );
    assert_eq!(pending(&server, &stream_key("e2e.ping"), "svc.a"), 0);
    assert_eq!(pending(&server, &stream_key("e2e.ping"), "svc.b"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_of_one_group_compete() {
    // Two "processes" of one service: two buses, each with its own Redis
    // connection, on the same URL.
    let server = server();
    let (seen_1, seen_2) = (Seen::default(), Seen::default());
    let slow = |seen: &Seen| {
        let seen = seen.clone();
        HandlerDef::new("work", move |p: Ping| {
            let seen = seen.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(10)).await;
                seen.lock().push(p.n);
            }
        })
        .concurrency(2)
    };
    let url = server.url();
    let connect = |seen: &Seen| {
        Bus::builder()
            .service("svc")
            .without_registered()
            .handler(slow(seen))
            .connect(&url)
    };
    let bus_1 = connect(&seen_1).await.unwrap();
    let bus_2 = connect(&seen_2).await.unwrap();
    let (r1, r2) = (bus_1.spawn(), bus_2.spawn());
    for chunk in (0..200).collect::<Vec<u32>>().chunks(20) {
        bus_1
            .publish_batch(chunk.iter().map(|&n| Ping { n }))
            .await
            .unwrap();
    }
    wait_until("200 events handled", || {
        seen_1.lock().len() + seen_2.lock().len() >= 200
    })
    .await;
    r1.shutdown().await.unwrap();
    r2.shutdown().await.unwrap();
    let (s1, s2) = (seen_1.lock().clone(), seen_2.lock().clone());
    assert!(
        !s1.is_empty() && !s2.is_empty(),
        "both instances worked: {} / {}",
        s1.len(),
        s2.len()
    );
    let mut all: Vec<u32> = s1.into_iter().chain(s2).collect();
    all.sort();
    assert_eq!(
        all,
        (0..200).collect::<Vec<_>>(),
        "each event handled exactly once"
    );
    let consumers = server
        .cmd(&["XINFO", "CONSUMERS", &stream_key("e2e.ping"), "svc.work"])
        .unwrap();
    assert_eq!(
        consumers.matches("name").count(),
        2,
        "one consumer per instance in one group: {consumers}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_retried_with_backoff_then_dead_lettered() {
    let server = server();
    let t0 = SystemTime::now();
    let attempts = Arc::new(Mutex::new(Vec::new()));
    let others = Seen::default();
    let (log, ok) = (attempts.clone(), others.clone());
    let failing = HandlerDef::new("failing", move |p: Ping, ctx: Context| {
        let (log, ok) = (log.clone(), ok.clone());
        async move {
            if p.n == 13 {
                log.lock().push((ctx.attempt(), Instant::now()));
                Err(format!("cannot handle {}", p.n))
            } else {
                ok.lock().push(p.n);
                Ok(())
            }
        }
    })
    .retries(3);
    let policy = RetryPolicy {
        initial: Duration::from_millis(200),
        max: Duration::from_secs(10),
    };
    let bus = Bus::builder()
        .service("svc")
        .without_registered()
        .retry_policy(policy)
        .handler(failing)
        .connect(&server.url())
        .await
        .unwrap();
    let running = bus.spawn();
    bus.publish(Ping { n: 13 }).await.unwrap();
    bus.publish(Ping { n: 1 }).await.unwrap();
    wait_until_async("the failing event is dead-lettered", || async {
        !bus.dead_letters(10).await.unwrap().is_empty()
    })
    .await;

    let attempts = attempts.lock().clone();
    assert_eq!(
        attempts.iter().map(|(a, _)| *a).collect::<Vec<_>>(),
        [1, 2, 3, 4],
        "the first attempt and 3 retries, counted by Redis"
    );
    // Exponential backoff with jitter: retry k waits at least half of
    // 200 ms * 2^(k-1). Lower bounds only: a loaded machine only adds delay.
    for (k, pair) in attempts.windows(2).enumerate() {
        let gap = pair[1].1 - pair[0].1;
        let at_least = policy.initial * (1 << k) / 2;
        assert!(gap >= at_least, "retry {} came after {gap:?}", k + 1);
    }
    assert_eq!(*others.lock(), [1], "the other event was not held up");

    let dead = bus.dead_letters(10).await.unwrap();
    assert_eq!(dead.len(), 1);
    let d = &dead[0];
    assert_eq!(d.group, "svc.failing");
    assert_eq!(d.handler, "failing");
    assert_eq!(d.attempts, 4);
    assert_eq!(d.error, "cannot handle 13");
    assert_eq!(d.event_type.as_deref(), Some("e2e.ping"));
    assert!(d.event_id.is_some());
    let slack = Duration::from_secs(1);
    assert!(
        d.time + slack >= t0 && d.time <= SystemTime::now() + slack,
        "{:?}",
        d.time
    );
    let ce: serde_json::Value = serde_json::from_slice(&d.payload).unwrap();
    assert_eq!(ce["data"], serde_json::json!({"n": 13}));
    // The wire contract of the DLQ stream.
    let raw = server.cmd(&["XRANGE", "{eventbus}:dlq", "-", "+"]).unwrap();
    for field in [
        "type", "id", "stream", "group", "handler", "attempts", "error", "time", "payload",
    ] {
        assert!(raw.lines().any(|l| l == field), "no `{field}` in {raw}");
    }
    // Dead-lettering acked the entry: nothing is left pending.
    running.shutdown().await.unwrap();
    assert_eq!(pending(&server, &stream_key("e2e.ping"), "svc.failing"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_does_not_block_other_events() {
    let server = server();
    let seen = Seen::default();
    let log = seen.clone();
    let handler = HandlerDef::new("h", move |p: Ping, ctx: Context| {
        let log = log.clone();
        async move {
            if p.n == 0 && ctx.attempt() == 1 {
                return Err("first attempt fails");
            }
            log.lock().push(p.n);
            Ok(())
        }
    })
    .concurrency(1);
    let bus = Bus::builder()
        .without_registered()
        .retry_policy(RetryPolicy {
            initial: Duration::from_secs(4),
            max: Duration::from_secs(4),
        })
        .handler(handler)
        .connect(&server.url())
        .await
        .unwrap();
    let running = bus.spawn();
    for n in 0..5 {
        bus.publish(Ping { n }).await.unwrap();
    }
    wait_until("all 5 handled", || seen.lock().len() >= 5).await;
    running.shutdown().await.unwrap();
    assert_eq!(
        *seen.lock(),
        vec![1, 2, 3, 4, 0],
        "the failed event came back last"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_can_be_replayed_to_their_group_only() {
    let server = server();
    let fail = Arc::new(AtomicBool::new(true));
    let (flaky_seen, other_seen) = (Seen::default(), Seen::default());
    let (f, s) = (fail.clone(), flaky_seen.clone());
    let flaky = HandlerDef::new("flaky", move |p: Ping| {
        let (f, s) = (f.clone(), s.clone());
        async move {
            if f.load(Ordering::SeqCst) {
                return Err("downstream is down");
            }
            s.lock().push(p.n);
            Ok(())
        }
    })
    .retries(0);
    let bus = Bus::builder()
        .service("svc")
        .without_registered()
        .retry_policy(fast_retries())
        .handler(flaky)
        .handler(recorder("other", &other_seen))
        .connect(&server.url())
        .await
        .unwrap();
    let running = bus.spawn();
    bus.publish(Ping { n: 7 }).await.unwrap();
    wait_until_async("the event is dead-lettered", || async {
        bus.dead_letters(10).await.unwrap().len() == 1
    })
    .await;
    let dead = bus.dead_letters(10).await.unwrap();
    assert_eq!(dead[0].group, "svc.flaky");
    assert_eq!(dead[0].attempts, 1);
    assert_eq!(dead[0].error, "downstream is down");

    fail.store(false, Ordering::SeqCst);
    assert!(bus.replay_dead_letter(&dead[0].id).await.unwrap());
    assert!(
        !bus.replay_dead_letter(&dead[0].id).await.unwrap(),
        "replayed once"
    );
    assert!(
        !bus.replay_dead_letter("no-such-id").await.unwrap(),
        "unknown id"
    );
    wait_until("the replayed event is handled", || {
        !flaky_seen.lock().is_empty()
    })
    .await;
    // Give a wrongly broadcast replay every chance to show up in `other`.
    bus.publish(Ping { n: 8 }).await.unwrap();
    wait_until("the next event reached both groups", || {
        other_seen.lock().contains(&8) && flaky_seen.lock().contains(&8)
    })
    .await;
    running.shutdown().await.unwrap();
    assert_eq!(*flaky_seen.lock(), [7, 8]);
    assert_eq!(
        *other_seen.lock(),
        [7, 8],
        "the replay went to `flaky` only"
    );
    assert!(bus.dead_letters(10).await.unwrap().is_empty());
    assert_eq!(
        server
            .cmd(&["XLEN", "{eventbus}:replay:svc.flaky"])
            .unwrap(),
        "0",
        "an acked replay is deleted from the replay stream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_message_ends_in_the_dlq_and_others_keep_flowing() {
    let server = server();
    let seen = Seen::default();
    let s = seen.clone();
    let handler = HandlerDef::new("work", move |p: Ping| {
        let s = s.clone();
        async move {
            if p.n == 13 {
                panic!("the database is on fire");
            }
            s.lock().push(p.n);
        }
    })
    .retries(2)
    .concurrency(4);
    let bus = Bus::builder()
        .service("svc")
        .without_registered()
        .retry_policy(fast_retries())
        .handler(handler)
        .connect(&server.url())
        .await
        .unwrap();
    let running = bus.spawn();
    for chunk in (0..100).collect::<Vec<u32>>().chunks(10) {
        bus.publish_batch(chunk.iter().map(|&n| Ping { n }))
            .await
            .unwrap();
    }
    wait_until_async(
        "the 99 others are handled and the poison dead-lettered",
        || async { seen.lock().len() >= 99 && !bus.dead_letters(10).await.unwrap().is_empty() },
    )
    .await;
    running.shutdown().await.unwrap();
    let expected: Vec<u32> = (0..100).filter(|n| *n != 13).collect();
    assert_eq!(sorted(&seen), expected);
    let dead = bus.dead_letters(10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].attempts, 3, "the first attempt and `retries = 2`");
    assert!(
        dead[0]
            .error
            .contains("handler panicked: the database is on fire"),
        "{}",
        dead[0].error
    );
    let ce: serde_json::Value = serde_json::from_slice(&dead[0].payload).unwrap();
    assert_eq!(ce["data"]["n"], 13);
    assert_eq!(pending(&server, &stream_key("e2e.ping"), "svc.work"), 0);
}

/// Entries a foreign producer writes straight into the stream the binding
/// reads (`{eventbus}:stream:e2e.ping`) with `XADD`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_entries_go_to_the_dlq_with_the_reason() {
    let server = server();
    let seen = Seen::default();
    let bus = Bus::builder()
        .service("svc")
        .without_registered()
        .handler(recorder("rec", &seen))
        .connect(&server.url())
        .await
        .unwrap();
    let running = bus.spawn();
    let stream = stream_key("e2e.ping");
    // (field, value as written, reason expected in the DLQ)
    let bad: Vec<(&str, &str, &str)> = vec![
        ("cloud_event", "not json", "message is not JSON"),
        (
            "cloud_event",
            r#"{"specversion":"1.0","id":"1","source":"/x"}"#,
            "missing field `type`",
        ),
        (
            "cloud_event",
            r#"{"specversion":"0.3","id":"2","type":"e2e.ping","source":"/x","data":{"n":1}}"#,
            "unsupported CloudEvents specversion",
        ),
        (
            "cloud_event",
            r#"{"specversion":"1.0","id":"3","type":"e2e.ping","source":"/x","data":{"n":"one"}}"#,
            "data.n",
        ),
        (
            "cloud_event",
            r#"{"specversion":"1.0","id":"4","type":"e2e.ping","source":"/x"}"#,
            "data of `e2e.ping`",
        ),
        // A legacy producer's bare data (wrapped into a CloudEvent of the
        // stream's type on the way in), of the wrong shape.
        ("data", r#"{"n":"two"}"#, "data.n"),
        // Neither `cloud_event` nor `data`.
        ("colour", "blue", "not JSON"),
    ];
    for (i, (field, value, _)) in bad.iter().enumerate() {
        bus.publish(Ping { n: i as u32 }).await.unwrap();
        server.cmd(&["XADD", &stream, "*", field, value]).unwrap();
    }
    bus.publish(Ping { n: 100 }).await.unwrap();
    wait_until_async("every malformed entry is dead-lettered", || async {
        bus.dead_letters(100).await.unwrap().len() >= bad.len() && seen.lock().len() > bad.len()
    })
    .await;
    running.shutdown().await.unwrap();

    let mut good: Vec<u32> = (0..bad.len() as u32).collect();
    good.push(100);
    assert_eq!(sorted(&seen), good, "the good events kept flowing");
    let dead = bus.dead_letters(100).await.unwrap();
    assert_eq!(dead.len(), bad.len());
    for (field, value, reason) in &bad {
        let d = dead
            .iter()
            .find(|d| match *field {
                "cloud_event" => d.payload == value.as_bytes(),
                "data" => std::str::from_utf8(&d.payload).is_ok_and(|p| p.contains(value)),
                _ => d.payload.is_empty(),
            })
            .unwrap_or_else(|| panic!("no dead letter for {field}={value}: {dead:#?}"));
        assert!(
            d.error.contains(reason),
            "{field}={value}: expected {reason:?}, got {:?}",
            d.error
        );
        assert_eq!(d.attempts, 1, "{value}: malformed entries are not retried");
        assert_eq!(d.group, "svc.rec");
        assert_eq!(d.handler, "rec");
    }
    assert_eq!(pending(&server, &stream, "svc.rec"), 0, "all acked");
    let unique: BTreeSet<&str> = dead.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(unique.len(), bad.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_in_flight_events_and_the_next_instance_takes_the_rest() {
    let server = server();
    let started = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let finished = Seen::default();
    let handler = |started: &Arc<std::sync::atomic::AtomicU32>, finished: &Seen| {
        let (s, f) = (started.clone(), finished.clone());
        HandlerDef::new("slow", move |p: Ping| {
            let (s, f) = (s.clone(), f.clone());
            async move {
                s.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(300)).await;
                f.lock().push(p.n);
            }
        })
        .concurrency(2)
    };
    let bus = Bus::builder()
        .service("svc")
        .without_registered()
        .handler(handler(&started, &finished))
        .connect(&server.url())
        .await
        .unwrap();
    let running = bus.spawn();
    bus.publish_batch((0..10).map(|n| Ping { n }))
        .await
        .unwrap();
    wait_until("two events started", || started.load(Ordering::SeqCst) >= 2).await;
    running.shutdown().await.unwrap();
    let done = finished.lock().len();
    assert!(done >= 2, "in-flight events were finished, got {done}");
    assert!(done < 10, "no new events were taken after shutdown");

    // The next instance of the service picks up the rest (anything the
    // stopped one was handed and did not finish is taken over after 1 s).
    let bus2 = Bus::builder()
        .service("svc")
        .without_registered()
        .handler(handler(&started, &finished))
        .transport(fast_transport(&server.url(), Duration::from_secs(1)).await)
        .build()
        .await
        .unwrap();
    let running = bus2.spawn();
    wait_until("all 10 handled", || finished.lock().len() >= 10).await;
    running.shutdown().await.unwrap();
    assert_eq!(sorted(&finished), (0..10).collect::<Vec<_>>(), "each once");
    assert_eq!(pending(&server, &stream_key("e2e.ping"), "svc.slow"), 0);
}

/// Events Redis delivered to an instance by a read that was cancelled
/// before its reply arrived (here: handed to its consumer by a script, so
/// the instance never sees them) are handed back when the instance stops,
/// and another instance takes them over at once, not after `claim_idle`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_instance_hands_back_events_it_never_saw() {
    let server = server();
    let seen = Seen::default();
    let claim_idle = Duration::from_secs(600);
    let bus = Bus::builder()
        .service("svc")
        .without_registered()
        .handler(recorder("rec", &seen))
        .transport(fast_transport(&server.url(), claim_idle).await)
        .build()
        .await
        .unwrap();
    let running = bus.spawn();
    bus.publish(Ping { n: 0 }).await.unwrap();
    wait_until("the first event handled", || seen.lock().len() == 1).await;

    let stream = stream_key("e2e.ping");
    let consumers = server
        .cmd(&["XINFO", "CONSUMERS", &stream, "svc.rec"])
        .unwrap();
    let mut lines = consumers.lines();
    assert_eq!(lines.next(), Some("name"), "{consumers}");
    let name = lines.next().unwrap().to_owned();
    const STEAL: &str = "for i = 1, #ARGV - 2 do redis.call('XADD', KEYS[1], '*', 'cloud_event', ARGV[i + 2]) end \
        return #redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', 100, 'STREAMS', KEYS[1], '>')[1][2]";
    let payloads: Vec<_> = (1..=3)
        .map(|n| bus.encode(&Ping { n }).unwrap().1.payload)
        .collect();
    let mut args: Vec<&[u8]> = vec![
        b"EVAL",
        STEAL.as_bytes(),
        b"1",
        stream.as_bytes(),
        b"svc.rec",
        name.as_bytes(),
    ];
    args.extend(payloads.iter().map(|p| &p[..]));
    assert_eq!(server.cmd_bytes(&args).unwrap().trim(), "3");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(sorted(&seen), [0], "the instance never saw them");
    assert_eq!(pending(&server, &stream, "svc.rec"), 3);

    running.shutdown().await.unwrap();
    let bus2 = Bus::builder()
        .service("svc")
        .without_registered()
        .handler(recorder("rec", &seen))
        .transport(fast_transport(&server.url(), claim_idle).await)
        .build()
        .await
        .unwrap();
    let running = bus2.spawn();
    wait_until("the three handed back were handled", || {
        seen.lock().len() == 4
    })
    .await;
    running.shutdown().await.unwrap();
    assert_eq!(sorted(&seen), [0, 1, 2, 3]);
    assert_eq!(pending(&server, &stream, "svc.rec"), 0);
}

/// The same bus over `rediss://` (feature `redis-tls`): a server serving TLS
/// with a private CA named in the URL, publish → handler → ack.
#[cfg(feature = "redis-tls")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bus_runs_over_tls() {
    let server = testkit::RedisServer::start_with(testkit::RedisOptions {
        tls: true,
        ..Default::default()
    })
    .expect("start redis-server with TLS");
    let url = server.url();
    assert!(url.starts_with("rediss://"), "{url}");
    let seen = Seen::default();
    let bus = Bus::builder()
        .service("svc")
        .without_registered()
        .handler(recorder("rec", &seen))
        .connect(&url)
        .await
        .unwrap();
    let running = bus.spawn();
    bus.publish_batch((0..5).map(|n| Ping { n })).await.unwrap();
    wait_until("all five handled over TLS", || seen.lock().len() == 5).await;
    running.shutdown().await.unwrap();
    assert_eq!(sorted(&seen), [0, 1, 2, 3, 4]);
    assert_eq!(pending(&server, &stream_key("e2e.ping"), "svc.rec"), 0);
}
