use eventbus::{Event, handler};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event("ping")]
struct Ping {
    n: u32,
}

#[handler(retries = "five", concurrency = 0, group = "sms send queue", all = true)]
async fn bad_values(_event: eventbus::CloudEvent) {}

#[handler(retries = -1, concurrency = 8u64, group)]
async fn more_bad_values(_ping: Ping) {}

fn main() {}
