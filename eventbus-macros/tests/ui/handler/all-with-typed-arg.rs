use eventbus::{Event, handler};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event("ping")]
struct Ping {
    n: u32,
}

#[handler(all)]
async fn audit(ping: Ping) {
    println!("{}", ping.n);
}

#[handler]
async fn untyped(event: eventbus::CloudEvent) {
    println!("{event}");
}

fn main() {}
