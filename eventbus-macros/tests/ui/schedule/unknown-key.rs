use eventbus::{Event, schedule};
use serde::{Deserialize, Serialize};

#[derive(Debug, Default, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event("digest")]
struct Digest {
    count: u32,
}

#[schedule(every = "1h", name = "bad name", every = "2h", interval = "1h")]
async fn more() -> anyhow::Result<Digest> {
    Ok(Digest::default())
}

fn main() {}
