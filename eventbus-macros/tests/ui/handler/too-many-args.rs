use eventbus::{Context, Event, handler};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event("ping")]
struct Ping {
    n: u32,
}

#[handler]
async fn on_ping(_ping: Ping, _ctx: Context, _db: String, _retries: u32) -> anyhow::Result<()> {
    Ok(())
}

fn main() {}
