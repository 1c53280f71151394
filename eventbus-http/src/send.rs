//! The egress client: a CloudEvent POSTed to someone else's endpoint, in
//! binary or structured mode, with the header mapping of [`binding`].
//!
//! ```no_run
//! # async fn run() -> Result<(), eventbus_http::SendError> {
//! use eventbus_core::cloudevents::{EventBuilder, EventBuilderV10};
//! use eventbus_http::{Mode, send};
//!
//! let event = EventBuilderV10::new()
//!     .id("1")
//!     .ty("review_created")
//!     .source("/reviews")
//!     .data("application/json", serde_json::json!({"id": 7}))
//!     .build()
//!     .expect("a valid event");
//! send("https://example.com/events", &event, Mode::Binary).await?;
//! # Ok(()) }
//! ```
//!
//! A 2xx answer is success; anything else is a [`SendError`] that names the
//! status and the start of the answer's body.

use axum::http::header::CONTENT_TYPE;
use bytes::Bytes;
use eventbus_core::cloudevents::AttributesReader as _;
use eventbus_core::codec::DecodeError;

use crate::binding;

/// How a CloudEvent is put into an HTTP request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Attributes in `ce-*` headers (values percent-encoded), `data` as the
    /// body, `datacontenttype` as `Content-Type`.
    Binary,
    /// The whole event as `application/cloudevents+json`.
    Structured,
}

/// How much of an error answer's body a [`SendError`] quotes, in bytes.
const QUOTED_BODY: usize = 200;

/// Why a send failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The event is not a valid CloudEvent (nothing was sent).
    #[error("not sent: the event is not a valid CloudEvent: {0}")]
    Invalid(#[from] DecodeError),

    /// The request could not be made or its answer not read (connection
    /// refused, timeout, TLS, ...).
    #[error("POST {url} failed")]
    Request {
        /// The endpoint, its password (if any) hidden.
        url: String,
        /// The client's error.
        #[source]
        source: reqwest::Error,
    },

    /// The endpoint answered with a status other than 2xx.
    #[error("POST {url} answered {status}{}", body_suffix(.body))]
    Status {
        /// The endpoint, its password (if any) hidden.
        url: String,
        /// The answer's status.
        status: reqwest::StatusCode,
        /// The start of the answer's body (at most 200 bytes, escaped).
        body: String,
    },
}

fn body_suffix(body: &str) -> String {
    if body.is_empty() {
        String::new()
    } else {
        format!(": {body}")
    }
}

impl SendError {
    /// The status the endpoint answered, when it answered.
    pub fn status(&self) -> Option<reqwest::StatusCode> {
        match self {
            SendError::Status { status, .. } => Some(*status),
            SendError::Request { source, .. } => source.status(),
            SendError::Invalid(_) => None,
        }
    }
}

/// Sends `event` to `url` in `mode` with a client of its own (one per call:
/// use [`send_with`] to reuse connections).
pub async fn send(
    url: &str,
    event: &eventbus_core::CloudEvent,
    mode: Mode,
) -> Result<(), SendError> {
    send_with(&reqwest::Client::new(), url, event, mode).await
}

/// Sends `event` to `url` in `mode` with `client`; `Ok` on a 2xx answer.
pub async fn send_with(
    client: &reqwest::Client,
    url: &str,
    event: &eventbus_core::CloudEvent,
    mode: Mode,
) -> Result<(), SendError> {
    let bytes = eventbus_core::codec::encode_cloudevent(event).map_err(|e| {
        SendError::Invalid(DecodeError::new(
            Some(event.ty()),
            format!("the event cannot be written as JSON: {e}"),
        ))
    })?;
    send_encoded(client, url, bytes, mode).await
}

/// Sends an already-encoded structured-mode CloudEvent (what a transport
/// carries, [`Envelope::payload`](eventbus_core::Envelope::payload)) to
/// `url` in `mode`; the event is checked by the validator first.
pub async fn send_encoded(
    client: &reqwest::Client,
    url: &str,
    event: Bytes,
    mode: Mode,
) -> Result<(), SendError> {
    // The event's trace context is also the hop's `traceparent` header.
    let trace = eventbus_core::Envelope::parse(event.clone())?.trace_context();
    let request = match mode {
        Mode::Structured => client
            .post(url)
            .header(CONTENT_TYPE, binding::STRUCTURED)
            .body(event),
        Mode::Binary => {
            let binary = binding::to_binary(&event)?;
            client.post(url).headers(binary.headers).body(binary.body)
        }
    };
    let request = match trace {
        Some(tc) => {
            let request = request.header(binding::TRACEPARENT_HEADER, tc.traceparent());
            // A state that cannot be a header value is left out.
            match tc
                .state
                .and_then(|s| reqwest::header::HeaderValue::from_str(&s).ok())
            {
                Some(state) => request.header(binding::TRACESTATE_HEADER, state),
                None => request,
            }
        }
        None => request,
    };
    let redacted = || eventbus_core::transport::redact(url);
    let response = request.send().await.map_err(|source| SendError::Request {
        url: redacted(),
        source: source.without_url(),
    })?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    // The start of the answer, for the message; a body that cannot be read
    // leaves the status alone.
    let body = response.bytes().await.unwrap_or_default();
    let cut = &body[..body.len().min(QUOTED_BODY)];
    let mut text = String::from_utf8_lossy(cut).trim().to_owned();
    if body.len() > QUOTED_BODY {
        text.push('…');
    }
    Err(SendError::Status {
        url: redacted(),
        status,
        body: eventbus_core::escape::escape(&text).into_owned(),
    })
}
