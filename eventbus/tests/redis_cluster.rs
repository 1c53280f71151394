//! The bus on a 3-node Redis Cluster that the harness creates
//! (`redis+cluster://...`): Streams delivery to several groups, retries,
//! the dead-letter queue and its replay, a global handler, durable delays
//! and a recurring schedule run by two instances. Every key of one
//! configuration shares a hash tag, so the same code runs as on one server.
#![cfg(feature = "redis")]

#[path = "redis_support/mod.rs"]
mod redis_support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use eventbus::{Bus, CloudEvent, Context, Event, HandlerDef, handler, schedule};
use parking_lot::Mutex;
use redis_support::*;
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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event("cl.reminder")]
struct Reminder {
    id: u32,
}

/// (handler, detail)
#[derive(Default)]
struct Log(Mutex<Vec<(&'static str, String)>>);

impl Log {
    fn push(&self, handler: &'static str, detail: String) {
        self.0.lock().push((handler, detail));
    }
    fn of(&self, handler: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .0
            .lock()
            .iter()
            .filter(|(h, _)| *h == handler)
            .map(|(_, d)| d.clone())
            .collect();
        v.sort();
        v
    }
}

#[schedule(every = "1s")]
async fn cluster_ticker() -> Tick {
    Tick {}
}

#[handler]
async fn on_tick(_t: Tick, ctx: Context) {
    ctx.state::<Arc<Log>>()
        .push("on_tick", ctx.id().to_owned());
}

#[handler]
async fn on_reminder(r: Reminder, ctx: Context) {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    ctx.state::<Arc<Log>>()
        .push("on_reminder", format!("{} {now}", r.id));
}

fn cluster() -> RedisCluster {
    RedisCluster::start(3).expect("start a 3-node Redis Cluster (redis-server, redis-cli)")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_retries_and_the_dlq_on_a_cluster() {
    let cluster = cluster();
    let url = cluster.url();
    assert!(url.starts_with("redis+cluster://"), "{url}");
    let log = Arc::new(Log::default());
    let fail = Arc::new(AtomicBool::new(true));
    let recorder = |name: &'static str| {
        let log = log.clone();
        HandlerDef::new(name, move |o: OrderPlaced| {
            let log = log.clone();
            async move { log.push(name, o.n.to_string()) }
        })
    };
    let (l, f) = (log.clone(), fail.clone());
    let billing = HandlerDef::new("billing", move |o: OrderPlaced, ctx: Context| {
        let (l, f) = (l.clone(), f.clone());
        async move {
            if o.n == 3 && f.load(Ordering::SeqCst) {
                l.push("billing failed", format!("{} {}", o.n, ctx.attempt()));
                return Err(format!("card declined for order {}", o.n));
            }
            l.push("billing", o.n.to_string());
            Ok(())
        }
    })
    .retries(2);
    let l = log.clone();
    let audit = HandlerDef::new("audit", move |e: CloudEvent| {
        let l = l.clone();
        async move {
            use eventbus::cloudevents::AttributesReader;
            l.push("audit", e.ty().to_owned());
        }
    });
    let bus = Bus::builder()
        .service("shop")
        .without_registered()
        .retry_policy(fast_retries())
        .handler(recorder("shipping"))
        .handler(recorder("email"))
        .handler(billing)
        .handler(audit)
        .connect(&url)
        .await
        .unwrap();
    let running = bus.spawn();
    bus.publish_batch((0..20).map(|n| OrderPlaced { n }))
        .await
        .unwrap();
    wait_until_async(
        "every group handled its events, the failure is dead-lettered",
        || async {
            log.of("shipping").len() >= 20
                && log.of("email").len() >= 20
                && log.of("billing").len() >= 19
                && !bus.dead_letters(10).await.unwrap().is_empty()
        },
    )
    .await;
    let all: Vec<String> = {
        let mut v: Vec<String> = (0..20).map(|n| n.to_string()).collect();
        v.sort();
        v
    };
    assert_eq!(log.of("shipping"), all);
    assert_eq!(log.of("email"), all);
    assert_eq!(log.of("billing failed"), ["3 1", "3 2", "3 3"]);

    let dead = bus.dead_letters(10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].group, "shop.billing");
    assert_eq!(dead[0].handler, "billing");
    assert_eq!(dead[0].attempts, 3);
    assert_eq!(dead[0].error, "card declined for order 3");
    assert_eq!(dead[0].event_type.as_deref(), Some("cl.order_placed"));

    fail.store(false, Ordering::SeqCst);
    assert!(bus.replay_dead_letter(&dead[0].id).await.unwrap());
    wait_until("the replayed order is billed", || {
        log.of("billing").len() >= 20
    })
    .await;
    // A type first published now reaches the global handler too.
    let foreign = eventbus::codec::decode_cloudevent(
        br#"{"specversion":"1.0","id":"r-1","type":"cl.refund","source":"/pos","data":{}}"#,
    )
    .unwrap();
    bus.publish_cloudevent(&foreign).await.unwrap();
    wait_until("audit saw the new type", || {
        log.of("audit").iter().any(|t| t == "cl.refund")
    })
    .await;
    running.shutdown().await.unwrap();
    assert_eq!(log.of("billing"), all, "billed once each");
    assert_eq!(log.of("shipping"), all, "the replay went to billing only");
    assert!(bus.dead_letters(10).await.unwrap().is_empty());
    assert_eq!(
        log.of("audit")
            .iter()
            .filter(|t| *t == "cl.order_placed")
            .count(),
        20
    );
    // Every key of the configuration lives on one node (one hash slot).
    let keys: Vec<Vec<String>> = cluster
        .nodes()
        .iter()
        .map(|n| {
            let keys = n.cmd(&["KEYS", "*"]).unwrap();
            keys.lines().map(str::to_owned).collect()
        })
        .collect();
    let holders: Vec<&Vec<String>> = keys.iter().filter(|k| !k.is_empty()).collect();
    assert_eq!(holders.len(), 1, "{keys:?}");
    assert!(
        holders[0].iter().all(|k| k.starts_with("{eventbus}:")),
        "{keys:?}"
    );
    assert!(
        holders[0].contains(&"{eventbus}:stream:cl.order_placed".to_owned()),
        "{keys:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delays_and_a_recurring_schedule_on_a_cluster() {
    let cluster = cluster();
    let url = cluster.url();
    let log = Arc::new(Log::default());
    let connect = || {
        Bus::builder()
            .service("shop")
            .state(log.clone())
            .connect(&url)
    };
    // Two instances running the `every = "1s"` schedule.
    let a = connect().await.unwrap();
    let b = connect().await.unwrap();
    let delay = Duration::from_secs(2);
    let published = SystemTime::now();
    a.publish_after(Reminder { id: 1 }, delay).await.unwrap();
    let started = Instant::now();
    let (ra, rb) = (a.spawn(), b.spawn());
    wait_until("the reminder and three ticks", || {
        !log.of("on_reminder").is_empty() && log.of("on_tick").len() >= 3
    })
    .await;
    ra.shutdown().await.unwrap();
    rb.shutdown().await.unwrap();
    let window = started.elapsed();

    let reminders = log.of("on_reminder");
    assert_eq!(reminders.len(), 1, "{reminders:?}");
    let handled_at: u128 = reminders[0].strip_prefix("1 ").unwrap().parse().unwrap();
    let due = (published + delay)
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    assert!(handled_at + 1 >= due, "handled at {handled_at}, due {due}");

    // Ticks are whole seconds: at most `window + 1` fell into the run.
    let ticks = log.of("on_tick");
    assert!(
        ticks.len() as u64 <= window.as_secs() + 1,
        "{} ticks in {window:?}: a tick fired more than once",
        ticks.len()
    );
    let ids: BTreeSet<&String> = ticks.iter().collect();
    assert_eq!(ids.len(), ticks.len(), "each tick event handled once");
}
