//! The bus on Redis Streams beyond the transport contract (which
//! `eventbus-redis/tests/conformance.rs` runs): what it leaves on the wire
//! (one consumer group per handler, one consumer per instance, nothing
//! pending once settled, the DLQ stream's fields, the replay stream),
//! entries a foreign producer writes with raw `XADD`, the hand-back of
//! entries an instance never saw, and TLS. Against a real `redis-server`
//! per test.
use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::support::*;
use eventbus::{Bus, Event, HandlerDef};
use parking_lot::Mutex;
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

/// Two instances of a service with three handlers: a Redis consumer group
/// per handler on the type's stream, a consumer per instance in each; the
/// DLQ stream's fields; an acked replay leaves the group's replay stream;
/// and once everything settled (acked, dead-lettered, replayed) nothing is
/// pending.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_consumers_and_dead_letters_on_the_wire() {
    let server = server();
    let (a, b, flaky_seen) = (Seen::default(), Seen::default(), Seen::default());
    let fail = Arc::new(AtomicBool::new(true));
    let url = server.url();
    let instance = || {
        let (f, s) = (fail.clone(), flaky_seen.clone());
        let flaky = HandlerDef::new("flaky", move |p: Ping| {
            let (f, s) = (f.clone(), s.clone());
            async move {
                if p.n == 13 && f.load(Ordering::SeqCst) {
                    return Err("downstream is down");
                }
                s.lock().push(p.n);
                Ok(())
            }
        })
        .retries(0);
        Bus::builder()
            .service("svc")
            .without_registered()
            .handler(recorder("a", &a))
            .handler(recorder("b", &b))
            .handler(flaky)
            .connect(&url)
    };
    let (bus_1, bus_2) = (instance().await.unwrap(), instance().await.unwrap());
    assert_eq!(bus_1.transport().name(), "redis-streams");
    let (mut r1, mut r2) = (bus_1.spawn(), bus_2.spawn());
    r1.ready().await.unwrap();
    r2.ready().await.unwrap();
    bus_1
        .publish_batch((0..20).map(|n| Ping { n }))
        .await
        .unwrap();
    wait_until_async(
        "both groups handled 20 events, one is dead-lettered",
        || async {
            a.lock().len() >= 20
                && b.lock().len() >= 20
                && flaky_seen.lock().len() >= 19
                && bus_1.dead_letters(10).await.unwrap().len() == 1
        },
    )
    .await;
    let stream = stream_key("e2e.ping");
    let groups = server.cmd(&["XINFO", "GROUPS", &stream]).unwrap();
    for group in ["svc.a", "svc.b", "svc.flaky"] {
        assert!(groups.contains(group), "no group {group}: {groups}");
    }
    // Each instance is a consumer of the group that shows it is alive (Redis
    // 7.0 lists a consumer in XINFO CONSUMERS only once it was handed an
    // entry, so the liveness set is where every instance shows up).
    wait_until("one live consumer per instance in one group", || {
        server
            .cmd(&["ZCARD", "{eventbus}:alive:svc.a"])
            .is_ok_and(|n| n.trim() == "2")
    })
    .await;
    let consumers = server
        .cmd(&["XINFO", "CONSUMERS", &stream, "svc.a"])
        .unwrap();
    assert!(
        (1..=2).contains(&consumers.matches("name").count()),
        "the consumers that were handed entries: {consumers}"
    );
    // The wire contract of the DLQ stream.
    let raw = server.cmd(&["XRANGE", "{eventbus}:dlq", "-", "+"]).unwrap();
    for field in [
        "type", "id", "stream", "group", "handler", "attempts", "error", "time", "payload",
    ] {
        assert!(raw.lines().any(|l| l == field), "no `{field}` in {raw}");
    }
    assert_eq!(
        pending(&server, &stream, "svc.flaky"),
        0,
        "dead-lettering acked it"
    );

    fail.store(false, Ordering::SeqCst);
    let dead = bus_1.dead_letters(10).await.unwrap();
    assert!(bus_1.replay_dead_letter(&dead[0].id).await.unwrap());
    wait_until("the replayed event is handled", || {
        flaky_seen.lock().contains(&13)
    })
    .await;
    r1.shutdown().await.unwrap();
    r2.shutdown().await.unwrap();
    for group in ["svc.a", "svc.b", "svc.flaky"] {
        assert_eq!(pending(&server, &stream, group), 0, "{group}: all acked");
    }
    assert_eq!(
        server
            .cmd(&["XLEN", "{eventbus}:replay:svc.flaky"])
            .unwrap(),
        "0",
        "an acked replay is deleted from the replay stream"
    );
}

/// Entries a foreign producer writes straight into the stream the binding
/// reads (`{eventbus}:stream:e2e.ping`) with `XADD`, in fields other than
/// `cloud_event` (malformed CloudEvents in `cloud_event` are the
/// conformance suite's): they go to the DLQ with the reason, once, and the
/// events around them keep flowing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_entries_of_a_foreign_producer_go_to_the_dlq_with_the_reason() {
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
