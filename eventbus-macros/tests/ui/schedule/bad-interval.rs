use eventbus::{Event, schedule};
use serde::{Deserialize, Serialize};

#[derive(Debug, Default, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event("digest")]
struct Digest {
    count: u32,
}

#[schedule(every = "1 hour-ish")]
fn vague() -> Digest {
    Digest::default()
}

#[schedule(every = "0s")]
fn zero() -> Digest {
    Digest::default()
}

#[schedule(every = 3600)]
fn number() -> Digest {
    Digest::default()
}

fn main() {}
