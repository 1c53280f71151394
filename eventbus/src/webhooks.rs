//! Webhooks (`eventbus-http`'s hub and subscriptions API), with the durable
//! subscription stores.
//!
//! Everything of [`eventbus_http::webhooks`] is re-exported here, beside two
//! stores that keep subscriptions and their attempts where every instance of
//! a service sees them and a restart finds them again:
//!
//! - [`SqlStore`] (features `postgres` / `sqlite`): in the outbox database,
//!   the tables of `migrations/{postgres,sqlite}/0003_webhooks.sql`
//!   ([`SqlStore::migrate`] creates them).
//! - [`RedisStore`] (feature `redis`): in Redis, beside the transport's keys.
//!
//! Use the outbox database when the service has one, else Redis; a
//! [`MemoryStore`] is for tests and single-instance services (its
//! subscriptions end with the process).
//!
//! Every store holds the subscriptions' signing secrets and credentials.

pub use eventbus_http::webhooks::*;

#[cfg(feature = "redis")]
mod redis_store;
#[cfg(any(feature = "postgres", feature = "sqlite"))]
mod sql_store;

#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use redis_store::RedisStore;
#[cfg(any(feature = "postgres", feature = "sqlite"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "postgres", feature = "sqlite"))))]
pub use sql_store::{POSTGRES_SCHEMA, SQLITE_SCHEMA, SqlStore};
