//! Events and handlers that a binary links only through `use eventbus_test_handlers as _;`.

use std::sync::atomic::{AtomicU32, Ordering};

use eventbus::{Context, Event, handler};
use serde::{Deserialize, Serialize};

/// A grant was published.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema, Event)]
#[event("xcrate.grant_published")]
pub struct GrantPublished {
    /// The grant.
    pub id: u32,
}

/// How many grants the handler below saw.
pub static HANDLED: AtomicU32 = AtomicU32::new(0);

#[handler(group = "xcrate.grants")]
async fn on_grant_published(event: GrantPublished, _ctx: Context) {
    HANDLED.fetch_add(event.id, Ordering::SeqCst);
}
