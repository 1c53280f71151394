use eventbus::Event;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event("review_created")]
struct Named {
    #[event(subject)]
    id: u32,
    #[event(subject)]
    author: String,
}

#[derive(Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event("review_moved")]
struct Tuple(#[event(subject)] u32, #[event(subject)] u32);

fn main() {}
