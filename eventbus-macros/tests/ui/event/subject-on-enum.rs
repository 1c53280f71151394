use eventbus::Event;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event("review_action")]
enum ReviewAction {
    Approved {
        #[event(subject)]
        id: u32,
    },
    #[event("review_rejected")]
    Rejected { id: u32 },
}

fn main() {}
