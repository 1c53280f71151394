//! The Markdown catalogue (and the catalogue data behind it): deprecations,
//! aliases, handlers with their groups and retries, schedules, field
//! descriptions, examples, determinism, and the `docs` command line.
//!
//! Everything registered with the macros in this module forms one consistent
//! registry, read as `Registry::global()` reads it (see
//! [`support::registry_of`]).

use std::time::Duration;

use eventbus::registry::Registry;
use eventbus::{CloudEvent, Context, Event, ScheduleDef, handler, schedule};
use eventbus::{DEFAULT_CONCURRENCY, DEFAULT_RETRIES};
use eventbus_catalog::{Catalog, Format, assert_up_to_date, cli};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::support;

/// Triggered when the review is created.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event("review_created", source = "reviews")]
pub struct ReviewCreated {
    /// The review.
    #[event(subject)]
    pub id: Uuid,
}

/// Triggered when the review is approved by moderators.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event("review_approved", deprecated = "use moderate_action", replaced_by = ModerateAction)]
pub struct ReviewApproved {
    /// The review.
    pub id: Uuid,
}

/// What a moderator decided.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// The object is published.
    Approved,
    /// The object is hidden.
    Rejected,
}

/// Triggered when a moderator approves or rejects an object.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event("moderate_action")]
pub struct ModerateAction {
    /// The moderated object.
    pub id: Uuid,
    /// The moderator's decision.
    pub verdict: Verdict,
    /// The moderated model, e.g. `Review`.
    pub model_name: String,
    /// Why, when the moderator said.
    #[schemars(example = &"spam")]
    pub reason: Option<String>,
}

impl From<ReviewApproved> for ModerateAction {
    fn from(old: ReviewApproved) -> Self {
        ModerateAction {
            id: old.id,
            verdict: Verdict::Approved,
            model_name: "Review".into(),
            reason: None,
        }
    }
}

/// A user of the ID service.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct UserRef {
    /// The user.
    pub id: Uuid,
}

/// Triggered when the user is changed in the ID service.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event("id_user_changed", aliases = ["sso_user_changed"])]
pub struct IdUserChanged {
    /// The user.
    pub data: UserRef,
    /// Labels of the change.
    pub tags: Vec<String>,
}

/// A ping nobody sends any more.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event("legacy_ping", deprecated = "nobody sends it since v3")]
pub struct LegacyPing {
    /// A counter.
    pub n: u32,
}

/// Job: send a text message.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event("send_short_message")]
pub struct SendShortMessage {
    /// Recipient, E.164.
    pub phone: String,
    /// Text.
    pub text: String,
}

/// Time to publish the weekly statistics.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event("stats_due")]
pub struct StatsDue {
    /// When the tick fired (Unix ms).
    pub tick_ms: u64,
}

#[handler]
async fn on_review_created(_event: ReviewCreated, _ctx: Context) {}

#[handler]
async fn on_moderate_action(_event: ModerateAction) {}

#[handler(retries = 1)]
async fn on_id_user_changed(_event: IdUserChanged) {}

#[handler(group = "sms_send_queue", retries = 7, concurrency = 8)]
async fn send_short_message(_job: SendShortMessage) {}

#[handler(all)]
async fn audit(_event: CloudEvent) {}

#[schedule(cron = "0 9 * * MON")]
fn weekly_stats() -> StatsDue {
    StatsDue { tick_ms: 0 }
}

#[schedule(cron = "0 9 * * MON", tz = "Europe/Berlin")]
fn weekly_stats_berlin() -> StatsDue {
    StatsDue { tick_ms: 0 }
}

fn catalog() -> Catalog {
    Catalog::from_registry(&support::registry_of(module_path!()), "reviews")
}

fn section<'a>(md: &'a str, ty: &str) -> &'a str {
    let start = md
        .find(&format!("\n## `{ty}`\n"))
        .unwrap_or_else(|| panic!("no section for `{ty}` in:\n{md}"));
    let rest = &md[start + 1..];
    let end = rest[3..].find("\n## ").map_or(rest.len(), |i| i + 4);
    &rest[..end]
}

fn assert_contains(haystack: &str, needle: &str) {
    assert!(
        haystack.contains(needle),
        "expected to find\n{needle}\nin\n{haystack}"
    );
}

#[test]
fn deprecations_say_what_to_use_instead() {
    let md = catalog().to_markdown();
    let approved = section(&md, "review_approved");
    assert_contains(approved, "> **Deprecated, use `moderate_action` instead.**");
    assert_contains(
        approved,
        "Handlers of [`moderate_action`](#moderate_action) receive it too, converted to `moderate_action`.",
    );
    assert_contains(
        approved,
        "- `on_moderate_action`, converted to [`moderate_action`](#moderate_action): group `reviews.on_moderate_action`",
    );
    // The note "use moderate_action" says nothing more than the replacement.
    assert!(!approved.contains("Use moderate_action"), "{approved}");

    let ping = section(&md, "legacy_ping");
    assert_contains(ping, "> **Deprecated: nobody sends it since v3.**");

    assert_contains(
        &md,
        "| [`review_approved`](#review_approved) | `{\"id\": uuid}` | Triggered when the review is approved by moderators. **Deprecated, use `moderate_action` instead.** |",
    );
    assert!(!section(&md, "moderate_action").contains("Deprecated"));
}

#[test]
fn aliases_are_listed_as_accepted_names() {
    let md = catalog().to_markdown();
    let changed = section(&md, "id_user_changed");
    assert_contains(
        changed,
        "| also accepted as `type` | `sso_user_changed` (old names, decoded as `id_user_changed`) |",
    );
    assert_contains(&md, "Also accepted as `sso_user_changed`.");
    assert_contains(
        &md,
        "| `reviews.on_id_user_changed` | `on_id_user_changed` | [`id_user_changed`](#id_user_changed), `sso_user_changed` (old name) | 1 | 16 |",
    );
}

#[test]
fn handlers_show_their_groups_retries_and_concurrency() {
    let md = catalog().to_markdown();
    assert_contains(
        &md,
        "| `sms_send_queue` | `send_short_message` | [`send_short_message`](#send_short_message) | 7 | 8 |",
    );
    assert_contains(
        &md,
        &format!(
            "| `reviews.on_review_created` | `on_review_created` | [`review_created`](#review_created) | {DEFAULT_RETRIES} | {DEFAULT_CONCURRENCY} |"
        ),
    );
    assert_contains(
        &md,
        "| `reviews.on_moderate_action` | `on_moderate_action` | [`moderate_action`](#moderate_action), [`review_approved`](#review_approved) (converted) |",
    );
    assert_contains(&md, "| `reviews.audit` | `audit` | every event (global) |");

    let sms = section(&md, "send_short_message");
    assert_contains(
        sms,
        "- `send_short_message`: group `sms_send_queue`, 7 retries, concurrency 8",
    );
    assert_contains(
        sms,
        "- `audit` (global, every event): group `reviews.audit`",
    );
    assert_contains(
        section(&md, "id_user_changed"),
        "- `on_id_user_changed`: group `reviews.on_id_user_changed`, 1 retry, concurrency 16",
    );
    // Groups are sorted.
    let c = catalog();
    let groups: Vec<&str> = c.handlers.iter().map(|h| h.group.as_str()).collect();
    let mut sorted = groups.clone();
    sorted.sort();
    assert_eq!(groups, sorted);
}

#[test]
fn schedules_show_when_and_what_they_publish() {
    let md = catalog().to_markdown();
    assert_contains(
        &md,
        "| `weekly_stats` | cron `0 9 * * MON` (UTC) | [`stats_due`](#stats_due) |",
    );
    assert_contains(
        section(&md, "stats_due"),
        "**Published by schedule**\n\n- `weekly_stats`: cron `0 9 * * MON` (UTC)",
    );
    let c = catalog();
    assert!(
        c.event("stats_due").unwrap().published,
        "a schedule publishes it"
    );
    assert!(
        c.event("review_created").unwrap().published,
        "its source is the service"
    );
    assert!(!c.event("moderate_action").unwrap().published);
}

#[test]
fn schedules_name_their_time_zone() {
    let md = catalog().to_markdown();
    assert_contains(
        &md,
        "| `weekly_stats_berlin` | cron `0 9 * * MON` (Europe/Berlin) | [`stats_due`](#stats_due) |",
    );
    assert_contains(
        section(&md, "stats_due"),
        "- `weekly_stats`: cron `0 9 * * MON` (UTC)\n- `weekly_stats_berlin`: cron `0 9 * * MON` (Europe/Berlin)\n",
    );
    let c = catalog();
    let zones: Vec<(&str, Option<&str>, &str)> = c
        .schedules
        .iter()
        .map(|s| (s.name.as_str(), s.tz.as_deref(), s.when.as_str()))
        .collect();
    assert_eq!(
        zones,
        [
            ("weekly_stats", None, "cron 0 9 * * MON (UTC)"),
            (
                "weekly_stats_berlin",
                Some("Europe/Berlin"),
                "cron 0 9 * * MON (Europe/Berlin)"
            ),
        ]
    );
    let json = c.to_json();
    assert_contains(&json, "\"tz\": \"Europe/Berlin\"");
    assert_eq!(
        json.matches("\"tz\"").count(),
        1,
        "UTC is the default: {json}"
    );
    assert_eq!(Catalog::from_json(&json).unwrap(), c);
    let asyncapi = c.to_asyncapi();
    let schedules = &asyncapi["operations"]["publish.stats_due"]["x-eventbus-schedules"];
    assert_eq!(schedules[1]["tz"], "Europe/Berlin");
    assert!(schedules[0].get("tz").is_none(), "{schedules}");
}

/// Schedules made at run time (`ScheduleDef::every`, `ScheduleDef::cron`,
/// e.g. from configuration) are described like the macro's.
#[test]
fn schedules_from_configuration_are_listed_too() {
    let every = ScheduleDef::every("hourly_stats", Duration::from_secs(90 * 60), || async {
        StatsDue { tick_ms: 0 }
    });
    let cron = ScheduleDef::cron(
        "nightly_stats",
        "0 2 * * *",
        Some("Europe/Berlin"),
        || async { StatsDue { tick_ms: 0 } },
    )
    .unwrap();
    let registry = Registry::build(vec![StatsDue::info()], vec![], vec![every, cron]).unwrap();
    let c = Catalog::from_registry(&registry, "reviews");
    let listed: Vec<_> = c
        .schedules
        .iter()
        .map(|s| {
            (
                s.name.as_str(),
                s.every.as_deref(),
                s.cron.as_deref(),
                s.tz.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        listed,
        [
            ("hourly_stats", Some("1h 30m"), None, None),
            (
                "nightly_stats",
                None,
                Some("0 2 * * *"),
                Some("Europe/Berlin")
            ),
        ]
    );
    let md = c.to_markdown();
    assert_contains(
        &md,
        "| `hourly_stats` | every 1h 30m | [`stats_due`](#stats_due) |",
    );
    assert_contains(
        &md,
        "| `nightly_stats` | cron `0 2 * * *` (Europe/Berlin) | [`stats_due`](#stats_due) |",
    );
    assert!(c.event("stats_due").unwrap().published);
}

#[test]
fn cloudevents_attributes_are_listed() {
    let md = catalog().to_markdown();
    let created = section(&md, "review_created");
    assert_contains(created, "| `type` | `review_created` |");
    assert_contains(
        created,
        "| `source` | `/reviews` when published by `reviews` |",
    );
    assert_contains(created, "| `subject` | the `id` field of the data |");
    assert_contains(created, "| Rust type | `ReviewCreated` |");
    assert!(!section(&md, "moderate_action").contains("| `subject` |"));
}

#[test]
fn fields_come_with_their_doc_comments() {
    let md = catalog().to_markdown();
    let action = section(&md, "moderate_action");
    assert_contains(
        action,
        "Triggered when a moderator approves or rejects an object.",
    );
    assert_contains(
        action,
        "**Payload** (`data`): `{\"id\": uuid, \"verdict\": \"approved\" | \"rejected\", \"model_name\": string, \"reason\"?: string | null}`",
    );
    assert_contains(action, "| `id` | `uuid` | yes | The moderated object. |");
    assert_contains(
        action,
        "| `verdict` | `\"approved\" \\| \"rejected\"` | yes | The moderator's decision. `approved`: The object is published. `rejected`: The object is hidden. |",
    );
    assert_contains(
        action,
        "| `reason` | `string \\| null` | no | Why, when the moderator said. |",
    );

    let changed = section(&md, "id_user_changed");
    assert_contains(changed, "| `data` | `UserRef` | yes | The user. |");
    assert_contains(changed, "| `data.id` | `uuid` | yes | The user. |");
    assert_contains(
        changed,
        "| `tags` | `[string]` | yes | Labels of the change. |",
    );
}

#[test]
fn examples_use_given_examples_and_follow_field_order() {
    let c = catalog();
    let action = c.event("moderate_action").unwrap();
    assert_eq!(
        action.example["reason"], "spam",
        "#[schemars(example)] wins"
    );
    assert_eq!(
        action.example["model_name"], "Review",
        "from `e.g. `Review`` in the doc"
    );
    assert_eq!(action.example["verdict"], "approved");
    assert!(Uuid::parse_str(action.example["id"].as_str().unwrap()).is_ok());
    // The example decodes as the Rust type: it is valid data.
    let decoded: ModerateAction = serde_json::from_value(action.example.clone()).unwrap();
    assert_eq!(decoded.model_name, "Review");
    for e in &c.events {
        let ok = match e.type_name.as_str() {
            "review_created" => serde_json::from_value::<ReviewCreated>(e.example.clone()).is_ok(),
            "review_approved" => {
                serde_json::from_value::<ReviewApproved>(e.example.clone()).is_ok()
            }
            "id_user_changed" => serde_json::from_value::<IdUserChanged>(e.example.clone()).is_ok(),
            "legacy_ping" => serde_json::from_value::<LegacyPing>(e.example.clone()).is_ok(),
            "send_short_message" => {
                serde_json::from_value::<SendShortMessage>(e.example.clone()).is_ok()
            }
            "stats_due" => serde_json::from_value::<StatsDue>(e.example.clone()).is_ok(),
            _ => true,
        };
        assert!(
            ok,
            "the example of {} does not decode: {}",
            e.type_name, e.example
        );
    }

    let md = c.to_markdown();
    let section = section(&md, "moderate_action");
    let id = section.find("  \"id\":").unwrap();
    let verdict = section.find("  \"verdict\":").unwrap();
    let model = section.find("  \"model_name\":").unwrap();
    assert!(
        id < verdict && verdict < model,
        "struct order in the example:\n{section}"
    );
}

#[test]
fn summary_table_lists_every_type_sorted() {
    let c = catalog();
    let md = c.to_markdown();
    let types: Vec<&str> = c.events.iter().map(|e| e.type_name.as_str()).collect();
    assert_eq!(
        types,
        [
            "id_user_changed",
            "legacy_ping",
            "moderate_action",
            "review_approved",
            "review_created",
            "send_short_message",
            "stats_due"
        ]
    );
    let mut last = 0;
    for ty in types {
        let row = md
            .find(&format!("| [`{ty}`](#{ty}) |"))
            .unwrap_or_else(|| panic!("no row for {ty}"));
        assert!(row > last, "rows are sorted");
        last = row;
    }
    assert_contains(
        &md,
        "| [`id_user_changed`](#id_user_changed) | `{\"data\": {\"id\": uuid}, \"tags\": [string]}` |",
    );
}

#[test]
fn output_does_not_depend_on_registration_order() {
    let events = || {
        vec![
            ReviewCreated::info(),
            ReviewApproved::info(),
            ModerateAction::info(),
            IdUserChanged::info(),
            LegacyPing::info(),
            SendShortMessage::info(),
            StatsDue::info(),
        ]
    };
    let mut reversed = events();
    reversed.reverse();
    let a = Catalog::from_registry(&Registry::build(events(), vec![], vec![]).unwrap(), "svc");
    let b = Catalog::from_registry(&Registry::build(reversed, vec![], vec![]).unwrap(), "svc");
    for format in Format::FILES {
        assert_eq!(a.render(format), b.render(format), "{format}");
    }
    assert_eq!(catalog().to_markdown(), catalog().to_markdown());
}

#[test]
fn the_json_catalogue_reads_back() {
    let c = catalog().with_version("1.2.3");
    let back = Catalog::from_json(&c.to_json()).unwrap();
    assert_eq!(back, c);
    assert_eq!(back.to_json(), c.to_json());
    let err = Catalog::from_json(r#"{"format": "something-else"}"#).unwrap_err();
    assert!(
        err.to_string().contains("not an eventbus catalogue"),
        "{err}"
    );
}

#[test]
fn the_docs_command_prints_each_format() {
    let c = catalog();
    let run = |args: &[&str]| {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = cli(&c, args.iter().copied(), &mut out, &mut err);
        (
            code,
            String::from_utf8(out).unwrap(),
            String::from_utf8(err).unwrap(),
        )
    };
    let (code, md, _) = run(&[]);
    assert_eq!(code, 0);
    assert_eq!(md, c.to_markdown());
    for (name, format) in [
        ("markdown", Format::Markdown),
        ("asyncapi", Format::AsyncApiJson),
        ("asyncapi-yaml", Format::AsyncApiYaml),
        ("json", Format::Json),
        ("json-schema", Format::JsonSchema),
    ] {
        let (code, out, err) = run(&["--format", name]);
        assert_eq!((code, err.as_str()), (0, ""));
        assert_eq!(out, c.render(format), "{name}");
    }
    let (code, out, _) = run(&["--format=asyncapi", "--api-version", "2.0.1"]);
    assert_eq!(code, 0);
    assert!(out.contains("\"version\": \"2.0.1\""), "{out}");

    let (code, out, _) = run(&["--format", "json-schema", "--event", "moderate_action"]);
    assert_eq!(code, 0);
    let schema: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(schema, c.event("moderate_action").unwrap().schema);
    assert_eq!(
        schema["properties"]["id"]["description"],
        "The moderated object."
    );
    let (code, _, err) = run(&["--format", "json-schema", "--event", "nope"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("no event type `nope` in `reviews`; it has: id_user_changed,"),
        "{err}"
    );

    let (code, out, _) = run(&["--help"]);
    assert_eq!(code, 0);
    assert!(out.contains("--check <FILE>"), "{out}");
    let (code, _, err) = run(&["--format", "pdf"]);
    assert_eq!(code, 2);
    assert!(
        err.contains(
            "unknown format `pdf`; expected one of: markdown, asyncapi, asyncapi-yaml, json, json-schema"
        ),
        "{err}"
    );
    let (code, _, err) = run(&["--bogus"]);
    assert_eq!(code, 2);
    assert!(err.contains("unexpected argument `--bogus`"), "{err}");

    let dir = support::TempDir::new("docs-cli");
    let out_dir = dir.path().join("docs");
    let (code, _, err) = run(&["--out-dir", out_dir.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    for format in Format::FILES {
        let written = std::fs::read_to_string(out_dir.join(format.file_name())).unwrap();
        assert_eq!(written, c.render(format));
    }
    assert_up_to_date(&c, &out_dir);
}
