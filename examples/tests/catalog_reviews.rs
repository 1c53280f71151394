//! The committed catalogue of the reviews example (`examples/reviews/docs/`)
//! is what its code generates, stays compatible, validates as AsyncAPI, and
//! says what the hand-written catalogue it replaces said.
//!
//! Regenerate it after changing an event or handler:
//! `EVENTBUS_BLESS=1 cargo test -p examples --test catalog_reviews`
//! (or `cargo run --example reviews -- docs --out-dir examples/reviews/docs`).

use std::path::{Path, PathBuf};

use eventbus_catalog::{Catalog, Format};

// The whole example, so that this binary registers exactly its events,
// handlers and schedules.
#[path = "../reviews.rs"]
#[allow(dead_code)]
mod reviews;

#[path = "../../eventbus-catalog/tests/catalog/support.rs"]
mod support;

fn docs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("reviews/docs")
}

fn catalog() -> Catalog {
    Catalog::global("reviews").expect("the reviews registry is valid")
}

#[test]
fn committed_catalogue_is_up_to_date() {
    eventbus_catalog::assert_up_to_date(&catalog(), docs_dir());
}

#[test]
fn committed_asyncapi_validates() {
    let dir = docs_dir();
    let json = dir.join(Format::AsyncApiJson.file_name());
    let yaml = dir.join(Format::AsyncApiYaml.file_name());
    support::validate_asyncapi(&[&json, &yaml]);
    support::assert_yaml_equals_json(&yaml, &json);
}

/// DESIGN.md, "Who uses it": the hand-written catalogue this one replaces.
#[test]
fn markdown_says_what_the_hand_written_catalogue_said() {
    let md = catalog().to_markdown();
    let rows = [
        ("review_created", r#"`{"id": uuid}`"#),
        ("review_approved", r#"`{"id": uuid}`"#),
        (
            "moderate_action",
            r#"`{"action_id": uuid, "status": 1 \| 2, "model_name": string, "id": uuid}`"#,
        ),
        ("record_create", r#"`{"id": uuid, "model_name": string}`"#),
        ("record_change", r#"`{"id": uuid, "model_name": string}`"#),
        ("record_delete", r#"`{"id": uuid, "model_name": string}`"#),
        (
            "id_user_changed",
            r#"`{"data": {"id": uuid}, "action": "update" \| "delete"}`"#,
        ),
        ("grant_published", r#"`{"id": uuid}`"#),
        ("user_applied", r#"`{"id": uuid}`"#),
        ("winners_announcement", r#"`{"id": uuid}`"#),
        ("user_survey_finished", r#"`{"id": uuid}`"#),
    ];
    for (ty, payload) in rows {
        let row = format!("| [`{ty}`](#{ty}) | {payload} |");
        assert!(md.contains(&row), "missing `{row}` in:\n{md}");
        assert!(
            md.contains(&format!("\n## `{ty}`\n")),
            "no section for {ty}"
        );
    }
    // The two deprecations.
    assert!(md.contains("> **Deprecated, use `moderate_action` instead.**"));
    assert!(md.contains(
        "| also accepted as `type` | `sso_user_changed` (old names, decoded as `id_user_changed`) |"
    ));
    assert!(md.contains("Also accepted as `sso_user_changed`."));
    // Status 1 approved, 2 rejected.
    assert!(md.contains("| `status` | `1 \\| 2` | yes | 1 approved, 2 rejected. |"));
    // The task queues.
    assert!(md.contains(
        "| `sms_send_queue` | `send_short_message` | [`send_short_message`](#send_short_message) | 5 | 8 |"
    ));
    assert!(md.contains("| `send_email_task` | `send_email_task` |"));
    assert!(md.contains("| `send_notification` | `send_notification` |"));
    // The example payload of moderate_action, as the wiki had it.
    let c = catalog();
    let example = &c.event("moderate_action").unwrap().example;
    assert_eq!(example["status"], 1);
    assert_eq!(example["model_name"], "Review");
}
