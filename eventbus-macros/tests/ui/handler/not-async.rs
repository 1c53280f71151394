use eventbus::{Context, Event, handler};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event("ping")]
struct Ping {
    n: u32,
}

#[handler]
fn on_ping(ping: Ping, _ctx: Context) -> anyhow::Result<()> {
    println!("{}", ping.n);
    Ok(())
}

fn main() {}
