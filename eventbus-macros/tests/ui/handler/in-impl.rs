use eventbus::{Event, handler};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event("ping")]
struct Ping {
    n: u32,
}

struct Service;

impl Service {
    #[handler]
    async fn on_ping(_ping: Ping) {}
}

fn main() {}
