//! Delivery semantics on the memory transport: groups, competing consumers,
//! retries, dead letters, poison messages, at-least-once, concurrency, drain.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use eventbus::RetryPolicy;
use eventbus::testing::TestBus;
use eventbus::transport::memory::MemoryTransport;
use eventbus::transport::{Outgoing, Transport};
use eventbus::{Bus, Context, Event, HandlerDef};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event("mem.ping")]
struct Ping {
    n: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event("mem.pong")]
struct Pong {
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

fn fast_retries() -> RetryPolicy {
    RetryPolicy {
        initial: Duration::from_millis(10),
        max: Duration::from_millis(40),
    }
}

#[tokio::test]
async fn every_group_gets_every_event() {
    let (a, b) = (Seen::default(), Seen::default());
    let test = TestBus::start(
        Bus::builder()
            .without_registered()
            .handler(recorder("a", &a))
            .handler(recorder("b", &b)),
    )
    .await
    .unwrap();
    for n in 0..50 {
        test.bus().publish(Ping { n }).await.unwrap();
    }
    test.settle().await;
    let mut a = a.lock().clone();
    let mut b = b.lock().clone();
    a.sort();
    b.sort();
    assert_eq!(a, (0..50).collect::<Vec<_>>());
    assert_eq!(b, (0..50).collect::<Vec<_>>());
    test.stop().await.unwrap();
}

#[tokio::test]
async fn instances_of_one_group_compete() {
    // Two "processes" of one service share the transport `memory://compete`.
    let seen_1 = Seen::default();
    let seen_2 = Seen::default();
    let slow = |seen: &Seen| {
        let seen = seen.clone();
        HandlerDef::new("work", move |p: Ping| {
            let seen = seen.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(2)).await;
                seen.lock().push(p.n);
            }
        })
        .concurrency(2)
    };
    let bus_1 = Bus::builder()
        .service("svc")
        .without_registered()
        .handler(slow(&seen_1))
        .connect("memory://compete")
        .await
        .unwrap();
    let bus_2 = Bus::builder()
        .service("svc")
        .without_registered()
        .handler(slow(&seen_2))
        .connect("memory://compete")
        .await
        .unwrap();
    let (r1, r2) = (bus_1.spawn(), bus_2.spawn());
    for n in 0..200 {
        bus_1.publish(Ping { n }).await.unwrap();
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while seen_1.lock().len() + seen_2.lock().len() < 200 {
        assert!(tokio::time::Instant::now() < deadline, "not all handled");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
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
}

#[tokio::test(start_paused = true)]
async fn failures_are_retried_with_backoff_then_dead_lettered() {
    let attempts = Arc::new(Mutex::new(Vec::new()));
    let log = attempts.clone();
    let failing = HandlerDef::new("failing", move |p: Ping, ctx: Context| {
        let log = log.clone();
        async move {
            log.lock()
                .push((ctx.attempt(), tokio::time::Instant::now()));
            if p.n == 13 {
                Err(format!("cannot handle {}", p.n))
            } else {
                Ok(())
            }
        }
    })
    .retries(3);
    let test = TestBus::start(
        Bus::builder()
            .service("svc")
            .without_registered()
            .retry_policy(RetryPolicy {
                initial: Duration::from_secs(1),
                max: Duration::from_secs(60),
            })
            .handler(failing),
    )
    .await
    .unwrap();
    test.bus().publish(Ping { n: 13 }).await.unwrap();
    test.bus().publish(Ping { n: 1 }).await.unwrap();
    test.settle().await;

    let attempts = attempts.lock().clone();
    let thirteen: Vec<_> = attempts.iter().filter(|(a, _)| *a > 1).collect();
    assert_eq!(thirteen.len(), 3, "3 retries after the first attempt");
    assert_eq!(
        attempts.len(),
        5,
        "1 success + 4 attempts of the failing event"
    );
    // Exponential backoff: ~1s, ~2s, ~4s (each within [d/2, d]).
    let times: Vec<_> = attempts
        .iter()
        .filter(|(a, _)| *a >= 1)
        .map(|(_, t)| *t)
        .collect();
    let first = times[0];
    let gaps: Vec<Duration> = thirteen.iter().map(|(_, t)| *t - first).collect();
    assert!(
        gaps[0] >= Duration::from_millis(500) && gaps[0] <= Duration::from_millis(1100),
        "{gaps:?}"
    );
    let g2 = gaps[1] - gaps[0];
    let g3 = gaps[2] - gaps[1];
    assert!(
        g2 >= Duration::from_millis(1000) && g2 <= Duration::from_millis(2100),
        "{gaps:?}"
    );
    assert!(
        g3 >= Duration::from_millis(2000) && g3 <= Duration::from_millis(4100),
        "{gaps:?}"
    );

    let dead = test.dead_letters().await.unwrap();
    assert_eq!(dead.len(), 1);
    let d = &dead[0];
    assert_eq!(d.group, "svc.failing");
    assert_eq!(d.handler, "failing");
    assert_eq!(d.attempts, 4);
    assert_eq!(d.error, "cannot handle 13");
    assert_eq!(d.event_type.as_deref(), Some("mem.ping"));
    assert!(d.event_id.is_some());
    assert!(d.time <= std::time::SystemTime::now());
    test.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_retry_does_not_block_other_events() {
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
    let test = TestBus::start(
        Bus::builder()
            .without_registered()
            .retry_policy(RetryPolicy {
                initial: Duration::from_secs(10),
                max: Duration::from_secs(10),
            })
            .handler(handler),
    )
    .await
    .unwrap();
    for n in 0..5 {
        test.bus().publish(Ping { n }).await.unwrap();
    }
    test.settle().await;
    assert_eq!(
        *seen.lock(),
        vec![1, 2, 3, 4, 0],
        "the failed event came back last"
    );
    test.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn panics_are_caught_and_retried() {
    let calls = Arc::new(AtomicU32::new(0));
    let c = calls.clone();
    let handler = HandlerDef::new("panicky", move |_p: Ping, ctx: Context| {
        let c = c.clone();
        async move {
            c.fetch_add(1, Ordering::SeqCst);
            if ctx.attempt() < 3 {
                panic!("boom on attempt {}", ctx.attempt());
            }
        }
    });
    let test = TestBus::start(
        Bus::builder()
            .without_registered()
            .retry_policy(fast_retries())
            .handler(handler),
    )
    .await
    .unwrap();
    test.bus().publish(Ping { n: 1 }).await.unwrap();
    test.settle().await;
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert!(test.dead_letters().await.unwrap().is_empty());
    test.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_panic_on_every_attempt_ends_in_the_dlq_with_the_message() {
    let handler = HandlerDef::new("always_panics", |p: Ping| async move {
        if p.n > 0 {
            panic!("the database is on fire");
        }
    })
    .retries(1);
    let test = TestBus::start(
        Bus::builder()
            .without_registered()
            .retry_policy(fast_retries())
            .handler(handler),
    )
    .await
    .unwrap();
    test.bus().publish(Ping { n: 1 }).await.unwrap();
    test.settle().await;
    let dead = test.dead_letters().await.unwrap();
    assert_eq!(dead.len(), 1);
    assert!(
        dead[0]
            .error
            .contains("handler panicked: the database is on fire"),
        "{}",
        dead[0].error
    );
    assert_eq!(dead[0].attempts, 2);
    test.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn dead_letters_can_be_replayed() {
    let fail = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let seen = Seen::default();
    let (f, s) = (fail.clone(), seen.clone());
    let handler = HandlerDef::new("flaky", move |p: Ping| {
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
    let test = TestBus::start(
        Bus::builder()
            .without_registered()
            .retry_policy(fast_retries())
            .handler(handler),
    )
    .await
    .unwrap();
    test.bus().publish(Ping { n: 7 }).await.unwrap();
    test.settle().await;
    let dead = test.dead_letters().await.unwrap();
    assert_eq!(dead.len(), 1);
    fail.store(false, Ordering::SeqCst);
    assert!(test.bus().replay_dead_letter(&dead[0].id).await.unwrap());
    assert!(
        !test.bus().replay_dead_letter(&dead[0].id).await.unwrap(),
        "replayed once"
    );
    test.settle().await;
    assert_eq!(*seen.lock(), vec![7]);
    assert!(test.dead_letters().await.unwrap().is_empty());
    test.stop().await.unwrap();
}

#[tokio::test]
async fn malformed_messages_go_to_the_dlq_and_others_keep_flowing() {
    let seen = Seen::default();
    let test = TestBus::start(
        Bus::builder()
            .without_registered()
            .handler(recorder("rec", &seen)),
    )
    .await
    .unwrap();
    let bad: Vec<(&str, &str)> = vec![
        ("not json", "message is not JSON"),
        (
            r#"{"specversion":"1.0","id":"1","source":"/x"}"#,
            "missing field `type`",
        ),
        (
            r#"{"specversion":"0.3","id":"1","type":"mem.ping","source":"/x","data":{"n":1}}"#,
            "unsupported CloudEvents specversion",
        ),
        (
            r#"{"specversion":"1.0","id":"1","type":"mem.ping","source":"/x","data":{"n":"one"}}"#,
            "data.n",
        ),
        (
            r#"{"specversion":"1.0","id":"1","type":"mem.ping","source":"/x"}"#,
            "data of `mem.ping`",
        ),
    ];
    for (i, (payload, _)) in bad.iter().enumerate() {
        test.bus().publish(Ping { n: i as u32 }).await.unwrap();
        test.bus()
            .publish_encoded(&[Outgoing {
                event_type: "mem.ping".into(),
                payload: Bytes::copy_from_slice(payload.as_bytes()),
            }])
            .await
            .unwrap();
    }
    test.settle().await;
    let mut seen = seen.lock().clone();
    seen.sort();
    assert_eq!(seen, (0..bad.len() as u32).collect::<Vec<_>>());
    let dead = test.dead_letters().await.unwrap();
    assert_eq!(dead.len(), bad.len());
    for (d, (payload, reason)) in dead.iter().zip(&bad) {
        assert!(d.error.contains(reason), "{payload}: got {:?}", d.error);
        assert_eq!(d.payload, payload.as_bytes());
        assert_eq!(d.attempts, 1, "poison messages are not retried");
    }
    test.stop().await.unwrap();
}

#[tokio::test]
async fn concurrency_limit_is_respected() {
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let (r, p) = (running.clone(), peak.clone());
    let handler = HandlerDef::new("limited", move |_p: Ping| {
        let (r, p) = (r.clone(), p.clone());
        async move {
            let now = r.fetch_add(1, Ordering::SeqCst) + 1;
            p.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(5)).await;
            r.fetch_sub(1, Ordering::SeqCst);
        }
    })
    .concurrency(3);
    let test = TestBus::start(Bus::builder().without_registered().handler(handler))
        .await
        .unwrap();
    test.bus()
        .publish_batch((0..30).map(|n| Ping { n }))
        .await
        .unwrap();
    test.settle().await;
    assert_eq!(peak.load(Ordering::SeqCst), 3);
    test.stop().await.unwrap();
}

#[tokio::test]
async fn publish_never_runs_handlers_inline() {
    let seen = Seen::default();
    let bus = Bus::builder()
        .without_registered()
        .handler(recorder("rec", &seen))
        .build()
        .await
        .unwrap();
    // Not running: publishing queues, and nothing is handled.
    bus.publish(Ping { n: 1 }).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(seen.lock().is_empty());
    // Events published before `run` are kept for the declared group.
    let running = bus.spawn();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while seen.lock().is_empty() {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    running.shutdown().await.unwrap();
    assert_eq!(*seen.lock(), vec![1]);
}

#[tokio::test]
async fn shutdown_finishes_in_flight_events_and_redelivers_the_rest() {
    let transport = MemoryTransport::new();
    let started = Arc::new(AtomicU32::new(0));
    let finished = Seen::default();
    let handler = |started: &Arc<AtomicU32>, finished: &Seen| {
        let (s, f) = (started.clone(), finished.clone());
        HandlerDef::new("slow", move |p: Ping| {
            let (s, f) = (s.clone(), f.clone());
            async move {
                s.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(200)).await;
                f.lock().push(p.n);
            }
        })
        .concurrency(2)
    };
    let bus = Bus::builder()
        .service("svc")
        .without_registered()
        .handler(handler(&started, &finished))
        .transport(transport.clone())
        .build()
        .await
        .unwrap();
    let running = bus.spawn();
    bus.publish_batch((0..10).map(|n| Ping { n }))
        .await
        .unwrap();
    while started.load(Ordering::SeqCst) < 2 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    running.shutdown().await.unwrap();
    let done = finished.lock().len();
    assert!(done >= 2, "in-flight events were finished, got {done}");
    assert!(done < 10, "no new events were taken after shutdown");
    assert_eq!(
        transport.pending("svc.slow"),
        10 - done,
        "the rest is still queued"
    );

    // A new instance picks up exactly the rest.
    let bus2 = Bus::builder()
        .service("svc")
        .without_registered()
        .handler(handler(&started, &finished))
        .transport(transport.clone())
        .build()
        .await
        .unwrap();
    let running = bus2.spawn();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while finished.lock().len() < 10 {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    running.shutdown().await.unwrap();
    let mut all = finished.lock().clone();
    all.sort();
    assert_eq!(all, (0..10).collect::<Vec<_>>());
}

#[tokio::test]
async fn an_abandoned_delivery_is_delivered_again_with_a_higher_attempt() {
    let transport = MemoryTransport::new();
    let spec = eventbus::transport::GroupSpec {
        group: "g".into(),
        handler: "h".into(),
        topics: eventbus::transport::Topics::Types(vec!["mem.ping".into()]),
        handler_timeout: None,
    };
    transport.declare(&spec).await.unwrap();
    let bus = Bus::builder()
        .without_registered()
        .transport(transport.clone())
        .build()
        .await
        .unwrap();
    bus.publish(Ping { n: 1 }).await.unwrap();
    {
        let sub = transport.subscribe(&spec).await.unwrap();
        let got = sub.next(10).await.unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].attempt, 1);
        // Dropped without ack: the "process" died.
    }
    let sub = transport.subscribe(&spec).await.unwrap();
    let got = sub.next(10).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].attempt, 2);
    sub.ack(&[got[0].id]).await.unwrap();
    assert_eq!(transport.pending("g"), 0);
}

#[tokio::test]
async fn handlers_publish_follow_ups_through_the_context() {
    let relay = HandlerDef::new("relay", |p: Ping, ctx: Context| async move {
        ctx.bus().publish(Pong { n: p.n * 10 }).await
    });
    let test = TestBus::start(Bus::builder().without_registered().handler(relay))
        .await
        .unwrap();
    test.bus().publish(Ping { n: 4 }).await.unwrap();
    test.settle().await;
    assert_eq!(test.published_of::<Pong>(), vec![Pong { n: 40 }]);
    assert_eq!(test.published_types(), vec!["mem.ping", "mem.pong"]);
    test.stop().await.unwrap();
}

#[tokio::test]
async fn context_carries_metadata_and_state() {
    struct Db(&'static str);
    let got = Arc::new(Mutex::new(None));
    let g = got.clone();
    let handler = HandlerDef::new("meta", move |_p: Ping, ctx: Context| {
        let g = g.clone();
        async move {
            *g.lock() = Some((
                ctx.event_type().to_owned(),
                ctx.source().to_owned(),
                ctx.group().to_owned(),
                ctx.attempt(),
                ctx.state::<Db>().0,
                ctx.time().is_some(),
                uuid::Uuid::parse_str(ctx.id()).is_ok(),
            ));
        }
    });
    let test = TestBus::start(
        Bus::builder()
            .service("orders")
            .state(Db("pg"))
            .without_registered()
            .handler(handler),
    )
    .await
    .unwrap();
    test.bus().publish(Ping { n: 1 }).await.unwrap();
    test.settle().await;
    assert_eq!(
        got.lock().clone().unwrap(),
        (
            "mem.ping".into(),
            "/orders".into(),
            "orders.meta".into(),
            1,
            "pg",
            true,
            true
        )
    );
    test.stop().await.unwrap();
}

/// Regression: `next` and `ack` once took two locks in opposite orders and
/// deadlocked under load on a multi-threaded runtime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn next_and_ack_on_two_threads_do_not_deadlock() {
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    let handler = HandlerDef::new("busy", move |_p: Ping| {
        let c = c.clone();
        async move {
            c.fetch_add(1, Ordering::Relaxed);
        }
    })
    .concurrency(16);
    let bus = Bus::builder()
        .without_registered()
        .handler(handler)
        .build()
        .await
        .unwrap();
    let running = bus.spawn();
    for round in 0..10 {
        bus.publish_batch((0..2_000).map(|n| Ping { n }))
            .await
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while count.load(Ordering::Relaxed) < (round + 1) * 2_000 {
            assert!(
                std::time::Instant::now() < deadline,
                "stuck at {}",
                count.load(Ordering::Relaxed)
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    running.shutdown().await.unwrap();
}
