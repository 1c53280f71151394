use eventbus::Event;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event("wrapped")]
struct Wrapper<T> {
    inner: T,
}

fn main() {}
