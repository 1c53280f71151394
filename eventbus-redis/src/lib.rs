#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(missing_docs)]

pub mod celery;
mod client;
pub mod codec;
pub mod config;
mod conn;
mod consumer;
pub mod dlq;
mod error;
mod feed;
pub mod keys;
pub mod lease;
pub mod liveness;
mod publisher;
pub mod pubsub;
pub mod schedule;
mod scripts;
pub mod streams;
mod transport;

pub use client::Client;
pub use config::{Codec, Layout, Mode, RedisConfig, Secret, TlsFiles};
pub use conn::ClientOptions;
pub use consumer::{Consumer, ConsumerOptions, ConsumerStats, StartFrom};
pub use error::{Error, Result};
pub use keys::Keys;
pub use lease::LeaseOptions;
pub use schedule::{SchedulerHandle, SchedulerOptions, TrimReport};
pub use transport::RedisTransport;

/// Not an API: entry points for `eventbus`'s instruction-count benches.
#[doc(hidden)]
pub use streams::__bench;

/// The `cloudevents` crate (cloudevents-sdk) this crate speaks at its edges.
pub use eventbus_core::cloudevents;
/// The `redis` crate this one is built on, for [`Client::query`].
pub use redis;
