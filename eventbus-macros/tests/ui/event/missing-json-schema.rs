use eventbus::Event;
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize, Event)]
#[event("ui.no_schema")]
struct NoSchema {
    id: u64,
}

fn main() {}
