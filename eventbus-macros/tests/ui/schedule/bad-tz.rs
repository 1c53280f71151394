use eventbus::{Event, schedule};
use serde::{Deserialize, Serialize};

#[derive(Debug, Default, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event("digest")]
struct Digest {
    count: u32,
}

#[schedule(cron = "0 9 * * *", tz = "Europe/Atlantis")]
fn unknown_zone() -> Digest {
    Digest::default()
}

#[schedule(cron = "0 9 * * *", tz = "europe/berlin")]
fn wrong_case() -> Digest {
    Digest::default()
}

#[schedule(every = "1h", tz = "Europe/Berlin")]
fn interval_with_zone() -> Digest {
    Digest::default()
}

#[schedule(cron = "0 9 * * *", tz = 1)]
fn zone_not_a_string() -> Digest {
    Digest::default()
}

fn main() {}
