//! Registered (#[handler]) handlers on Redis Streams, against a real
//! `redis-server` per test: deprecations (`replaced_by` upcast, `aliases`,
//! an old producer writing the old stream), and where delayed events and
//! claimed schedule ticks live on the wire. Mirrors `memory_routing.rs`;
//! the transport contract (global handlers, delays, schedules once per
//! tick) is `eventbus-redis/tests/conformance.rs`.
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::support::*;
use eventbus::{Bus, Context, Event, handler, schedule};
use parking_lot::Mutex;
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

#[handler]
async fn on_reminder(e: Reminder, ctx: Context) {
    ctx.state::<Arc<Log>>()
        .push("on_reminder", &ctx, e.id.to_string());
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

/// Delayed events wait in the schedule sorted set (`{eventbus}:schedule`),
/// not in their stream, until a running bus moves them when due.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_events_wait_in_the_schedule_set() {
    let server = server();
    let log = Arc::new(Log::default());
    let bus = connect("rt", &server.url(), &log).await;
    bus.publish_after(Reminder { id: 3 }, Duration::from_secs(2))
        .await
        .unwrap();
    bus.publish_at(
        Reminder { id: 4 },
        SystemTime::now() - Duration::from_secs(5),
    )
    .await
    .unwrap();
    assert_eq!(server.cmd(&["ZCARD", "{eventbus}:schedule"]).unwrap(), "2");
    assert_eq!(
        server.cmd(&["XLEN", &stream_key("rr.reminder")]).unwrap(),
        "0"
    );
    let running = bus.spawn();
    wait_until("both reminders handled", || log.count("on_reminder") >= 2).await;
    running.shutdown().await.unwrap();
    assert_eq!(server.cmd(&["ZCARD", "{eventbus}:schedule"]).unwrap(), "0");
    assert_eq!(
        server.cmd(&["XLEN", &stream_key("rr.reminder")]).unwrap(),
        "2",
        "moved into the stream when due"
    );
}

/// The last claimed tick of a schedule is kept under
/// `{eventbus}:tick:<service>.<schedule>`, as a whole second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claimed_tick_is_kept_under_the_tick_key() {
    let server = server();
    let log = Arc::new(Log::default());
    let bus = connect("rt-sched", &server.url(), &log).await;
    let running = bus.spawn();
    wait_until("a tick handled", || log.count("on_tick") >= 1).await;
    running.shutdown().await.unwrap();
    let last: u64 = server
        .cmd(&["GET", "{eventbus}:tick:rt-sched.ticker"])
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(last % 1000, 0, "the claimed tick is a whole second: {last}");
}
