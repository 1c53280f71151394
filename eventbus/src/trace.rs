//! Trace context: W3C `traceparent`/`tracestate` carried in events as the
//! CloudEvents Distributed Tracing extension.
//!
//! - **Publishing** ([`Bus::publish`](crate::Bus::publish), the batch and
//!   delayed forms, and the outbox, which encodes when the row is written)
//!   writes the [`current`] trace context into the event as the
//!   `traceparent` and `tracestate` extensions. An event that already has a
//!   `traceparent` ([`Bus::publish_cloudevent`](crate::Bus::publish_cloudevent),
//!   the relay's encoded rows) keeps it: it carries the trace where the event
//!   started, so a relay minutes later continues the original trace.
//! - **Handling**: each delivery attempt runs in a span `process <type>`
//!   (consumer kind; the tracing span is `eventbus.process`, its OpenTelemetry
//!   name `process <type>`) with the OpenTelemetry messaging attributes
//!   (`messaging.system`, `messaging.consumer.group.name`,
//!   `messaging.message.id`, `messaging.operation.type` = `process`,
//!   `cloudevents.event_type`/`event_source`/`event_id`, `attempt`, and
//!   `error.type` when the handler fails). Whether the event's context is the
//!   span's parent is [`ProcessParent`]
//!   ([`BusBuilder::process_parent`](crate::BusBuilder::process_parent)). The
//!   outcome is a span event at `DEBUG` (target `eventbus::trace`):
//!   `eventbus.ack`, `eventbus.retry` or `eventbus.dead_letter`.
//! - A malformed `traceparent` is ignored (logged at `DEBUG`): the event is
//!   handled as one without a trace, never dead-lettered for it.
//!
//! Where the current context comes from:
//!
//! - with the `opentelemetry` feature, the OpenTelemetry context of the
//!   current `tracing` span (`tracing_opentelemetry::OpenTelemetrySpanExt`),
//!   when the subscriber has a `tracing_opentelemetry` layer; the
//!   `process` span's parent (or link) is the event's context;
//! - otherwise, and also with the feature when the current span is not
//!   recorded by OpenTelemetry, the context of the event being handled: an
//!   event published from inside a handler continues the trace of the event
//!   it handles, with a fresh span id. This is carried in a task-local of the
//!   handler's task: a task the handler spawns does not inherit it (wrap it
//!   in [`scope`] with [`current`] to carry it).
//!
//! Outside a handler and without OpenTelemetry, events are published without
//! a trace context.

use std::future::Future;

pub use eventbus_core::trace::{
    MAX_TRACESTATE, TRACEPARENT, TRACESTATE, TraceContext, TraceParentError,
};

use crate::Envelope;
use crate::handler::Failure;

/// How a delivery's `process` span relates to the trace context of its event
/// ([`BusBuilder::process_parent`](crate::BusBuilder::process_parent)).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ProcessParent {
    /// The event's context is the span's parent: the handling is part of the
    /// publisher's trace (the default).
    #[default]
    Parent,
    /// The span starts a trace of its own, with a link to the event's
    /// context (for consumers that batch or fan in, where one long trace
    /// per publisher is not wanted). Without OpenTelemetry, what the handler
    /// publishes starts a new trace.
    Link,
    /// The event's context is not used: the span starts a new trace, and
    /// without OpenTelemetry what the handler publishes has no trace context.
    None,
}

tokio::task_local! {
    /// The trace context of the event a handler is handling.
    static HANDLING: Option<TraceContext>;
}

/// The trace context a publish writes into an event now: the current
/// OpenTelemetry span's (feature `opentelemetry`), else a child of the
/// event being handled (inside a handler), else none.
pub fn current() -> Option<TraceContext> {
    #[cfg(feature = "opentelemetry")]
    if let Some(tc) = otel::current() {
        return Some(tc);
    }
    HANDLING
        .try_with(|tc| tc.as_ref().map(TraceContext::child))
        .ok()
        .flatten()
}

/// Runs `fut` with `context` as the trace context that [`current`] continues
/// (without OpenTelemetry): how a task spawned by a handler keeps the trace.
///
/// ```
/// # async fn demo(bus: eventbus::Bus) {
/// let context = eventbus::trace::current();
/// tokio::spawn(eventbus::trace::scope(context, async move {
///     // bus.publish(...) here continues the handler's trace
/// #   drop(bus);
/// }));
/// # }
/// ```
pub fn scope<F: Future>(context: Option<TraceContext>, fut: F) -> impl Future<Output = F::Output> {
    HANDLING.scope(context, fut)
}

/// The trace context of `envelope`; a malformed one is logged and ignored.
pub(crate) fn of_envelope(envelope: &Envelope) -> Option<TraceContext> {
    match envelope.try_trace_context() {
        Ok(tc) => tc,
        Err(e) => {
            tracing::debug!(
                target: "eventbus::trace",
                event_id = %eventbus_core::escape::Escaped(envelope.id()),
                "ignoring the trace context of the event: {e}"
            );
            None
        }
    }
}

/// What the worker knows of a delivery for its span.
pub(crate) struct Delivered<'a> {
    pub transport: &'static str,
    pub group: &'a str,
    pub handler: &'a str,
    pub envelope: &'a Envelope,
    pub attempt: u32,
    pub parent: ProcessParent,
}

/// Runs `fut` in `handling`, the trace context [`current`] continues (what a
/// handler run is wrapped in; a nameable type, so a worker's slot holds it).
pub(crate) fn scoped<F: Future>(
    handling: Option<TraceContext>,
    fut: F,
) -> tokio::task::futures::TaskLocalFuture<Option<TraceContext>, F> {
    HANDLING.scope(handling, fut)
}

/// The `process <type>` span of a delivery, and the trace context its
/// handler runs in ([`scoped`]; see the module docs).
pub(crate) fn process(d: Delivered<'_>) -> (tracing::Span, Option<TraceContext>) {
    use eventbus_core::escape::Escaped;
    let envelope = d.envelope;
    let span = tracing::info_span!(
        parent: None,
        "eventbus.process",
        otel.name = %format_args!("process {}", Escaped(envelope.event_type())),
        otel.kind = "consumer",
        otel.status_code = tracing::field::Empty,
        // The family: `redis` of `redis-streams`.
        messaging.system = d.transport.split(|c: char| !c.is_ascii_alphanumeric()).next().unwrap_or(d.transport),
        messaging.consumer.group.name = %d.group,
        messaging.message.id = %Escaped(envelope.id()),
        messaging.operation.type = "process",
        cloudevents.event_id = %Escaped(envelope.id()),
        cloudevents.event_type = %Escaped(envelope.event_type()),
        cloudevents.event_source = %Escaped(envelope.source()),
        handler = %d.handler,
        attempt = d.attempt,
        error.type = tracing::field::Empty,
    );
    let event = match d.parent {
        ProcessParent::None => None,
        _ => of_envelope(envelope),
    };
    #[cfg(feature = "opentelemetry")]
    if let Some(tc) = &event {
        otel::relate(&span, tc, d.parent);
    }
    let handling = match d.parent {
        ProcessParent::Parent => event,
        ProcessParent::Link => event.map(|_| TraceContext::new_root()),
        ProcessParent::None => None,
    };
    (span, handling)
}

/// Records how a handler run ended on its span: `error.type` and the status
/// on failure, and the span event of what happens next.
pub(crate) fn settled(
    span: &tracing::Span,
    outcome: &Result<(), Failure>,
    attempt: u32,
    max_attempts: u32,
) {
    match outcome {
        Ok(()) => tracing::debug!(target: "eventbus::trace", parent: span, "eventbus.ack"),
        Err(Failure::Error(error)) => {
            let kind = if error.starts_with("handler timed out") {
                "timeout"
            } else {
                "handler_error"
            };
            span.record("error.type", kind);
            span.record("otel.status_code", "error");
            if attempt < max_attempts {
                tracing::debug!(target: "eventbus::trace", parent: span, attempt, "eventbus.retry");
            } else {
                tracing::debug!(target: "eventbus::trace", parent: span, attempt, "eventbus.dead_letter");
            }
        }
    }
}

/// The span of an outbox relay's publish of `batch`, linked (feature
/// `opentelemetry`) to the trace context each row carries.
#[cfg(any(feature = "postgres", feature = "sqlite"))]
pub(crate) fn relay_span(
    transport: &'static str,
    batch: &[crate::transport::Outgoing],
) -> tracing::Span {
    let span = tracing::info_span!(
        parent: None,
        "eventbus.relay",
        otel.name = "send",
        otel.kind = "producer",
        messaging.system = transport,
        messaging.operation.type = "send",
        messaging.batch.message_count = batch.len(),
    );
    #[cfg(feature = "opentelemetry")]
    if !span.is_disabled() {
        for message in batch {
            if let Some(tc) = Envelope::parse(message.payload.clone())
                .ok()
                .as_ref()
                .and_then(of_envelope)
            {
                otel::link(&span, &tc);
            }
        }
    }
    span
}

/// `event` with the [`current`] trace context unless it has one already.
pub(crate) fn stamp_cloudevent(event: &crate::CloudEvent) -> Option<crate::CloudEvent> {
    if event.extension(TRACEPARENT).is_some() {
        return None;
    }
    let tc = current()?;
    let mut event = event.clone();
    event.set_extension(TRACEPARENT, tc.traceparent());
    if let Some(state) = tc.state {
        event.set_extension(TRACESTATE, state);
    }
    Some(event)
}

#[cfg(feature = "opentelemetry")]
mod otel {
    use opentelemetry::trace::{
        SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState,
    };
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    use super::{ProcessParent, TraceContext};

    /// The context of the current span, when OpenTelemetry records it.
    pub(super) fn current() -> Option<TraceContext> {
        let span = tracing::Span::current();
        if span.is_none() {
            return None;
        }
        let cx = span.context();
        let sc = cx.span().span_context().clone();
        if !sc.is_valid() {
            return None;
        }
        let state = sc.trace_state().header();
        Some(TraceContext {
            trace_id: sc.trace_id().to_bytes(),
            span_id: sc.span_id().to_bytes(),
            flags: sc.trace_flags().to_u8(),
            state: (!state.is_empty()).then_some(state),
        })
    }

    fn remote(tc: &TraceContext) -> SpanContext {
        let state = tc
            .state
            .as_deref()
            .and_then(|s| s.parse::<TraceState>().ok())
            .unwrap_or_default();
        SpanContext::new(
            TraceId::from_bytes(tc.trace_id),
            SpanId::from_bytes(tc.span_id),
            TraceFlags::new(tc.flags),
            true,
            state,
        )
    }

    /// Makes `tc` the parent of `span`, or a link of it.
    pub(super) fn relate(span: &tracing::Span, tc: &TraceContext, how: ProcessParent) {
        match how {
            ProcessParent::Parent => {
                let cx = opentelemetry::Context::new().with_remote_span_context(remote(tc));
                // Fails only when no OpenTelemetry layer records the span.
                let _ = span.set_parent(cx);
            }
            ProcessParent::Link => link(span, tc),
            ProcessParent::None => {}
        }
    }

    pub(super) fn link(span: &tracing::Span, tc: &TraceContext) {
        span.add_link(remote(tc));
    }
}
