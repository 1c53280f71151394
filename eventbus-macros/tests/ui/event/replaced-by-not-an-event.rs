use eventbus::Event;
use serde::{Deserialize, Serialize};

struct NotAnEvent;

impl From<ReviewApproved> for NotAnEvent {
    fn from(_: ReviewApproved) -> Self {
        NotAnEvent
    }
}

#[derive(Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event("review_approved", replaced_by = NotAnEvent)]
struct ReviewApproved {
    id: u32,
}

fn main() {}
