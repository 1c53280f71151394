use eventbus::{Event, handler};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event("ping")]
struct Ping {
    n: u32,
}

#[handler(retry = 5)]
async fn typo(_ping: Ping) {}

#[handler(queue = "pings", timeout = 30)]
async fn unknown(_ping: Ping) {}

#[handler("pings")]
async fn literal(_ping: Ping) {}

fn main() {}
