use eventbus::Event;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, schemars::JsonSchema, Event)]
struct NoAttribute {
    id: u32,
}

#[derive(Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event(source = "reviews")]
struct NoTypeName {
    id: u32,
}

#[derive(Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event]
struct EmptyAttribute {
    id: u32,
}

#[derive(Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event(review_created)]
struct NotAString {
    id: u32,
}

fn main() {}
