use eventbus::Event;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event("review_created")]
struct ReviewCreated {
    #[event(subject)]
    ids: Vec<u32>,
}

fn main() {}
