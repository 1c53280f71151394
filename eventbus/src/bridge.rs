//! Bridges: messages of a type taken from one transport (the pub/sub
//! channels Django publishes on) into another (Redis Streams), once across
//! every running instance.
//!
//! A bridge of type `t` is a group `eventbus.bridge.<t>` on the source,
//! run by the bus's ordinary worker, whose handler appends each message, as
//! received, to the destination. The source's groups compete (on Redis
//! pub/sub through a lease, see `eventbus_redis::lease`), so one instance
//! at a time appends: each message once, whatever the number of instances.
//! An append that fails is retried with the bus's backoff and, after the
//! retries, dead-lettered with the reason (a replay publishes it on the
//! source again). Appends keep the order of the source (one at a time).
//!
//! What pub/sub itself loses, a bridge cannot bring back: messages published
//! while no instance holds the lease (between a holder's death and the
//! takeover, a few seconds) or while its connection is down, and a message
//! the holder received and had not appended when it died. Once appended, a
//! message is as durable as the destination. A legacy payload (bare JSON) is
//! wrapped into a CloudEvent with an id when it is received; since one
//! instance bridges it, every consumer on the destination sees that one id.

use std::borrow::Cow;
use std::sync::Arc;

use bytes::Bytes;

use crate::Envelope;
use crate::codec::DecodeError;
use std::task::{Context, Poll};

use crate::handler::{Call, ErasedHandler, Failure, HandlerFuture, HandlerSlot, Scope};
use crate::transport::{Outgoing, Transport};

/// The handler of a bridge: appends the message to the destination.
pub(crate) struct Forward {
    pub(crate) event_type: Arc<str>,
    pub(crate) to: Arc<dyn Transport>,
}

impl ErasedHandler for Forward {
    fn slot(self: Arc<Self>) -> Box<dyn HandlerSlot> {
        Box::new(ForwardSlot {
            forward: self,
            run: None,
        })
    }

    fn event_type(&self) -> Option<&'static str> {
        None
    }
}

/// A bridge's run: one append (boxed; a bridge appends one event at a time).
struct ForwardSlot {
    forward: Arc<Forward>,
    run: Option<HandlerFuture>,
}

impl HandlerSlot for ForwardSlot {
    fn start(&mut self, call: Call<'_>, scope: Scope<'_>) -> Result<Envelope, DecodeError> {
        // Read once for the worker's logs and dead letters; appended as received.
        let envelope = Envelope::parse(Bytes::clone(call.payload))?;
        let message = Outgoing {
            event_type: Cow::Owned(self.forward.event_type.to_string()),
            payload: Bytes::clone(call.payload),
        };
        let to = self.forward.to.clone();
        let append = async move {
            to.publish(std::slice::from_ref(&message))
                .await
                .map_err(|e| {
                    Failure::Error(format!(
                        "cannot append `{}` to {}: {e}",
                        message.event_type,
                        to.name()
                    ))
                })
        };
        self.run = Some(Box::pin(crate::trace::scoped(scope(&envelope), append)));
        Ok(envelope)
    }

    fn poll_run(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Failure>> {
        let Some(run) = self.run.as_mut() else {
            return Poll::Ready(Err(Failure::Error("no append in this slot".into())));
        };
        let outcome = std::task::ready!(run.as_mut().poll(cx));
        self.run = None;
        Poll::Ready(outcome)
    }

    fn clear(&mut self) {
        self.run = None;
    }
}

/// The worker of `bridge`: a group on its source, one append at a time
/// (which keeps the source's order), the bus's retries.
pub(crate) fn worker(
    bridge: crate::routing::Bridge,
    timeout: Option<std::time::Duration>,
) -> crate::worker::WorkerSpec {
    let handler = crate::handler::HandlerDef {
        meta: crate::handler::HandlerMeta::__new(
            "bridge",
            "eventbus",
            None,
            None,
            Some(1),
            false,
            false,
        ),
        handler: Arc::new(Forward {
            event_type: Arc::from(bridge.event_type.as_str()),
            to: bridge.to,
        }),
    };
    crate::worker::WorkerSpec {
        group_name: Arc::from(bridge.group.as_str()),
        group: crate::transport::GroupSpec {
            group: bridge.group,
            handler: "eventbus::bridge".to_owned(),
            topics: crate::transport::Topics::Types(vec![bridge.event_type]),
            handler_timeout: timeout,
            broadcast: false,
        },
        handler: Arc::new(handler),
        upcasts: Vec::new(),
        max_attempts: crate::DEFAULT_RETRIES.saturating_add(1),
        concurrency: 1,
        timeout,
        skip: Arc::from([]),
        metrics: Default::default(),
    }
}
