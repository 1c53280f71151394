//! A binary whose registry is inconsistent: the bus refuses to start, with
//! one clear line per problem. (Its own test binary: the conflicts below are
//! registered globally.)

use eventbus::{Bus, Event};
use serde::{Deserialize, Serialize};

mod billing {
    #[derive(
        Debug, serde::Serialize, serde::Deserialize, schemars::JsonSchema, eventbus::Event,
    )]
    #[event("conflict.paid")]
    pub struct Paid {
        pub id: u32,
    }
}

mod orders {
    #[derive(
        Debug, serde::Serialize, serde::Deserialize, schemars::JsonSchema, eventbus::Event,
    )]
    #[event("conflict.paid")]
    pub struct Paid {
        pub order: u32,
    }
}

#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event("conflict.user_changed", aliases = ["conflict.old_user"])]
struct UserChanged {}

#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event("conflict.user_updated", aliases = ["conflict.old_user"])]
struct UserUpdated {}

#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event("conflict.a", aliases = ["conflict.b"])]
struct A {}

#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event("conflict.b")]
struct B {}

#[tokio::test]
async fn the_bus_reports_every_registry_problem_at_start() {
    let err = Bus::builder().service("svc").build().await.unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, eventbus::Error::Registry(ref p) if p.len() == 3),
        "{msg}"
    );
    assert!(
        msg.contains("event type `conflict.paid` is defined twice")
            && msg.contains("registry_conflicts::billing::Paid")
            && msg.contains("registry_conflicts::orders::Paid"),
        "{msg}"
    );
    assert!(
        msg.contains("the alias `conflict.old_user` is claimed by both `conflict.user_changed` and `conflict.user_updated`"),
        "{msg}"
    );
    assert!(
        msg.contains("declares the alias `conflict.b`, but `conflict.b` is also the type of"),
        "{msg}"
    );
}

#[tokio::test]
async fn two_handlers_in_one_group_are_rejected() {
    let h1 = eventbus::HandlerDef::new("one", |_e: B| async {}).group("jobs");
    let h2 = eventbus::HandlerDef::new("two", |_e: B| async {}).group("jobs");
    let err =
        eventbus::registry::Registry::build(vec![B::info()], vec![h1, h2], vec![]).unwrap_err();
    assert!(
        err.to_string().contains("both use the group `jobs`"),
        "{err}"
    );
}
