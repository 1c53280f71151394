use eventbus::{Event, handler};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event("ping")]
struct Ping {
    n: u32,
}

#[handler]
async fn generic<E: Event>(_event: E) {}

#[handler]
async fn impl_arg(_event: impl Event) {}

#[handler]
async unsafe fn not_safe(_ping: Ping) {}

struct Service;

impl Service {
    #[handler]
    async fn method(&self, _ping: Ping) {}
}

fn main() {}
