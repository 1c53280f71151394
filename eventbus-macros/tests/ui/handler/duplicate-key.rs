use eventbus::{Event, handler};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event("ping")]
struct Ping {
    n: u32,
}

#[handler(retries = 1, group = "pings", retries = 2)]
async fn twice(_ping: Ping) {}

#[handler(all, all)]
async fn global(_event: eventbus::CloudEvent) {}

fn main() {}
