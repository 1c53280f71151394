use eventbus::{Event, schedule};
use serde::{Deserialize, Serialize};

#[derive(Debug, Default, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event("digest")]
struct Digest {
    count: u32,
}

#[schedule(every = "1h")]
fn number() -> u32 {
    0
}

fn main() {}
