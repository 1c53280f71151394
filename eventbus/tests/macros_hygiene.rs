//! The macros expand to fully qualified paths: a module that shadows the
//! prelude (`Result`, `Ok`, `Option`, `Box`, `String`, ...) and `core` still
//! uses all three, and what they register is complete.

#![deny(warnings, unused_qualifications)]

mod shadowed {
    #![allow(dead_code, unused_macros)]

    // Everything the generated code could have named unqualified.
    pub struct Result;
    pub struct Ok;
    pub struct Err;
    pub struct Box;
    pub struct Option;
    pub struct Some;
    pub struct None;
    pub struct String;
    pub struct Vec;
    pub struct From;
    pub struct Into;
    pub struct Send;
    pub struct Sync;
    pub struct Fn;
    pub struct Display;
    pub struct Event;
    pub struct Context;
    pub struct EventInfo;
    pub struct HandlerDef;
    pub trait Future {}
    mod core {}
    mod inventory {}
    mod serde {}
    mod __private {}
    macro_rules! concat {
        ($($t:tt)*) => {
            "shadowed concat!"
        };
    }
    macro_rules! module_path {
        () => {
            "shadowed module_path!"
        };
    }
    macro_rules! submit {
        ($($t:tt)*) => {};
    }

    use ::eventbus::{handler, schedule};
    use ::serde::{Deserialize, Serialize};

    /// Triggered when the review is published.
    #[derive(
        Debug, Clone, PartialEq, Serialize, Deserialize, ::schemars::JsonSchema, ::eventbus::Event,
    )]
    #[event("review_published", source = "reviews")]
    pub struct ReviewPublished {
        #[event(subject)]
        pub id: ::uuid::Uuid,
        pub by_moderator: bool,
    }

    /// Triggered when the review is created.
    ///
    /// Carries the id of the review only; fetch the rest.
    #[derive(Debug, Clone, Serialize, Deserialize, ::schemars::JsonSchema, ::eventbus::Event)]
    #[event(
        "review_created",
        source = "reviews",
        deprecated = "use review_published",
        replaced_by = ReviewPublished,
        aliases = ["review_added", "reviews.created:v0"],
    )]
    pub struct ReviewCreated {
        #[event(subject)]
        pub id: ::uuid::Uuid,
    }

    impl ::core::convert::From<ReviewCreated> for ReviewPublished {
        fn from(old: ReviewCreated) -> Self {
            ReviewPublished {
                id: old.id,
                by_moderator: false,
            }
        }
    }

    /// The action on a user account.
    #[derive(Debug, Clone, Serialize, Deserialize, ::schemars::JsonSchema, ::eventbus::Event)]
    #[event("id_user_changed")]
    pub enum UserChanged {
        Update { id: u64 },
        Delete { id: u64 },
    }

    #[handler(group = "reviews.published", retries = 3, concurrency = 2)]
    pub async fn on_review_published(
        event: ReviewPublished,
        ctx: ::eventbus::Context,
    ) -> ::core::result::Result<(), ::std::io::Error> {
        let _ = (event, ctx);
        ::core::result::Result::Ok(())
    }

    #[handler]
    async fn on_user_changed(event: UserChanged) {
        let _ = event;
    }

    #[handler(all)]
    pub(crate) async fn audit(event: ::eventbus::CloudEvent) -> ::anyhow::Result<()> {
        let _ = event;
        ::core::result::Result::Ok(())
    }

    #[schedule(every = "1h")]
    async fn hourly_publish() -> ReviewPublished {
        ReviewPublished {
            id: ::uuid::Uuid::nil(),
            by_moderator: true,
        }
    }

    #[schedule(cron = "0 9 * * MON", name = "weekly_user_sync")]
    fn weekly() -> ::core::result::Result<UserChanged, ::std::string::String> {
        ::core::result::Result::Ok(UserChanged::Update { id: 1 })
    }
}

use eventbus::Event;
use eventbus::registry::Registry;
use eventbus::schedule::When;
use shadowed::{ReviewCreated, ReviewPublished, UserChanged};

#[test]
fn event_info_comes_from_the_attribute_and_the_docs() {
    let info = ReviewCreated::info();
    assert_eq!(info.type_name, "review_created");
    assert_eq!(info.rust_path, "macros_hygiene::shadowed::ReviewCreated");
    assert_eq!(info.source, Some("reviews"));
    assert_eq!(
        info.description,
        "Triggered when the review is created.\n\nCarries the id of the review only; fetch the rest."
    );
    assert_eq!(info.deprecated, Some("use review_published"));
    assert_eq!(info.replaced_by, Some("review_published"));
    assert_eq!(info.aliases, ["review_added", "reviews.created:v0"]);
    assert_eq!(info.subject_field, Some("id"));
    assert!(info.upcast.is_some());
    assert!(info.is_deprecated());

    let info = ReviewPublished::info();
    assert_eq!(info.description, "Triggered when the review is published.");
    assert_eq!(
        (info.deprecated, info.replaced_by, info.upcast.is_none()),
        (None, None, true)
    );
    assert!(info.aliases.is_empty());

    let info = UserChanged::info();
    assert_eq!(info.source, None);
    assert_eq!(info.subject_field, None);
}

#[test]
fn registry_lists_events_handlers_and_schedules() {
    let registry = Registry::global().expect("the registry of this test is consistent");

    let events: Vec<_> = registry.events().map(|e| e.type_name).collect();
    assert_eq!(
        events,
        ["id_user_changed", "review_created", "review_published"]
    );
    assert_eq!(
        registry.event("review_added").map(|e| e.type_name),
        Some("review_created")
    );

    let handlers: Vec<_> = registry
        .handlers()
        .map(|h| {
            let m = h.meta();
            (
                m.name,
                m.module_path,
                m.group,
                m.retries,
                m.concurrency,
                m.all,
                h.event_type(),
            )
        })
        .collect();
    assert_eq!(
        handlers,
        [
            (
                "audit",
                "macros_hygiene::shadowed",
                None,
                None,
                None,
                true,
                None
            ),
            (
                "on_review_published",
                "macros_hygiene::shadowed",
                Some("reviews.published"),
                Some(3),
                Some(2),
                false,
                Some("review_published")
            ),
            (
                "on_user_changed",
                "macros_hygiene::shadowed",
                None,
                None,
                None,
                false,
                Some("id_user_changed")
            ),
        ]
    );

    let schedules: Vec<_> = registry
        .schedules()
        .iter()
        .map(|s| (s.name, s.module_path, s.when, s.event_type))
        .collect();
    assert_eq!(
        schedules,
        [
            (
                "hourly_publish",
                "macros_hygiene::shadowed",
                When::Every("1h"),
                "review_published"
            ),
            (
                "weekly_user_sync",
                "macros_hygiene::shadowed",
                When::Cron("0 9 * * MON"),
                "id_user_changed"
            ),
        ]
    );

    // Handlers of the new type also receive the old one, through `From`.
    let routes = registry.routes_for(ReviewPublished::TYPE);
    assert_eq!(routes.types, ["review_published", "review_created"]);
}
