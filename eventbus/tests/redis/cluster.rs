//! The bus on a 3-node Redis Cluster that the harness creates
//! (`redis+cluster://...`): every key one configuration writes (streams,
//! groups, retries, the dead-letter queue and its replay stream, delayed
//! events, schedule ticks) shares a hash tag, so it lives in one hash slot
//! and the same code runs as on one server. What the bus does on a cluster
//! (groups, retries, DLQ, replay, global handlers, delays, schedules) is the
//! conformance suite's: `eventbus-redis/tests/conformance.rs`.
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::support::*;
use eventbus::{Bus, CloudEvent, Context, Event, HandlerDef, ScheduleDef};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use testkit::RedisCluster;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event("cl.order_placed")]
struct OrderPlaced {
    n: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event("cl.tick")]
struct Tick {}

/// (handler, detail)
#[derive(Default)]
struct Log(Mutex<Vec<(&'static str, String)>>);

impl Log {
    fn push(&self, handler: &'static str, detail: String) {
        self.0.lock().push((handler, detail));
    }
    fn count(&self, handler: &str) -> usize {
        self.0.lock().iter().filter(|(h, _)| *h == handler).count()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_key_of_a_configuration_lives_in_one_hash_slot() {
    let cluster =
        RedisCluster::start(3).expect("start a 3-node Redis Cluster (redis-server, redis-cli)");
    let url = cluster.url();
    assert!(url.starts_with("redis+cluster://"), "{url}");
    let log = Arc::new(Log::default());
    let fail = Arc::new(AtomicBool::new(true));
    let l = log.clone();
    let shipping = HandlerDef::new("shipping", move |o: OrderPlaced| {
        let l = l.clone();
        async move { l.push("shipping", o.n.to_string()) }
    });
    let (l, f) = (log.clone(), fail.clone());
    let billing = HandlerDef::new("billing", move |o: OrderPlaced| {
        let (l, f) = (l.clone(), f.clone());
        async move {
            if o.n == 3 && f.load(Ordering::SeqCst) {
                return Err(format!("card declined for order {}", o.n));
            }
            l.push("billing", o.n.to_string());
            Ok(())
        }
    })
    .retries(1);
    let l = log.clone();
    let audit = HandlerDef::new("audit", move |e: CloudEvent| {
        let l = l.clone();
        async move {
            use eventbus::cloudevents::AttributesReader;
            l.push("audit", e.ty().to_owned());
        }
    });
    let l = log.clone();
    let on_tick = HandlerDef::new("on_tick", move |_t: Tick, ctx: Context| {
        let l = l.clone();
        async move { l.push("on_tick", ctx.id().to_owned()) }
    });
    let bus = Bus::builder()
        .service("shop")
        .without_registered()
        .retry_policy(fast_retries())
        .handler(shipping)
        .handler(billing)
        .handler(audit)
        .handler(on_tick)
        .schedule(ScheduleDef::every(
            "ticker",
            Duration::from_secs(1),
            || async { Tick {} },
        ))
        .connect(&url)
        .await
        .unwrap();
    let running = bus.spawn();
    bus.publish_batch((0..20).map(|n| OrderPlaced { n }))
        .await
        .unwrap();
    bus.publish_after(OrderPlaced { n: 20 }, Duration::from_millis(500))
        .await
        .unwrap();
    wait_until_async(
        "the orders handled, a tick, the failure retried and dead-lettered",
        || async {
            log.count("shipping") >= 21
                && log.count("on_tick") >= 1
                && bus.dead_letters(10).await.unwrap().len() == 1
        },
    )
    .await;
    fail.store(false, Ordering::SeqCst);
    let dead = bus.dead_letters(10).await.unwrap();
    assert!(bus.replay_dead_letter(&dead[0].id).await.unwrap());
    wait_until("the replayed order is billed", || {
        log.count("billing") >= 21
    })
    .await;
    running.shutdown().await.unwrap();

    let keys: Vec<Vec<String>> = cluster
        .nodes()
        .iter()
        .map(|n| {
            let keys = n.cmd(&["KEYS", "*"]).unwrap();
            keys.lines().map(str::to_owned).collect()
        })
        .collect();
    let holders: Vec<&Vec<String>> = keys.iter().filter(|k| !k.is_empty()).collect();
    assert_eq!(holders.len(), 1, "one node holds every key: {keys:?}");
    assert!(
        holders[0].iter().all(|k| k.starts_with("{eventbus}:")),
        "{keys:?}"
    );
    for key in [
        "{eventbus}:stream:cl.order_placed",
        "{eventbus}:stream:cl.tick",
        "{eventbus}:tick:shop.ticker",
    ] {
        assert!(holders[0].contains(&key.to_owned()), "no {key}: {keys:?}");
    }
}
