//! What the generated impls do: `TYPE`, `info()`, `subject()`, the
//! `replaced_by` conversion, enums, `crate = path`, and generated handlers and
//! schedules actually running on a bus.

#![deny(warnings)]

extern crate eventbus as renamed;

use std::sync::Mutex;
use std::time::Duration;

use eventbus::testing::TestBus;
use eventbus::{Context, Event, handler, schedule};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use uuid::Uuid;

/// The moderators acted on a record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event("moderate_action", source = "moderation")]
pub struct ModerateAction {
    pub action_id: Uuid,
    pub status: u8,
    pub model_name: String,
    #[event(subject)]
    pub id: Uuid,
}

/// Triggered when the review is approved by moderators.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event("review_approved", deprecated = "use moderate_action", replaced_by = ModerateAction)]
pub struct ReviewApproved {
    pub id: Uuid,
}

impl From<ReviewApproved> for ModerateAction {
    fn from(old: ReviewApproved) -> Self {
        ModerateAction {
            action_id: Uuid::nil(),
            status: 1,
            model_name: "Review".into(),
            id: old.id,
        }
    }
}

/** Block doc comments count too. */
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event("record.change:v2", crate = ::renamed)]
pub struct RecordChanged(#[event(subject)] pub u64, pub String);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[serde(tag = "action", content = "data", rename_all = "snake_case")]
#[event("id_user_changed", aliases = ["sso_user_changed"])]
pub enum UserChanged {
    Update { id: Uuid },
    Delete { id: Uuid },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event("tick")]
pub struct Tick;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event("maybe_about")]
pub struct MaybeAbout {
    #[event(subject)]
    pub about: Option<u64>,
}

#[test]
fn type_and_info() {
    assert_eq!(ModerateAction::TYPE, "moderate_action");
    assert_eq!(ReviewApproved::TYPE, "review_approved");
    assert_eq!(RecordChanged::TYPE, "record.change:v2");
    assert_eq!(UserChanged::TYPE, "id_user_changed");
    assert_eq!(Tick::TYPE, "tick");

    let info = ModerateAction::info();
    assert!(
        std::ptr::eq(info, ModerateAction::info()),
        "info() is one static"
    );
    assert_eq!(info.type_name, ModerateAction::TYPE);
    assert_eq!(info.rust_path, concat!(module_path!(), "::ModerateAction"));
    assert_eq!(info.source, Some("moderation"));
    assert_eq!(info.description, "The moderators acted on a record.");
    assert_eq!(info.subject_field, Some("id"));
    assert!(!info.is_deprecated());

    let info = ReviewApproved::info();
    assert_eq!(info.deprecated, Some("use moderate_action"));
    assert_eq!(info.replaced_by, Some("moderate_action"));
    assert_eq!(info.subject_field, None);

    assert_eq!(
        RecordChanged::info().description,
        "Block doc comments count too."
    );
    assert_eq!(RecordChanged::info().subject_field, Some("0"));
    assert_eq!(UserChanged::info().aliases, ["sso_user_changed"]);
    assert_eq!(UserChanged::info().description, "");
    assert_eq!(Tick::info().upcast.map(|_| ()), None);
}

#[test]
fn subject_displays_the_marked_field() {
    let id = Uuid::now_v7();
    let action = ModerateAction {
        action_id: Uuid::nil(),
        status: 2,
        model_name: "Review".into(),
        id,
    };
    assert_eq!(
        action.subject().map(|s| s.to_string()),
        Some(id.to_string())
    );
    let record = RecordChanged(42, "Review".into());
    assert_eq!(
        record.subject().map(|s| s.to_string()).as_deref(),
        Some("42")
    );
    assert!(ReviewApproved { id }.subject().is_none());
    let about = MaybeAbout { about: Some(5) };
    assert_eq!(about.subject().map(|s| s.to_string()).as_deref(), Some("5"));
    assert!(MaybeAbout { about: None }.subject().is_none());
    assert!(UserChanged::Delete { id }.subject().is_none());
}

#[test]
fn schema_describes_the_data() {
    let schema = (ModerateAction::info().schema)();
    let properties = schema["properties"].as_object().expect("an object schema");
    let mut names: Vec<_> = properties.keys().map(String::as_str).collect();
    names.sort_unstable();
    assert_eq!(names, ["action_id", "id", "model_name", "status"]);
    let schema = (UserChanged::info().schema)();
    assert!(schema.get("oneOf").is_some(), "{schema}");
}

#[test]
fn replaced_by_converts_old_data_into_the_new_type() {
    let upcast = ReviewApproved::info()
        .upcast
        .expect("replaced_by sets the conversion");
    let id = Uuid::now_v7();
    let raw = RawValue::from_string(format!(r#"{{"id":"{id}","extra":true}}"#)).unwrap();
    let new = upcast(&raw).expect("old data decodes");
    let new = new
        .downcast::<ModerateAction>()
        .expect("the conversion yields the new type");
    assert_eq!(*new, ModerateAction::from(ReviewApproved { id }));

    let bad = RawValue::from_string(r#"{"id":42}"#.into()).unwrap();
    let err = upcast(&bad).expect_err("a wrong payload is an error");
    assert!(err.to_string().contains("review_approved"), "{err}");
}

#[test]
fn enums_round_trip() {
    let id = Uuid::now_v7();
    let json = serde_json::to_string(&UserChanged::Delete { id }).unwrap();
    assert_eq!(
        json,
        format!(r#"{{"action":"delete","data":{{"id":"{id}"}}}}"#)
    );
    let back: UserChanged = serde_json::from_str(&json).unwrap();
    assert_eq!(back, UserChanged::Delete { id });
}

static SEEN: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn seen(entry: String) {
    SEEN.lock().unwrap().push(entry);
}

#[handler(group = "expand.moderation", retries = 0)]
async fn on_moderate_action(action: ModerateAction, ctx: Context) -> anyhow::Result<()> {
    seen(format!(
        "moderate_action {} {} attempt {}",
        action.status,
        action.model_name,
        ctx.attempt()
    ));
    Ok(())
}

#[handler]
async fn on_review_approved(event: ReviewApproved) {
    seen(format!("review_approved {}", event.id == Uuid::nil()));
}

#[handler]
async fn on_user_changed(event: UserChanged) -> Result<(), std::io::Error> {
    let what = match event {
        UserChanged::Update { .. } => "update",
        UserChanged::Delete { .. } => "delete",
    };
    seen(format!("id_user_changed {what}"));
    Ok(())
}

#[handler(crate = ::renamed)]
async fn on_record_changed(event: RecordChanged) {
    seen(format!("record.change:v2 {}", event.0));
}

#[schedule(every = "1h", crate = renamed)]
fn hourly_tick() -> Tick {
    Tick
}

#[schedule(cron = "0 0 * * *", name = "daily.record")]
async fn daily() -> anyhow::Result<RecordChanged> {
    Ok(RecordChanged(7, "Review".into()))
}

/// One test drives the bus, so that the handlers' log is its own.
#[tokio::test(start_paused = true)]
async fn generated_handlers_and_schedules_run_on_the_bus() -> eventbus::Result<()> {
    let test = TestBus::new().await?;
    let bus = test.bus();

    bus.publish(ReviewApproved { id: Uuid::nil() }).await?;
    test.settle().await;
    let mut got = std::mem::take(&mut *SEEN.lock().unwrap());
    got.sort();
    assert_eq!(
        got,
        ["moderate_action 1 Review attempt 1", "review_approved true"],
        "the old type reaches its own handler as is and the new type's handler converted"
    );

    bus.publish(UserChanged::Update { id: Uuid::nil() }).await?;
    bus.publish(RecordChanged(9, "x".into())).await?;
    test.settle().await;
    let mut got = std::mem::take(&mut *SEEN.lock().unwrap());
    got.sort();
    assert_eq!(got, ["id_user_changed update", "record.change:v2 9"]);

    // A day on the paused clock: 24 hourly ticks and one daily one.
    for _ in 0..24 {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        test.settle().await;
    }
    let ticks = test
        .published_types()
        .iter()
        .filter(|t| *t == "tick")
        .count();
    assert!((23..=25).contains(&ticks), "{ticks} ticks in a day");
    assert_eq!(
        test.published_of::<RecordChanged>().last(),
        Some(&RecordChanged(7, "Review".into()))
    );

    let registry = bus.registry();
    let schedules: Vec<_> = registry
        .schedules()
        .iter()
        .map(|s| (s.name, s.event_type))
        .collect();
    assert_eq!(
        schedules,
        [
            ("daily.record", "record.change:v2"),
            ("hourly_tick", "tick")
        ]
    );
    test.stop().await
}
