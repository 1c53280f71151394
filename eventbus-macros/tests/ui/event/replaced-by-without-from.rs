use eventbus::Event;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event("moderate_action")]
struct ModerateAction {
    id: u32,
    status: u8,
}

/// Deprecated, but nobody wrote `From<ReviewApproved> for ModerateAction`.
#[derive(Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event("review_approved", deprecated = "use moderate_action", replaced_by = ModerateAction)]
struct ReviewApproved {
    id: u32,
}

fn main() {}
