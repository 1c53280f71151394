//! Registered (#[handler]) handlers and deprecations on the memory
//! transport: `replaced_by` upcasts, `aliases`, the deprecation warning.
//! (Global handlers, delays and schedules are the transport contract:
//! `conformance_memory.rs`.)

use std::sync::Arc;

use eventbus::testing::TestBus;
use eventbus::{Bus, Context, Event, handler};
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
