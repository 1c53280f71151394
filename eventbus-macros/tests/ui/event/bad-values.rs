use eventbus::Event;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event("review_created", source = reviews, aliases = "old name", replaced_by = "not a path")]
struct BadValues {
    id: u32,
}

#[derive(Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event("review_updated", aliases = [1, 2], deprecated)]
struct MoreBadValues {
    id: u32,
}

fn main() {}
