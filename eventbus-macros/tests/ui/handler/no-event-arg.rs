use eventbus::{Event, handler};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event("ping")]
struct Ping {
    n: u32,
}

#[handler]
async fn on_nothing() -> anyhow::Result<()> {
    Ok(())
}

fn main() {}
