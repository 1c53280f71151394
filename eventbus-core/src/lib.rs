//! The core of [eventbus](https://docs.rs/eventbus): what a transport
//! implements and what is on the wire.
//!
//! - [`Event`] and [`EventInfo`]: a Rust type with a fixed CloudEvents `type`
//!   (implemented by `#[derive(eventbus::Event)]`);
//! - [`codec`]: structured-mode CloudEvents JSON, written and read in one pass;
//! - [`Envelope`]: a received message with its attributes read once;
//! - [`transport`]: the [`Transport`]/[`Subscriber`] seam every transport
//!   implements (memory in `eventbus`, Redis in `eventbus-redis`), with its
//!   vocabulary — [`Outgoing`](transport::Outgoing),
//!   [`Delivery`](transport::Delivery), [`GroupSpec`](transport::GroupSpec),
//!   [`Topics`](transport::Topics), [`DeadLetter`](transport::DeadLetter);
//! - [`feed`]: a transport's log read by position ([`feed::Feed`]), behind
//!   the HTTP pull feed;
//! - [`Error`] / [`Result`] and [`RetryPolicy`];
//! - [`trace`]: the W3C [`TraceContext`] of an event (`traceparent`,
//!   `tracestate`), parsed and formatted without OpenTelemetry;
//! - [`escape`]: event text made safe for log lines ([`escape::Escaped`]).
//!
//! Applications depend on `eventbus`, which re-exports all of this; a
//! transport crate depends on this crate only and runs the conformance suite
//! of `eventbus::testing::conformance` from its tests.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(missing_docs)]

pub mod arg;
pub mod codec;
pub mod envelope;
pub mod error;
pub mod escape;
pub mod event;
pub mod feed;
pub mod metrics;
pub mod retry;
pub mod trace;
pub mod transport;

pub use envelope::Envelope;
pub use error::{Error, Result};
pub use event::{Event, EventInfo, TaskInfo};
pub use retry::RetryPolicy;
pub use trace::TraceContext;
pub use transport::{Subscriber, Transport};

/// The CloudEvents SDK (`cloudevents-sdk`), the interop type at the edges.
pub use cloudevents;

/// The CloudEvents 1.0 event of `cloudevents-sdk`.
pub type CloudEvent = cloudevents::Event;
