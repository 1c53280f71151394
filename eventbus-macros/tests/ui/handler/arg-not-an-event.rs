use eventbus::{Context, Event, handler};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event("ping")]
struct Ping {
    n: u32,
}

struct NotAnEvent;

#[handler]
async fn on_string(text: String) -> anyhow::Result<()> {
    println!("{text}");
    Ok(())
}

#[handler]
async fn on_struct(_event: NotAnEvent, _ctx: Context) {}

#[handler]
async fn with_state(ping: Ping, state: u32) -> anyhow::Result<()> {
    println!("{} {state}", ping.n);
    Ok(())
}

fn main() {}
