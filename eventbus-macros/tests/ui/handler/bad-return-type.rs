use eventbus::{Event, handler};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event("ping")]
struct Ping {
    n: u32,
}

struct NotDisplay;

#[handler]
async fn returns_number(_ping: Ping) -> u32 {
    0
}

#[handler]
async fn returns_value(_ping: Ping) -> Result<String, std::io::Error> {
    Ok(String::new())
}

#[handler]
async fn error_not_display(_ping: Ping) -> Result<(), NotDisplay> {
    Ok(())
}

fn main() {}
