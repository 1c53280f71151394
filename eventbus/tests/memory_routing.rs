//! Registered (#[handler]) handlers, deprecations, global handlers, delays
//! and recurring schedules on the memory transport.

use std::sync::Arc;
use std::time::Duration;

use eventbus::testing::TestBus;
use eventbus::{Bus, CloudEvent, Context, Event, handler, schedule};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

/// Triggered when the review is approved by moderators.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event("rt.review_approved", deprecated = "use rt.moderate_action", replaced_by = ModerateAction)]
pub struct ReviewApproved {
    pub id: u32,
}

/// Triggered when a moderator acts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event("rt.moderate_action")]
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
#[event("rt.id_user_changed", aliases = ["rt.sso_user_changed"])]
pub struct IdUserChanged {
    pub action: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event("rt.tick")]
pub struct Tick {
    pub n: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event("rt.reminder")]
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
        self.0
            .lock()
            .iter()
            .filter(|(h, _, _)| h == handler)
            .map(|(_, t, d)| (t.clone(), d.clone()))
            .collect()
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
    let now = tokio::time::Instant::now();
    ctx.state::<Arc<Log>>()
        .push("on_reminder", &ctx, format!("{} {:?}", e.id, now));
}

#[handler(all)]
async fn audit(e: CloudEvent, ctx: Context) {
    use eventbus::cloudevents::AttributesReader;
    ctx.state::<Arc<Log>>()
        .push("audit", &ctx, e.id().to_owned());
}

#[schedule(every = "10s")]
async fn ticker() -> Tick {
    Tick { n: 1 }
}

#[handler]
async fn on_tick(_e: Tick, ctx: Context) {
    ctx.state::<Arc<Log>>().push("on_tick", &ctx, String::new());
}

async fn start(log: &Arc<Log>) -> TestBus {
    TestBus::start(Bus::builder().service("rt").state(log.clone()))
        .await
        .unwrap()
}

#[tokio::test]
async fn replaced_by_delivers_old_events_to_new_and_old_handlers() {
    let log = Arc::new(Log::default());
    let test = start(&log).await;
    test.bus().publish(ReviewApproved { id: 7 }).await.unwrap();
    test.bus()
        .publish(ModerateAction {
            id: 8,
            status: 2,
            model_name: "Grant".into(),
        })
        .await
        .unwrap();
    test.settle().await;
    let mut got = log.of("on_moderate_action");
    got.sort();
    assert_eq!(
        got,
        vec![
            ("rt.moderate_action".into(), "8 2 Grant".into()),
            ("rt.review_approved".into(), "7 1 Review".into()),
        ]
    );
    assert_eq!(
        log.of("on_review_approved"),
        vec![("rt.review_approved".into(), "7".into())]
    );
    test.stop().await.unwrap();
}

#[tokio::test]
async fn aliases_decode_old_names_as_the_new_type() {
    let log = Arc::new(Log::default());
    let test = start(&log).await;
    let old = eventbus::codec::decode_cloudevent(
        br#"{"specversion":"1.0","id":"x1","type":"rt.sso_user_changed","source":"/sso","data":{"action":"update"}}"#,
    )
    .unwrap();
    test.bus().publish_cloudevent(&old).await.unwrap();
    test.bus()
        .publish(IdUserChanged {
            action: "delete".into(),
        })
        .await
        .unwrap();
    test.settle().await;
    let mut got = log.of("on_user_changed");
    got.sort();
    assert_eq!(
        got,
        vec![
            ("rt.id_user_changed".into(), "delete".into()),
            ("rt.sso_user_changed".into(), "update".into()),
        ]
    );
    test.stop().await.unwrap();
}

#[tokio::test]
async fn global_handlers_see_every_type_even_unknown_ones() {
    let log = Arc::new(Log::default());
    let test = start(&log).await;
    let foreign = eventbus::codec::decode_cloudevent(
        br#"{"specversion":"1.0","id":"f-1","type":"billing.invoice_paid","source":"/billing","data":{"amount":3}}"#,
    )
    .unwrap();
    test.bus().publish_cloudevent(&foreign).await.unwrap();
    test.bus()
        .publish(IdUserChanged {
            action: "update".into(),
        })
        .await
        .unwrap();
    test.settle().await;
    let types: Vec<String> = log.of("audit").into_iter().map(|(t, _)| t).collect();
    assert!(
        types.contains(&"billing.invoice_paid".to_owned()),
        "{types:?}"
    );
    assert!(
        types.contains(&"rt.id_user_changed".to_owned()),
        "{types:?}"
    );
    assert!(log.of("audit").iter().any(|(_, id)| id == "f-1"));
    test.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn publish_after_waits_for_the_delay() {
    let log = Arc::new(Log::default());
    let test = start(&log).await;
    let t0 = tokio::time::Instant::now();
    test.bus()
        .publish_after(Reminder { id: 3 }, Duration::from_secs(3600))
        .await
        .unwrap();
    test.settle().await;
    assert!(log.of("on_reminder").is_empty(), "not before the delay");
    tokio::time::sleep(Duration::from_secs(3599)).await;
    test.settle().await;
    assert!(log.of("on_reminder").is_empty(), "not before the delay");
    tokio::time::sleep(Duration::from_secs(2)).await;
    test.settle().await;
    let got = log.of("on_reminder");
    assert_eq!(got.len(), 1);
    let elapsed = tokio::time::Instant::now() - t0;
    assert!(elapsed >= Duration::from_secs(3600));
    test.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_recurring_schedule_fires_once_per_tick_across_instances() {
    let log = Arc::new(Log::default());
    // Two instances of the service on one shared transport.
    let a = Bus::builder()
        .service("rt-sched")
        .state(log.clone())
        .connect("memory://schedule-test")
        .await
        .unwrap();
    let b = Bus::builder()
        .service("rt-sched")
        .state(log.clone())
        .connect("memory://schedule-test")
        .await
        .unwrap();
    let (ra, rb) = (a.spawn(), b.spawn());
    tokio::time::sleep(Duration::from_secs(65)).await;
    ra.shutdown().await.unwrap();
    rb.shutdown().await.unwrap();
    let ticks = log.of("on_tick").len();
    assert!(
        (6..=7).contains(&ticks),
        "every 10 s for 65 s, once each: got {ticks}"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn publishing_a_deprecated_type_warns_once() {
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().extend_from_slice(b);
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
        .with_max_level(tracing::Level::WARN)
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let bus = Bus::builder()
        .service("rt-warn")
        .without_registered()
        .build()
        .await
        .unwrap();
    for id in 0..3 {
        bus.publish(ReviewApproved { id }).await.unwrap();
    }
    bus.publish(ModerateAction {
        id: 1,
        status: 1,
        model_name: "Review".into(),
    })
    .await
    .unwrap();
    let out = String::from_utf8(buf.0.lock().clone()).unwrap();
    assert_eq!(
        out.matches("deprecated event type `rt.review_approved`")
            .count(),
        1,
        "{out}"
    );
    assert!(
        out.contains("publish `rt.moderate_action` instead"),
        "{out}"
    );
}
