//! The memory transport and the bus beyond the transport contract (which
//! `conformance_memory.rs` runs): follow-up events and metadata through the
//! `Context`, and a lock-order regression of the memory transport.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use eventbus::testing::TestBus;
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
