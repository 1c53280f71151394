use eventbus::{Event, schedule};
use serde::{Deserialize, Serialize};

#[derive(Debug, Default, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event("digest")]
struct Digest {
    count: u32,
}

#[schedule(every = "1h", cron = "0 * * * *")]
fn hourly() -> Digest {
    Digest::default()
}

#[schedule(name = "daily")]
fn neither() -> Digest {
    Digest::default()
}

fn main() {}
