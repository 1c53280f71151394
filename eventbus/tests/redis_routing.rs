//! Registered (#[handler]) handlers on Redis Streams, against a real
//! `redis-server` per test: deprecations (`replaced_by` upcast, `aliases`),
//! global handlers (including types first published after they started),
//! delayed events and a recurring schedule run by two instances. Mirrors
//! `memory_routing.rs`.
#![cfg(feature = "redis")]

#[path = "redis_support/mod.rs"]
mod redis_support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use eventbus::{Bus, CloudEvent, Context, Event, handler, schedule};
use parking_lot::Mutex;
use redis_support::*;
use serde::{Deserialize, Serialize};

/// Triggered when the review is approved by moderators.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event("rr.review_approved", deprecated = "use rr.moderate_action", replaced_by = ModerateAction)]
pub struct ReviewApproved {
    pub id: u32,
}

/// Triggered when a moderator acts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event("rr.moderate_action")]
pub struct ModerateAction {
    pub id: u32,
    pub status: u8,
    pub model_name: String,
}

impl From<ReviewApproved> for ModerateAction {
    fn from(old: ReviewApproved) -> Self {
        ModerateAction {
            id: old.id,
            status: 1,
            model_name: "Review".into(),
        }
    }
}

/// The user changed in the ID service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event("rr.id_user_changed", aliases = ["rr.sso_user_changed"])]
pub struct IdUserChanged {
    pub action: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event("rr.tick")]
pub struct Tick {
    pub n: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event("rr.reminder")]
pub struct Reminder {
    pub id: u32,
}

/// What the registered handlers saw: (handler, type as published, detail).
#[derive(Default)]
struct Log(Mutex<Vec<(String, String, String)>>);

impl Log {
    fn push(&self, handler: &str, ctx: &Context, detail: String) {
        self.0
            .lock()
            .push((handler.into(), ctx.event_type().to_owned(), detail));
    }
    fn of(&self, handler: &str) -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = self
            .0
            .lock()
            .iter()
            .filter(|(h, _, _)| h == handler)
            .map(|(_, t, d)| (t.clone(), d.clone()))
            .collect();
        v.sort();
        v
    }
    fn count(&self, handler: &str) -> usize {
        self.0
            .lock()
            .iter()
            .filter(|(h, _, _)| h == handler)
            .count()
    }
}

#[handler]
async fn on_moderate_action(e: ModerateAction, ctx: Context) {
    ctx.state::<Arc<Log>>().push(
        "on_moderate_action",
        &ctx,
        format!("{} {} {}", e.id, e.status, e.model_name),
    );
}

#[handler]
async fn on_review_approved(e: ReviewApproved, ctx: Context) {
    ctx.state::<Arc<Log>>()
        .push("on_review_approved", &ctx, e.id.to_string());
}

#[handler]
async fn on_user_changed(e: IdUserChanged, ctx: Context) {
    ctx.state::<Arc<Log>>()
        .push("on_user_changed", &ctx, e.action);
}

/// Records when (epoch ms) the reminder was handled.
#[handler]
async fn on_reminder(e: Reminder, ctx: Context) {
    let now = epoch_ms(SystemTime::now());
    ctx.state::<Arc<Log>>()
        .push("on_reminder", &ctx, format!("{} {now}", e.id));
}

#[handler(all)]
async fn audit(e: CloudEvent, ctx: Context) {
    use eventbus::cloudevents::AttributesReader;
    ctx.state::<Arc<Log>>()
        .push("audit", &ctx, e.id().to_owned());
}

#[schedule(every = "1s")]
async fn ticker() -> Tick {
    Tick { n: 1 }
}

#[handler]
async fn on_tick(_e: Tick, ctx: Context) {
    ctx.state::<Arc<Log>>()
        .push("on_tick", &ctx, ctx.id().to_owned());
}

fn epoch_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

async fn connect(service: &str, url: &str, log: &Arc<Log>) -> Bus {
    Bus::builder()
        .service(service)
        .state(log.clone())
        .connect(url)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaced_by_delivers_old_events_to_new_and_old_handlers() {
    let server = server();
    let log = Arc::new(Log::default());
    let bus = connect("rt", &server.url(), &log).await;
    let running = bus.spawn();
    bus.publish(ReviewApproved { id: 7 }).await.unwrap();
    bus.publish(ModerateAction {
        id: 8,
        status: 2,
        model_name: "Grant".into(),
    })
    .await
    .unwrap();
    wait_until("both handlers saw their events", || {
        log.count("on_moderate_action") >= 2 && log.count("on_review_approved") >= 1
    })
    .await;
    running.shutdown().await.unwrap();
    assert_eq!(
        log.of("on_moderate_action"),
        vec![
            ("rr.moderate_action".into(), "8 2 Grant".into()),
            ("rr.review_approved".into(), "7 1 Review".into()),
        ],
        "the old event reached the new handler through From<ReviewApproved>"
    );
    assert_eq!(
        log.of("on_review_approved"),
        vec![("rr.review_approved".into(), "7".into())]
    );
    // The old type keeps its own stream; the new handler's group reads it too.
    let groups = server
        .cmd(&["XINFO", "GROUPS", &stream_key("rr.review_approved")])
        .unwrap();
    assert!(groups.contains("rt.on_moderate_action"), "{groups}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aliases_decode_old_names_as_the_new_type() {
    let server = server();
    let log = Arc::new(Log::default());
    let bus = connect("rt", &server.url(), &log).await;
    let running = bus.spawn();
    let old = eventbus::codec::decode_cloudevent(
        br#"{"specversion":"1.0","id":"x1","type":"rr.sso_user_changed","source":"/sso","data":{"action":"update"}}"#,
    )
    .unwrap();
    bus.publish_cloudevent(&old).await.unwrap();
    bus.publish(IdUserChanged {
        action: "delete".into(),
    })
    .await
    .unwrap();
    // An old producer writing straight into the old name's stream.
    server
        .cmd(&[
            "XADD",
            &stream_key("rr.sso_user_changed"),
            "*",
            "cloud_event",
            r#"{"specversion":"1.0","id":"x2","type":"rr.sso_user_changed","source":"/sso","data":{"action":"suspend"}}"#,
        ])
        .unwrap();
    wait_until("three user changes handled", || {
        log.count("on_user_changed") >= 3
    })
    .await;
    running.shutdown().await.unwrap();
    assert_eq!(
        log.of("on_user_changed"),
        vec![
            ("rr.id_user_changed".into(), "delete".into()),
            ("rr.sso_user_changed".into(), "suspend".into()),
            ("rr.sso_user_changed".into(), "update".into()),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_handlers_see_every_type_even_ones_first_published_later() {
    let server = server();
    let log = Arc::new(Log::default());
    let bus = connect("rt", &server.url(), &log).await;
    let running = bus.spawn();
    bus.publish(IdUserChanged {
        action: "update".into(),
    })
    .await
    .unwrap();
    wait_until("audit saw the first event", || {
        log.of("audit")
            .iter()
            .any(|(t, _)| t == "rr.id_user_changed")
    })
    .await;
    // The global handler is running; now types nobody published before,
    // through the bus and straight into a new stream by a foreign producer.
    let foreign = eventbus::codec::decode_cloudevent(
        br#"{"specversion":"1.0","id":"f-1","type":"billing.invoice_paid","source":"/billing","data":{"amount":3}}"#,
    )
    .unwrap();
    bus.publish_cloudevent(&foreign).await.unwrap();
    let foreign_2 = eventbus::codec::decode_cloudevent(
        br#"{"specversion":"1.0","id":"f-2","type":"billing.refund","source":"/billing","data":{}}"#,
    )
    .unwrap();
    bus.publish_cloudevent(&foreign_2).await.unwrap();
    bus.publish(Reminder { id: 1 }).await.unwrap();
    wait_until("audit saw the new types", || {
        let types: BTreeSet<String> = log.of("audit").into_iter().map(|(t, _)| t).collect();
        ["billing.invoice_paid", "billing.refund", "rr.reminder"]
            .iter()
            .all(|t| types.contains(*t))
    })
    .await;
    running.shutdown().await.unwrap();
    let seen: BTreeSet<(String, String)> = log.of("audit").into_iter().collect();
    assert!(
        seen.contains(&("billing.invoice_paid".into(), "f-1".into())),
        "{seen:?}"
    );
    assert!(
        seen.contains(&("billing.refund".into(), "f-2".into())),
        "{seen:?}"
    );
    let types: BTreeSet<&str> = seen.iter().map(|(t, _)| t.as_str()).collect();
    assert!(types.contains("rr.reminder"), "{types:?}");
    assert_eq!(log.count("audit"), seen.len(), "each event once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_after_waits_for_the_delay() {
    let server = server();
    let log = Arc::new(Log::default());
    let bus = connect("rt", &server.url(), &log).await;
    let delay = Duration::from_secs(2);
    let before = epoch_ms(SystemTime::now());
    bus.publish_after(Reminder { id: 3 }, delay).await.unwrap();
    bus.publish_at(
        Reminder { id: 4 },
        SystemTime::now() - Duration::from_secs(5),
    )
    .await
    .unwrap();
    // Waiting in the schedule sorted set until a running bus moves them.
    assert_eq!(server.cmd(&["ZCARD", "{eventbus}:schedule"]).unwrap(), "2");
    assert_eq!(
        server.cmd(&["XLEN", &stream_key("rr.reminder")]).unwrap(),
        "0"
    );
    let running = bus.spawn();
    wait_until("both reminders handled", || log.count("on_reminder") >= 2).await;
    running.shutdown().await.unwrap();
    let got = log.of("on_reminder");
    let handled_at = |id: &str| -> u64 {
        got.iter()
            .find_map(|(_, d)| d.strip_prefix(&format!("{id} ")))
            .and_then(|ms| ms.parse().ok())
            .unwrap_or_else(|| panic!("reminder {id} not handled: {got:?}"))
    };
    assert!(
        handled_at("3") >= before + delay.as_millis() as u64,
        "not before the delay: published at {before}, handled at {}",
        handled_at("3")
    );
    let _ = handled_at("4"); // a time in the past: delivered at once
    assert_eq!(got.len(), 2, "each once: {got:?}");
    assert_eq!(server.cmd(&["ZCARD", "{eventbus}:schedule"]).unwrap(), "0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recurring_schedule_fires_once_per_tick_across_two_instances() {
    let server = server();
    let log = Arc::new(Log::default());
    // Two instances of one service, each with its own connection, both
    // running the `every = "1s"` schedule.
    let a = connect("rt-sched", &server.url(), &log).await;
    let b = connect("rt-sched", &server.url(), &log).await;
    let started = Instant::now();
    let (ra, rb) = (a.spawn(), b.spawn());
    wait_until("four ticks handled", || log.count("on_tick") >= 4).await;
    ra.shutdown().await.unwrap();
    rb.shutdown().await.unwrap();
    let window = started.elapsed();
    let ticks = log.of("on_tick");
    // Ticks are aligned to whole seconds: at most `window + 1` of them fell
    // into the run, however slow the machine. Two instances firing each tick
    // would give about twice as many.
    let most = window.as_secs() + 1;
    assert!(
        ticks.len() as u64 <= most,
        "{} ticks in {window:?}: a tick fired more than once",
        ticks.len()
    );
    let ids: BTreeSet<&str> = ticks.iter().map(|(_, id)| id.as_str()).collect();
    assert_eq!(ids.len(), ticks.len(), "each tick event handled once");
    let last: u64 = server
        .cmd(&["GET", "{eventbus}:tick:rt-sched.ticker"])
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(last % 1000, 0, "the claimed tick is a whole second: {last}");
}
