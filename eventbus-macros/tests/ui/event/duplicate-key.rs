use eventbus::Event;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event("review_created", source = "reviews", source = "moderation")]
struct SameAttribute {
    id: u32,
}

#[derive(Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event("review_updated", deprecated = "use review_changed")]
#[event(deprecated = "really")]
struct TwoAttributes {
    id: u32,
}

#[derive(Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event("review_deleted", "review_removed")]
struct TwoTypeNames {
    id: u32,
}

fn main() {}
