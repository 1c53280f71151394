use eventbus::Event;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event("review created")]
struct Space {
    id: u32,
}

#[derive(Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event("_private")]
struct LeadingUnderscore {
    id: u32,
}

#[derive(Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event("")]
struct Empty {
    id: u32,
}

#[derive(Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event("reviews/created")]
struct Slash {
    id: u32,
}

#[derive(Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event("user_changed", aliases = ["sso_user_changed", "sso user changed"])]
struct BadAlias {
    id: u32,
}

fn main() {}
