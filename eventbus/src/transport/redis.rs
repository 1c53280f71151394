//! `redis://`: the Redis Streams and pub/sub transport (feature `redis`).

use crate::error::{Error, Result};

pub(crate) async fn connect(url: &str) -> Result<std::sync::Arc<dyn super::Transport>> {
    Err(Error::Config(format!(
        "the Redis transport is not available yet in this build ({})",
        super::redact(url)
    )))
}
