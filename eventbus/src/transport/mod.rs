//! The one seam every transport implements (`eventbus-core`'s
//! [`Transport`]/[`Subscriber`] and their vocabulary, re-exported), the
//! in-process [`memory`] transport, and [`connect`], which opens the
//! transport a URL names.
//!
//! A transport moves already-encoded structured CloudEvents (`Bytes`) between
//! publishers and consumer groups. It knows nothing of Rust types: the bus
//! encodes, the worker decodes.

pub use eventbus_core::transport::*;

use crate::error::Result;

#[cfg(feature = "memory")]
#[cfg_attr(docsrs, doc(cfg(feature = "memory")))]
pub mod memory;

/// Redis Streams and pub/sub: the `eventbus-redis` crate, whose
/// [`RedisTransport`](eventbus_redis::RedisTransport) implements [`Transport`].
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use eventbus_redis as redis;

/// Opens the transport named by `url`: `memory://[name]`, or (feature
/// `redis`) `redis://`, `rediss://`, `redis+cluster://`.
pub async fn connect(url: &str) -> Result<std::sync::Arc<dyn Transport>> {
    let scheme = url.split_once("://").map(|(s, _)| s).unwrap_or("");
    match scheme {
        "memory" => {
            #[cfg(feature = "memory")]
            {
                Ok(std::sync::Arc::new(memory::MemoryTransport::from_url(url)?))
            }
            #[cfg(not(feature = "memory"))]
            {
                Err(crate::Error::Config(
                    "`memory://` needs the `memory` feature of eventbus (on by default); enable it in Cargo.toml".into(),
                ))
            }
        }
        "redis" | "rediss" | "redis+cluster" | "rediss+cluster" => {
            #[cfg(feature = "redis")]
            {
                Ok(std::sync::Arc::new(
                    eventbus_redis::RedisTransport::connect(url).await?,
                ))
            }
            #[cfg(not(feature = "redis"))]
            {
                Err(crate::Error::Config(format!(
                    "`{scheme}://` URLs need the `redis` feature: depend on eventbus with `features = [\"redis\"]`"
                )))
            }
        }
        "" => Err(crate::Error::Config(format!(
            "`{}` is not a transport URL; write `memory://` or `redis://host:6379`",
            redact(url)
        ))),
        other => Err(crate::Error::Config(format!(
            "unknown transport `{other}://` in `{}`; use `memory://` or `redis://host:6379`",
            redact(url)
        ))),
    }
}
