use eventbus::Event;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event("review_created", sorce = "reviews")]
struct Typo {
    id: u32,
}

#[derive(Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event("review_updated", topic = "reviews", version = 2)]
struct Unknown {
    id: u32,
}

#[derive(Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event("review_deleted", subject)]
struct SubjectOnType {
    id: u32,
}

#[derive(Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event("review_flagged")]
struct UnknownFieldKey {
    #[event(subjcet)]
    id: u32,
}

fn main() {}
