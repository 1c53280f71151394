use eventbus::{Event, schedule};
use serde::{Deserialize, Serialize};

#[derive(Debug, Default, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event("digest")]
struct Digest {
    count: u32,
}

#[schedule(every = "1h")]
async fn hourly_digest() {}

#[schedule(every = "1h")]
fn with_args(count: u32) -> Digest {
    Digest { count }
}

fn main() {}
