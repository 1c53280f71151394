use eventbus::{Event, schedule};
use serde::{Deserialize, Serialize};

#[derive(Debug, Default, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event("digest")]
struct Digest {
    count: u32,
}

#[schedule(cron = "61 * * * *")]
fn minute_out_of_range() -> Digest {
    Digest::default()
}

#[schedule(cron = "every day at nine")]
fn words() -> Digest {
    Digest::default()
}

#[schedule(cron = "0 9 * *")]
fn four_fields() -> Digest {
    Digest::default()
}

fn main() {}
