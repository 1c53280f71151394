//! `POST /events`: CloudEvents in, published to the transport.
//!
//! In order, a request is answered:
//!
//! | status | when | body |
//! |---|---|---|
//! | `401 Unauthorized` + `WWW-Authenticate: Bearer` | a [bearer token](crate::Http::bearer_token) is required and not given | problem |
//! | `415 Unsupported Media Type` | `Content-Type` names another CloudEvents format (`application/cloudevents+xml`) | problem |
//! | `413 Payload Too Large` | the body is longer than [`max_body`](crate::Http::max_body), or a batch has more than [`max_batch`](crate::Http::max_batch) events | problem |
//! | `400 Bad Request` | not a valid event: the validator's reason (the same words a dead letter carries), a header that does not percent-decode, a missing `ce-` header | problem, with `event_type`/`event_id` when known |
//! | `429 Too Many Requests` + `Retry-After` | [`max_in_flight`](crate::Http::max_in_flight) requests already wait on the transport | problem |
//! | `503 Service Unavailable` + `Retry-After` | the transport refused or failed the publish | problem |
//! | `202 Accepted` | the transport accepted every event of the request (durably, on a durable transport) | none |
//!
//! A batch is all or nothing: every event is checked before any is
//! published, and all are published in one call. An empty batch is
//! accepted and publishes nothing.
//!
//! Errors are RFC 9457 problem details (`application/problem+json`):
//! `{"type": "about:blank", "title": "Bad Request", "status": 400,
//! "detail": "<what went wrong, in a sentence>"}`, plus `event_type` and
//! `event_id` for an invalid event whose type or id could be read.
//! A 503 tells a client that nothing is known to have been published; a
//! retry may publish an event twice (with the same id) when the transport
//! failed after taking it.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use eventbus_core::Envelope;
use eventbus_core::codec::DecodeError;
use eventbus_core::escape::Escaped;
use eventbus_core::transport::Outgoing;
use futures::StreamExt as _;

use crate::binding::{self, ContentMode};

/// The media type of the error bodies.
pub(crate) const PROBLEM: &str = "application/problem+json";

/// What `Retry-After` says on a 429 or a 503, in seconds.
const RETRY_AFTER: &str = "1";

/// An RFC 9457 problem-details answer: `status`, its title, and `detail`.
pub(crate) fn problem(status: StatusCode, detail: &str) -> Response {
    problem_with(status, detail, serde_json::Map::new())
}

/// [`problem`] with extension members.
pub(crate) fn problem_with(
    status: StatusCode,
    detail: &str,
    mut members: serde_json::Map<String, serde_json::Value>,
) -> Response {
    members.insert("type".into(), "about:blank".into());
    members.insert(
        "title".into(),
        status.canonical_reason().unwrap_or_default().into(),
    );
    members.insert("status".into(), status.as_u16().into());
    members.insert("detail".into(), detail.into());
    let body = serde_json::to_vec(&members).unwrap_or_default();
    (
        status,
        [(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM))],
        body,
    )
        .into_response()
}

/// A `400` for an event the binding or the validator refused.
fn invalid(e: &DecodeError) -> Response {
    tracing::debug!(reason = %e, "POST /events: refused an invalid event");
    let mut members = serde_json::Map::new();
    if let Some(ty) = e.event_type() {
        members.insert("event_type".into(), ty.into());
    }
    if let Some(id) = e.event_id() {
        members.insert("event_id".into(), id.into());
    }
    problem_with(StatusCode::BAD_REQUEST, &e.to_string(), members)
}

/// `status` with `Retry-After`.
fn retry_later(status: StatusCode, detail: &str) -> Response {
    let mut response = problem(status, detail);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER));
    response
}

/// `413` for a body over the limit.
fn too_large(max: usize) -> Response {
    problem(
        StatusCode::PAYLOAD_TOO_LARGE,
        &format!(
            "the request body is larger than the limit of {max} bytes; send fewer or smaller events per request"
        ),
    )
}

/// Reads the body, at most `max` bytes (counted as it arrives; a
/// `Content-Length` over the limit is refused before reading).
async fn read_body(headers: &HeaderMap, body: Body, max: usize) -> Result<Bytes, Response> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(too_large(max));
    }
    let mut stream = body.into_data_stream();
    let mut first: Option<Bytes> = None;
    let mut rest = BytesMut::new();
    let mut len = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            problem(
                StatusCode::BAD_REQUEST,
                &format!("the request body could not be read: {e}"),
            )
        })?;
        len = len.saturating_add(chunk.len());
        if len > max {
            return Err(too_large(max));
        }
        // One chunk (the common case) is kept without a copy.
        if first.is_none() && rest.is_empty() {
            first = Some(chunk);
        } else {
            if let Some(f) = first.take() {
                let hint = declared.map_or(0, |n| n as usize).min(max);
                rest.reserve(hint.max(f.len() + chunk.len()));
                rest.extend_from_slice(&f);
            }
            rest.extend_from_slice(&chunk);
        }
    }
    Ok(first.unwrap_or_else(|| rest.freeze()))
}

/// The handler of `POST /events`.
pub(crate) async fn post(
    State(state): State<Arc<crate::State>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if !state.authorized(&headers) {
        let mut response = problem(
            StatusCode::UNAUTHORIZED,
            "this endpoint needs `Authorization: Bearer <token>` with the token it was configured with",
        );
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return response;
    }
    let mode = match ContentMode::of(&headers) {
        Ok(mode) => mode,
        Err(e) => return problem(StatusCode::UNSUPPORTED_MEDIA_TYPE, &e.to_string()),
    };
    let config = &state.config;
    let body = match read_body(&headers, body, config.max_body).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let events: Vec<Envelope> = match mode {
        ContentMode::Binary => match binding::from_binary(&headers, &body) {
            Ok(event) => vec![event],
            Err(e) => return invalid(&e),
        },
        ContentMode::Structured => match binding::from_structured(body) {
            Ok(event) => vec![event],
            Err(e) => return invalid(&e),
        },
        ContentMode::Batch => {
            let parts = match binding::split_batch(&body) {
                Ok(parts) => parts,
                Err(e) => return invalid(&e),
            };
            if parts.len() > config.max_batch {
                return problem(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    &format!(
                        "the batch has {} events, more than the limit of {} per request; split it",
                        parts.len(),
                        config.max_batch
                    ),
                );
            }
            match binding::check_batch(parts) {
                Ok(events) => events,
                Err(e) => return invalid(&e),
            }
        }
    };
    if events.is_empty() {
        return StatusCode::ACCEPTED.into_response();
    }
    // The hop's own `traceparent`, for events that carry none.
    let events: Vec<Envelope> = if headers.contains_key(binding::TRACEPARENT_HEADER) {
        events
            .into_iter()
            .map(|e| binding::adopt_request_trace(&headers, e))
            .collect()
    } else {
        events
    };
    // Never queue: a request that would wait for a permit is told to come back.
    let Ok(_permit) = state.in_flight.clone().try_acquire_owned() else {
        return retry_later(
            StatusCode::TOO_MANY_REQUESTS,
            &format!(
                "{} requests are already waiting on the transport, the most this endpoint allows; retry after {RETRY_AFTER} s",
                config.max_in_flight
            ),
        );
    };
    let batch: Vec<Outgoing> = events
        .iter()
        .map(|e| Outgoing {
            event_type: e.event_type().to_owned().into(),
            payload: e.payload().clone(),
        })
        .collect();
    match config.transport.publish(&batch).await {
        Ok(()) => {
            if tracing::enabled!(tracing::Level::DEBUG) {
                for e in &events {
                    tracing::debug!(
                        event_type = %Escaped(e.event_type()),
                        event_id = %Escaped(e.id()),
                        "POST /events: published"
                    );
                }
            }
            StatusCode::ACCEPTED.into_response()
        }
        Err(e) => {
            tracing::warn!(
                error = %e.report(),
                events = batch.len(),
                first_type = %Escaped(events[0].event_type()),
                first_id = %Escaped(events[0].id()),
                "POST /events: the transport did not take the events"
            );
            retry_later(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!(
                    "the events were not accepted: {e}; retry after {RETRY_AFTER} s (the same ids, so that consumers can drop a duplicate)"
                ),
            )
        }
    }
}
