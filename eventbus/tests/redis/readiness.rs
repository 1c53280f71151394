//! `Running::ready` / `Bus::ready`: once they return, every subscription is
//! live, so an event published at once is handled, also on pub/sub (which
//! keeps nothing for a subscriber that is not there yet). Regression: the
//! reviews example on `?mode=pubsub&codec=legacy` lost the events it
//! published right after `bus.spawn()`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::support::*;
use eventbus::{Bus, CloudEvent, Event, HandlerDef};
use serde::{Deserialize, Serialize};

/// Published right after the bus said it is ready.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event("readiness_ping")]
struct ReadinessPing {
    round: u32,
}

#[derive(Default)]
struct Seen {
    typed: AtomicUsize,
    global: AtomicUsize,
}

async fn bus(url: &str, seen: &Arc<Seen>) -> Bus {
    let (a, b) = (seen.clone(), seen.clone());
    Bus::builder()
        .service("readiness")
        .without_registered()
        .event::<ReadinessPing>()
        .handler(HandlerDef::new("on_ping", move |_: ReadinessPing| {
            let seen = a.clone();
            async move {
                seen.typed.fetch_add(1, Ordering::SeqCst);
            }
        }))
        .handler(HandlerDef::new("audit", move |e: CloudEvent| {
            let seen = b.clone();
            async move {
                if eventbus::cloudevents::AttributesReader::ty(&e) == ReadinessPing::TYPE {
                    seen.global.fetch_add(1, Ordering::SeqCst);
                }
            }
        }))
        .connect(url)
        .await
        .expect("connect")
}

/// Each round starts a fresh bus (fresh subscriptions), publishes the moment
/// `ready()` returns, and needs both handlers to get the event.
async fn publish_right_after_ready(url: &str, rounds: u32) {
    for round in 0..rounds {
        let seen = Arc::new(Seen::default());
        let bus = bus(url, &seen).await;
        let mut running = bus.spawn();
        running.ready().await.expect("the bus gets ready");
        bus.publish(ReadinessPing { round }).await.unwrap();
        wait_until(
            &format!("round {round}: the typed and the global handler got the event"),
            || seen.typed.load(Ordering::SeqCst) == 1 && seen.global.load(Ordering::SeqCst) == 1,
        )
        .await;
        running.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_published_right_after_ready_is_handled_on_pubsub() {
    let server = server();
    publish_right_after_ready(&with(&server.url(), "mode=pubsub"), 40).await;
    publish_right_after_ready(&with(&server.url(), "mode=pubsub&codec=legacy"), 10).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_published_right_after_ready_is_handled_on_streams() {
    let server = server();
    publish_right_after_ready(&server.url(), 10).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bus_ready_reports_the_run_started_after_it_was_called() {
    let server = server();
    let seen = Arc::new(Seen::default());
    let bus = bus(&with(&server.url(), "mode=pubsub"), &seen).await;
    let publisher = bus.clone();
    let (run, published) = tokio::join!(bus.run(), async move {
        publisher.ready().await?;
        publisher.publish(ReadinessPing { round: 0 }).await?;
        wait_until("the event published after Bus::ready was handled", || {
            seen.typed.load(Ordering::SeqCst) == 1 && seen.global.load(Ordering::SeqCst) == 1
        })
        .await;
        publisher.shutdown();
        Ok::<(), eventbus::Error>(())
    });
    published.unwrap();
    run.unwrap();
    // The run is over: nothing will be ready again.
    assert!(matches!(bus.ready().await, Err(eventbus::Error::Closed)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_returns_why_the_bus_could_not_subscribe() {
    let server = server();
    let seen = Arc::new(Seen::default());
    let bus = bus(&with(&server.url(), "mode=pubsub"), &seen).await;
    drop(server); // the subscriptions cannot be made
    let mut running = bus.spawn();
    let err = running
        .ready()
        .await
        .expect_err("no server, no subscription");
    assert!(err.to_string().contains("cannot connect"), "{err}");
    assert!(running.is_finished());
    running.shutdown().await.unwrap();
}
