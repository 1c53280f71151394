//! The CloudEvents HTTP protocol binding 1.0, as eventbus speaks it.
//!
//! - [`ContentMode::of`]: which of the binding's three content modes a
//!   request is in, from its `Content-Type` (case-insensitive, parameters
//!   such as `; charset=utf-8` allowed):
//!   `application/cloudevents+json` is [structured](ContentMode::Structured),
//!   `application/cloudevents-batch+json` is [batch](ContentMode::Batch),
//!   any other `application/cloudevents+…` or `application/cloudevents-batch+…`
//!   is a format this crate does not read ([`Unsupported`]), and everything
//!   else, or no `Content-Type`, is [binary](ContentMode::Binary);
//! - [`from_binary`], [`from_structured`], [`from_batch`]: a request's
//!   events, each checked by the one validator of `eventbus-core`
//!   ([`Envelope::parse`]), so an event refused here is refused with the
//!   very words a dead letter would carry;
//! - [`to_binary`]: the reverse, structured-mode JSON to `ce-*` headers and
//!   a body, for [`send`](crate::send);
//! - [`encode_value`] / [`decode_value`]: the binding's percent-encoding of
//!   header values (§3.1.3.2).
//!
//! # Binary mode
//!
//! Each `ce-<name>` header (names are case-insensitive) is the attribute
//! `<name>`, its value percent-decoded; `Content-Type` is
//! `datacontenttype`. Extension values stay strings (a header cannot say
//! whether `7` was a number). The body is `data`:
//!
//! - empty: no `data`;
//! - a JSON `datacontenttype` (`application/json`, `text/json`, `*/*+json`)
//!   or none: the body must be JSON (a body that is not is refused when the
//!   type says JSON, and kept as `data_base64` when there is no type);
//! - a text type (`text/*`, `*/xml`, `*/*+xml`): a string `data` when the
//!   body is UTF-8;
//! - anything else: `data_base64`.
//!
//! The result is one structured-mode CloudEvent, the same bytes a
//! structured request with that event would have carried.
//!
//! # Percent-encoding
//!
//! Header values are percent-encoded as the binding says: a space, `"`,
//! `%` and everything outside U+0021–U+007E become the `%XX` of their
//! UTF-8 bytes. Decoding turns `%XX` into bytes and requires the result to
//! be UTF-8: a malformed sequence or bytes that are not UTF-8 (an overlong
//! `%C0%A0`, a lone `%E2%82`) are refused with a reason.
//!
//! ```
//! use eventbus_http::binding::{decode_value, encode_value};
//!
//! // The binding's own example.
//! assert_eq!(encode_value("Euro € 😀"), "Euro%20%E2%82%AC%20%F0%9F%98%80");
//! assert_eq!(decode_value(b"Euro%20%E2%82%AC%20%F0%9F%98%80").unwrap(), "Euro € 😀");
//! // What needs no encoding is borrowed as it is.
//! assert_eq!(encode_value("/reviews/1?x=y"), "/reviews/1?x=y");
//! assert_eq!(encode_value("100% \"sure\""), "100%25%20%22sure%22");
//! // Refused: not UTF-8 (an overlong encoding of a space), not `%XX`.
//! let why = decode_value(b"a%C0%A0b").unwrap_err().to_string();
//! assert!(why.contains("not UTF-8"), "{why}");
//! assert!(decode_value(b"50%").is_err());
//! assert!(decode_value(b"%zz").is_err());
//! ```
//!
//! # Example: a binary-mode request as the bus sees it
//!
//! ```
//! use axum::http::{HeaderMap, HeaderValue};
//! use eventbus_http::binding::{self, ContentMode};
//!
//! let mut headers = HeaderMap::new();
//! headers.insert("ce-specversion", HeaderValue::from_static("1.0"));
//! headers.insert("ce-id", HeaderValue::from_static("1"));
//! headers.insert("ce-type", HeaderValue::from_static("review_created"));
//! headers.insert("ce-source", HeaderValue::from_static("/reviews"));
//! headers.insert("CE-Subject", HeaderValue::from_static("caf%C3%A9"));
//! headers.insert("content-type", HeaderValue::from_static("application/json"));
//! assert_eq!(ContentMode::of(&headers).unwrap(), ContentMode::Binary);
//!
//! let event = binding::from_binary(&headers, br#"{"id": 7}"#).unwrap();
//! assert_eq!(event.event_type(), "review_created");
//! assert_eq!(event.subject(), Some("café"));
//! assert_eq!(
//!     std::str::from_utf8(event.payload()).unwrap(),
//!     r#"{"specversion":"1.0","id":"1","type":"review_created","source":"/reviews","datacontenttype":"application/json","subject":"café","data":{"id": 7}}"#
//! );
//!
//! // And back: the same headers (values percent-encoded) and body.
//! let binary = binding::to_binary(event.payload()).unwrap();
//! assert_eq!(binary.headers["ce-subject"], "caf%C3%A9");
//! assert_eq!(binary.headers["content-type"], "application/json");
//! assert_eq!(&binary.body[..], br#"{"id": 7}"#);
//! ```

use std::borrow::Cow;
use std::fmt;

use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use bytes::Bytes;
use eventbus_core::Envelope;
use eventbus_core::codec::{Attributes, DecodeError, is_json_media_type};
use eventbus_core::trace::{TRACEPARENT, TRACESTATE, TraceContext};
use percent_encoding::{AsciiSet, CONTROLS};
use serde_json::value::RawValue;

/// The media type of a structured-mode CloudEvent in JSON.
pub const STRUCTURED: &str = "application/cloudevents+json";
/// The media type of a batch of CloudEvents in JSON (a JSON array of
/// structured events).
pub const BATCH: &str = "application/cloudevents-batch+json";
/// The prefix of the headers that carry attributes in binary mode.
pub const PREFIX: &str = "ce-";

/// The required attributes, in the order they are written.
const REQUIRED: [&str; 4] = ["specversion", "id", "type", "source"];

/// How the events of a request are put into it (binding §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentMode {
    /// Attributes in `ce-*` headers, `data` as the body.
    Binary,
    /// One event as `application/cloudevents+json`.
    Structured,
    /// A JSON array of events as `application/cloudevents-batch+json`.
    Batch,
}

/// A `Content-Type` that names a CloudEvents format other than JSON
/// (`application/cloudevents+xml`, `application/cloudevents-batch+protobuf`),
/// or that is not readable text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "Content-Type {content_type} is not a CloudEvents format this endpoint reads: send `application/cloudevents+json`, `application/cloudevents-batch+json`, or binary mode (attributes in ce- headers, data as the body)"
)]
pub struct Unsupported {
    /// The `Content-Type` given, escaped and quoted.
    pub content_type: String,
}

impl ContentMode {
    /// The content mode of a request (or response) with these headers.
    ///
    /// ```
    /// use axum::http::{HeaderMap, HeaderValue, header::CONTENT_TYPE};
    /// use eventbus_http::binding::ContentMode;
    ///
    /// let mode = |ct: &'static str| {
    ///     let mut h = HeaderMap::new();
    ///     h.insert(CONTENT_TYPE, HeaderValue::from_static(ct));
    ///     ContentMode::of(&h)
    /// };
    /// assert_eq!(mode("Application/CloudEvents+JSON; charset=utf-8"), Ok(ContentMode::Structured));
    /// assert_eq!(mode("application/cloudevents-batch+json"), Ok(ContentMode::Batch));
    /// assert_eq!(mode("application/json"), Ok(ContentMode::Binary));
    /// assert!(mode("application/cloudevents+xml").is_err());
    /// assert_eq!(ContentMode::of(&HeaderMap::new()), Ok(ContentMode::Binary));
    /// ```
    pub fn of(headers: &HeaderMap) -> Result<Self, Unsupported> {
        let Some(value) = headers.get(CONTENT_TYPE) else {
            return Ok(Self::Binary);
        };
        let unsupported = || Unsupported {
            content_type: format!(
                "`{}`",
                eventbus_core::escape::escape(&String::from_utf8_lossy(value.as_bytes()))
            ),
        };
        let Ok(text) = value.to_str() else {
            return Err(unsupported());
        };
        let essence = text.split(';').next().unwrap_or_default().trim();
        let lower = essence.to_ascii_lowercase();
        if lower == STRUCTURED {
            Ok(Self::Structured)
        } else if lower == BATCH {
            Ok(Self::Batch)
        } else if lower.starts_with("application/cloudevents+")
            || lower.starts_with("application/cloudevents-batch+")
            || lower == "application/cloudevents"
            || lower == "application/cloudevents-batch"
        {
            Err(unsupported())
        } else {
            Ok(Self::Binary)
        }
    }
}

/// What the binding percent-encodes besides non-ASCII: controls, space,
/// `"`, `%` (and DEL, a control).
const ENCODED: &AsciiSet = &CONTROLS.add(b' ').add(b'"').add(b'%');

/// Percent-encodes a header value as binding §3.1.3.2 says (see [the module
/// docs](self)); borrowed when nothing needs encoding.
pub fn encode_value(value: &str) -> Cow<'_, str> {
    percent_encoding::utf8_percent_encode(value, ENCODED).into()
}

/// Why a header value could not be percent-decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidEncoding(String);

/// Percent-decodes a header value (binding §3.1.3.2): `%XX` sequences become
/// bytes, and the whole must be UTF-8. Characters that were not encoded
/// are kept as they are.
pub fn decode_value(value: &[u8]) -> Result<Cow<'_, str>, InvalidEncoding> {
    if !value.contains(&b'%') {
        return std::str::from_utf8(value)
            .map(Cow::Borrowed)
            .map_err(|e| not_utf8(value, e.valid_up_to(), e.error_len()));
    }
    let mut out = Vec::with_capacity(value.len());
    // Where each output byte came from, to name the input in a reason.
    let mut at = 0;
    while at < value.len() {
        let b = value[at];
        if b == b'%' {
            let hex = |i: usize| value.get(i).and_then(|&c| char::from(c).to_digit(16));
            let (Some(hi), Some(lo)) = (hex(at + 1), hex(at + 2)) else {
                let seq = &value[at..value.len().min(at + 3)];
                return Err(InvalidEncoding(format!(
                    "`{}` at byte {at} is not a percent-encoded byte (`%` and two hex digits; a `%` itself is `%25`)",
                    eventbus_core::escape::escape(&String::from_utf8_lossy(seq))
                )));
            };
            out.push((hi * 16 + lo) as u8);
            at += 3;
        } else {
            out.push(b);
            at += 1;
        }
    }
    match String::from_utf8(out) {
        Ok(s) => Ok(Cow::Owned(s)),
        Err(e) => {
            let utf8 = e.utf8_error();
            Err(not_utf8_decoded(
                value,
                utf8.valid_up_to(),
                utf8.error_len(),
            ))
        }
    }
}

/// The reason for a value whose raw bytes are not UTF-8.
#[cold]
fn not_utf8(value: &[u8], valid: usize, len: Option<usize>) -> InvalidEncoding {
    let bad = &value[valid..len.map_or(value.len(), |n| valid + n)];
    InvalidEncoding(format!(
        "is not UTF-8 at byte {valid} ({}): non-ASCII characters must be sent percent-encoded as UTF-8",
        hex(bad)
    ))
}

/// The reason for a value whose decoded bytes are not UTF-8, naming the
/// percent-encoded sequence that failed.
#[cold]
fn not_utf8_decoded(value: &[u8], valid: usize, len: Option<usize>) -> InvalidEncoding {
    // Walk the input again to find where the `valid`-th output byte starts.
    let (mut input, mut output) = (0, 0);
    while output < valid && input < value.len() {
        input += if value[input] == b'%' { 3 } else { 1 };
        output += 1;
    }
    let start = input;
    let bad_len = len.unwrap_or(usize::MAX);
    let mut end = start;
    let mut n = 0;
    while n < bad_len && end < value.len() {
        end += if value[end] == b'%' { 3 } else { 1 };
        n += 1;
    }
    // Show the continuation bytes that follow as part of the sequence
    // (`%C0%A0`, not `%C0`).
    let byte_at = |i: usize| match value.get(i) {
        Some(b'%') => value
            .get(i + 1..i + 3)
            .and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok()),
        other => other.copied(),
    };
    while n < 4 && byte_at(end).is_some_and(|b| b & 0xC0 == 0x80) {
        end += if value[end] == b'%' { 3 } else { 1 };
        n += 1;
    }
    let seq = String::from_utf8_lossy(&value[start..end.min(value.len())]);
    let why = if len.is_none() {
        "an incomplete UTF-8 sequence at the end"
    } else {
        "not UTF-8 (an invalid or overlong encoding)"
    };
    InvalidEncoding(format!(
        "percent-decodes to bytes that are not UTF-8: `{}` at byte {start} is {why}; percent-encode the UTF-8 bytes of each character",
        eventbus_core::escape::escape(&seq)
    ))
}

/// Bytes as `0xC0 0xA0`.
fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("0x{b:02X}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A reason about the request, before there is an event to name.
fn reason(message: impl Into<String>) -> DecodeError {
    DecodeError::new(None, message)
}

/// The one structured-mode CloudEvent of a binary-mode request, checked by
/// the validator (see [the module docs](self)).
///
/// Fails, with a reason naming the header, on a missing required `ce-`
/// header, a header given twice, a value that does not percent-decode, a
/// body that is not what `Content-Type` says, and on everything the
/// validator refuses (in its own words).
pub fn from_binary(headers: &HeaderMap, body: &[u8]) -> Result<Envelope, DecodeError> {
    let json = binary_to_json(headers, body)?;
    Envelope::parse(Bytes::from(json))
}

/// A header's value as text: percent-decoded for a `ce-` header.
fn header_text<'h>(name: &str, value: &'h HeaderValue) -> Result<Cow<'h, str>, DecodeError> {
    decode_value(value.as_bytes()).map_err(|e| reason(format!("header `{name}` {e}")))
}

/// Writes a JSON string member `,"name":"value"` (no comma for the first).
fn member(buf: &mut Vec<u8>, name: &str, value: &str) {
    if buf.len() > 1 {
        buf.push(b',');
    }
    // Writing a `&str` into a `Vec` cannot fail.
    let _ = serde_json::to_writer(&mut *buf, name);
    buf.push(b':');
    let _ = serde_json::to_writer(&mut *buf, value);
}

fn binary_to_json(headers: &HeaderMap, body: &[u8]) -> Result<Vec<u8>, DecodeError> {
    let mut required: [Option<Cow<'_, str>>; 4] = Default::default();
    let mut optional: Vec<(String, Cow<'_, str>)> = Vec::new();
    let mut seen_ce = false;
    for name in headers.keys() {
        let header = name.as_str(); // lower case already
        let Some(attr) = header.strip_prefix(PREFIX) else {
            continue;
        };
        seen_ce = true;
        let mut values = headers.get_all(name).iter();
        let value = values.next().expect("a header in keys() has a value");
        if values.next().is_some() {
            return Err(reason(format!(
                "header `{header}` is given more than once; an attribute has one value"
            )));
        }
        match attr {
            "datacontenttype" => {
                return Err(reason(
                    "header `ce-datacontenttype` is not part of binary mode: send the data's media type as `Content-Type`",
                ));
            }
            "data" | "data_base64" => {
                return Err(reason(format!(
                    "header `{header}` is not an attribute: in binary mode the data is the request body"
                )));
            }
            _ => {}
        }
        let text = header_text(header, value)?;
        match REQUIRED.iter().position(|r| *r == attr) {
            Some(i) => required[i] = Some(text),
            None => optional.push((attr.to_owned(), text)),
        }
    }
    let missing: Vec<String> = REQUIRED
        .iter()
        .zip(&required)
        .filter(|(_, v)| v.is_none())
        .map(|(r, _)| format!("`ce-{r}`"))
        .collect();
    if !missing.is_empty() {
        let list = missing.join(", ");
        return Err(reason(if seen_ce {
            format!(
                "binary mode: the request has no header {list}; an event needs ce-specversion, ce-id, ce-type and ce-source"
            )
        } else {
            let ct = match headers.get(CONTENT_TYPE) {
                Some(ct) => format!(
                    "Content-Type `{}`",
                    eventbus_core::escape::escape(&String::from_utf8_lossy(ct.as_bytes()))
                ),
                None => "no Content-Type".to_owned(),
            };
            format!(
                "the request has {ct} and no ce- headers, so it is read in binary mode, which needs the headers ce-specversion, ce-id, ce-type and ce-source; to send a whole event as JSON, use `Content-Type: application/cloudevents+json`"
            )
        }));
    }
    let datacontenttype = match headers.get(CONTENT_TYPE) {
        Some(ct) => Some(ct.to_str().map_err(|_| {
            reason("header `Content-Type` is not ASCII text: a media type is ASCII")
        })?),
        None => None,
    };

    let mut buf = Vec::with_capacity(256 + body.len() * 4 / 3);
    buf.push(b'{');
    for (name, value) in REQUIRED.iter().zip(&required) {
        member(&mut buf, name, value.as_deref().unwrap_or_default());
    }
    if let Some(ct) = datacontenttype {
        member(&mut buf, "datacontenttype", ct);
    }
    for (name, value) in &optional {
        member(&mut buf, name, value);
    }
    if !body.is_empty() {
        write_data(&mut buf, datacontenttype, body)?;
    }
    buf.push(b'}');
    Ok(buf)
}

/// Whether a media type is text: `text/*`, `*/xml`, `*/*+xml`.
fn is_text_media_type(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let Some((ty, sub)) = essence.split_once('/') else {
        return false;
    };
    ty == "text" || sub == "xml" || sub.ends_with("+xml")
}

/// Writes the `data` (or `data_base64`) member for a binary-mode body.
fn write_data(
    buf: &mut Vec<u8>,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<(), DecodeError> {
    if is_json_media_type(content_type) {
        match serde_json::from_slice::<&RawValue>(body) {
            Ok(raw) => {
                buf.extend_from_slice(b",\"data\":");
                buf.extend_from_slice(raw.get().as_bytes());
                return Ok(());
            }
            Err(e) => {
                if let Some(ct) = content_type {
                    return Err(reason(format!(
                        "the body is not JSON, but Content-Type `{}` says it is: {e}",
                        eventbus_core::escape::escape(ct)
                    )));
                }
                // No type given and not JSON: binary data.
            }
        }
    } else if content_type.is_some_and(is_text_media_type)
        && let Ok(text) = std::str::from_utf8(body)
    {
        buf.extend_from_slice(b",\"data\":");
        let _ = serde_json::to_writer(&mut *buf, text);
        return Ok(());
    }
    buf.extend_from_slice(b",\"data_base64\":\"");
    base64_encode(buf, body);
    buf.push(b'"');
    Ok(())
}

/// Appends standard, padded base64 (RFC 4648 §4).
fn base64_encode(out: &mut Vec<u8>, bytes: &[u8]) {
    const DIGITS: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for chunk in bytes.chunks(3) {
        let n = chunk.len();
        let word = u32::from(chunk[0]) << 16
            | u32::from(*chunk.get(1).unwrap_or(&0)) << 8
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= n {
                out.push(DIGITS[(word >> (18 - 6 * i) & 63) as usize]);
            } else {
                out.push(b'=');
            }
        }
    }
}

/// The event of a structured-mode request: the body as it is, checked by
/// the validator.
pub fn from_structured(body: Bytes) -> Result<Envelope, DecodeError> {
    Envelope::parse(body)
}

/// The events of a batch-mode body, each as its own bytes (slices of
/// `body`, not copied), unchecked.
///
/// Fails when the body is not one JSON array.
pub fn split_batch(body: &Bytes) -> Result<Vec<Bytes>, DecodeError> {
    let items: Vec<&RawValue> = serde_json::from_slice(body).map_err(|e| {
        reason(format!(
            "a batch is a JSON array of structured events (`application/cloudevents-batch+json`), and this body is not: {e}"
        ))
    })?;
    Ok(items
        .into_iter()
        .map(|raw| body.slice_ref(raw.get().as_bytes()))
        .collect())
}

/// Checks each event of a batch ([`split_batch`]) with the validator; a
/// reason names the index of the event that failed (`event 2 of the
/// batch: ...`) and carries its type and id.
pub fn check_batch(events: Vec<Bytes>) -> Result<Vec<Envelope>, DecodeError> {
    events
        .into_iter()
        .enumerate()
        .map(|(i, event)| {
            Envelope::parse(event).map_err(|e| {
                DecodeError::new(e.event_type(), format!("event {i} of the batch: {e}"))
                    .with_event_id(e.event_id())
            })
        })
        .collect()
}

/// The events of a batch-mode body: [`split_batch`], then [`check_batch`].
pub fn from_batch(body: &Bytes) -> Result<Vec<Envelope>, DecodeError> {
    check_batch(split_batch(body)?)
}

/// The W3C Trace Context header of an HTTP hop (`traceparent`); its
/// companion is [`TRACESTATE_HEADER`].
pub const TRACEPARENT_HEADER: &str = "traceparent";
/// The W3C `tracestate` header of an HTTP hop.
pub const TRACESTATE_HEADER: &str = "tracestate";

/// The trace context of the request itself: its `traceparent` and
/// `tracestate` headers (not the event's `ce-traceparent`), if valid; a
/// malformed one is logged at `DEBUG` and ignored.
pub fn request_trace_context(headers: &HeaderMap) -> Option<TraceContext> {
    let parent = headers.get(TRACEPARENT_HEADER)?.to_str().ok()?;
    let state = headers.get(TRACESTATE_HEADER).and_then(|v| v.to_str().ok());
    match TraceContext::parse(parent, state) {
        Ok(tc) => Some(tc),
        Err(e) => {
            tracing::debug!("ignoring the request's trace context: {e}");
            None
        }
    }
}

/// `event` with the trace context of the request's own `traceparent`
/// header ([`request_trace_context`]) when the event has no `traceparent`
/// of its own (a `ce-traceparent` header or the attribute always wins).
pub fn adopt_request_trace(headers: &HeaderMap, event: Envelope) -> Envelope {
    if event.extension(TRACEPARENT).is_some() {
        return event;
    }
    let Some(tc) = request_trace_context(headers) else {
        return event;
    };
    let payload = event.payload();
    let Some(open) = payload.iter().position(|&b| b == b'{') else {
        return event;
    };
    let mut buf = Vec::with_capacity(payload.len() + 128);
    buf.push(b'{');
    member(&mut buf, TRACEPARENT, &tc.traceparent());
    if let Some(state) = &tc.state {
        member(&mut buf, TRACESTATE, state);
    }
    buf.push(b',');
    buf.extend_from_slice(&payload[open + 1..]);
    // Valid unless the state holds what an attribute may not: then the
    // event goes on as it came.
    Envelope::parse(Bytes::from(buf)).unwrap_or(event)
}

/// A binary-mode message: `ce-*` headers (and `Content-Type`) and a body.
#[derive(Debug, Clone, Default)]
pub struct Binary {
    /// `ce-<attribute>` for each attribute but `datacontenttype`, values
    /// percent-encoded; `Content-Type` for `datacontenttype`.
    pub headers: HeaderMap,
    /// The event's data: JSON text, a string's UTF-8, or the bytes of
    /// `data_base64`; empty without data.
    pub body: Bytes,
}

/// The binary-mode form of a structured-mode CloudEvent (checked by the
/// validator first).
///
/// Extension values become their text (`true`, `42`). An event with JSON
/// data and no `datacontenttype` is sent with `Content-Type:
/// application/json`, which means the same.
pub fn to_binary(event: &[u8]) -> Result<Binary, DecodeError> {
    let attrs = Attributes::parse(event)?;
    let mut headers = HeaderMap::new();
    let mut put = |name: &str, value: &str| -> Result<(), DecodeError> {
        let name = HeaderName::from_bytes(format!("{PREFIX}{name}").as_bytes()).map_err(|_| {
            DecodeError::new(
                Some(&attrs.ty),
                format!(
                    "attribute `{}` cannot be an HTTP header name",
                    eventbus_core::escape::escape(name)
                ),
            )
        })?;
        let value = HeaderValue::from_str(&encode_value(value))
            .expect("a percent-encoded value is a valid header value");
        headers.insert(name, value);
        Ok(())
    };
    put("specversion", &attrs.specversion)?;
    put("id", &attrs.id)?;
    put("type", &attrs.ty)?;
    put("source", &attrs.source)?;
    for (name, value) in [
        ("subject", &attrs.subject),
        ("time", &attrs.time),
        ("dataschema", &attrs.dataschema),
    ] {
        if let Some(value) = value {
            put(name, value)?;
        }
    }
    for (name, raw) in &attrs.extensions {
        match serde_json::from_str::<serde_json::Value>(raw.get()) {
            Ok(serde_json::Value::String(s)) => put(name, &s)?,
            Ok(serde_json::Value::Null) => {}
            _ => put(name, raw.get())?,
        }
    }
    let fail = |why: String| DecodeError::new(Some(&attrs.ty), why).with_event_id(Some(&attrs.id));
    let json = is_json_media_type(attrs.datacontenttype.as_deref());
    let body = if let Some(bytes) = attrs.binary_data() {
        Bytes::from(bytes)
    } else if let Some(raw) = attrs.data {
        if json {
            Bytes::copy_from_slice(raw.get().as_bytes())
        } else {
            let text: String = serde_json::from_str(raw.get())
                .map_err(|e| fail(format!("`data` cannot be read: {e}")))?;
            Bytes::from(text)
        }
    } else {
        Bytes::new()
    };
    let content_type = match attrs.datacontenttype.as_deref() {
        Some(ct) => Some(ct),
        None if attrs.data.is_some() => Some("application/json"),
        None => None,
    };
    if let Some(ct) = content_type {
        let value = HeaderValue::from_str(ct).map_err(|_| {
            fail(format!(
                "`datacontenttype` {} cannot be an HTTP header value",
                Quoted(ct)
            ))
        })?;
        headers.insert(CONTENT_TYPE, value);
    }
    Ok(Binary { headers, body })
}

/// A value in a reason, escaped and between backticks.
struct Quoted<'a>(&'a str);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}`", eventbus_core::escape::Escaped(self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    const BASE: [(&str, &str); 4] = [
        ("ce-specversion", "1.0"),
        ("ce-id", "1"),
        ("ce-type", "t"),
        ("ce-source", "/s"),
    ];

    fn with(extra: &[(&str, &str)]) -> HeaderMap {
        let mut all = BASE.to_vec();
        all.extend_from_slice(extra);
        headers(&all)
    }

    fn json(headers: &HeaderMap, body: &[u8]) -> String {
        String::from_utf8(binary_to_json(headers, body).unwrap()).unwrap()
    }

    #[test]
    fn spec_vectors() {
        for (text, encoded) in [
            ("Euro € 😀", "Euro%20%E2%82%AC%20%F0%9F%98%80"),
            ("a\"b%c", "a%22b%25c"),
            ("tab\there", "tab%09here"),
            ("del\u{7f}", "del%7F"),
            (
                "~!#$&'()*+,/:;<=>?@[\\]^_`{|}",
                "~!#$&'()*+,/:;<=>?@[\\]^_`{|}",
            ),
            ("", ""),
        ] {
            assert_eq!(encode_value(text), encoded, "{text:?}");
            assert_eq!(decode_value(encoded.as_bytes()).unwrap(), text, "{encoded}");
        }
        // Lower-case hex and unencoded spaces are read too.
        assert_eq!(decode_value(b"%e2%82%ac a").unwrap(), "€ a");
    }

    #[test]
    fn bad_encodings() {
        for (bad, why) in [
            (&b"%C0%A0"[..], "`%C0%A0` at byte 0 is not UTF-8"),
            (b"ab%E2%82", "`%E2%82` at byte 2 is an incomplete"),
            (b"%FF", "`%FF` at byte 0 is not UTF-8"),
            (b"%", "`%` at byte 0 is not a percent-encoded byte"),
            (b"a%2", "`%2` at byte 1"),
            (b"%G0", "`%G0` at byte 0"),
            (b"\xC3", "is not UTF-8 at byte 0 (0xC3)"),
        ] {
            let got = decode_value(bad).unwrap_err().to_string();
            assert!(got.contains(why), "{bad:?}: {got}");
        }
    }

    #[test]
    fn modes() {
        for (ct, mode) in [
            ("application/cloudevents+json", Ok(ContentMode::Structured)),
            (
                "APPLICATION/CLOUDEVENTS+JSON;charset=UTF-8",
                Ok(ContentMode::Structured),
            ),
            (
                " application/cloudevents-batch+json ; x=y",
                Ok(ContentMode::Batch),
            ),
            ("application/json", Ok(ContentMode::Binary)),
            ("text/plain", Ok(ContentMode::Binary)),
            ("application/cloudevents+xml", Err(())),
            ("application/cloudevents-batch+protobuf", Err(())),
            ("application/cloudevents", Err(())),
        ] {
            assert_eq!(
                ContentMode::of(&headers(&[("content-type", ct)])).map_err(drop),
                mode,
                "{ct}"
            );
        }
        let why = ContentMode::of(&headers(&[("content-type", "application/cloudevents+xml")]))
            .unwrap_err()
            .to_string();
        assert!(why.contains("`application/cloudevents+xml`"), "{why}");
    }

    #[test]
    fn binary_data_by_content_type() {
        let h = |ct: &str| with(&[("content-type", ct)]);
        assert!(json(&h("application/json"), b" [1, 2] ").ends_with(r#","data":[1, 2]}"#));
        assert!(json(&h("application/vnd.x+json"), b"7").ends_with(r#","data":7}"#));
        assert!(json(&with(&[]), b"{\"a\":1}").ends_with(r#","data":{"a":1}}"#));
        assert!(json(&with(&[]), b"not json").ends_with(r#","data_base64":"bm90IGpzb24="}"#));
        assert!(json(&h("text/plain"), b"a\nb").ends_with(r#","data":"a\nb"}"#));
        assert!(json(&h("application/xml"), b"<a/>").ends_with(r#","data":"<a/>"}"#));
        assert!(json(&h("text/plain"), b"\xff").ends_with(r#","data_base64":"/w=="}"#));
        assert!(
            json(&h("application/octet-stream"), b"\x00\x01\x02\x03")
                .ends_with(r#","data_base64":"AAECAw=="}"#)
        );
        assert!(
            json(&h("application/json"), b"").ends_with(r#""datacontenttype":"application/json"}"#)
        );
        let why = binary_to_json(&h("application/json"), b"{oops")
            .unwrap_err()
            .to_string();
        assert!(
            why.contains("the body is not JSON, but Content-Type `application/json`"),
            "{why}"
        );
    }

    #[test]
    fn binary_headers() {
        let got = json(
            &with(&[("CE-MyExt", "a%20b"), ("ce-subject", "%E2%82%AC")]),
            b"",
        );
        assert_eq!(
            got,
            r#"{"specversion":"1.0","id":"1","type":"t","source":"/s","myext":"a b","subject":"€"}"#
        );
        let why = |h: HeaderMap| binary_to_json(&h, b"").unwrap_err().to_string();
        let w = why(headers(&[("ce-id", "1"), ("ce-type", "t")]));
        assert!(w.contains("no header `ce-specversion`, `ce-source`"), "{w}");
        let w = why(headers(&[("content-type", "application/json")]));
        assert!(
            w.contains("Content-Type `application/json` and no ce- headers"),
            "{w}"
        );
        let w = why(with(&[("ce-x", "1"), ("ce-x", "2")]));
        assert!(w.contains("`ce-x` is given more than once"), "{w}");
        let w = why(with(&[("ce-data_base64", "Zm9v")]));
        assert!(w.contains("not an attribute"), "{w}");
        let w = why(with(&[("ce-subject", "%C0%A0")]));
        assert!(w.contains("header `ce-subject` percent-decodes"), "{w}");
        // The validator's own words for the rest.
        let w = from_binary(&with(&[("ce-my-ext", "x")]), b"")
            .unwrap_err()
            .to_string();
        assert!(w.contains("my-ext"), "{w}");
    }

    #[test]
    fn binary_round_trip() {
        let event = r#"{"specversion":"1.0","id":"1","type":"t","source":"/s","subject":"Euro € 😀","time":"2026-01-01T00:00:00Z","n":7,"b":true,"datacontenttype":"text/plain","data":"hi"}"#;
        let binary = to_binary(event.as_bytes()).unwrap();
        assert_eq!(
            binary.headers["ce-subject"],
            "Euro%20%E2%82%AC%20%F0%9F%98%80"
        );
        assert_eq!(binary.headers["ce-n"], "7");
        assert_eq!(binary.headers["ce-b"], "true");
        assert_eq!(binary.headers["content-type"], "text/plain");
        assert_eq!(&binary.body[..], b"hi");
        let back = from_binary(&binary.headers, &binary.body).unwrap();
        assert_eq!(back.subject(), Some("Euro € 😀"));
        assert_eq!(back.time(), Some("2026-01-01T00:00:00Z"));

        let b64 = br#"{"specversion":"1.0","id":"1","type":"t","source":"/s","datacontenttype":"application/octet-stream","data_base64":"AAEC"}"#;
        let binary = to_binary(b64).unwrap();
        assert_eq!(&binary.body[..], &[0, 1, 2]);
        let back = from_binary(&binary.headers, &binary.body).unwrap();
        assert!(
            std::str::from_utf8(back.payload())
                .unwrap()
                .contains(r#""data_base64":"AAEC""#)
        );
    }

    #[test]
    fn batches() {
        let body = Bytes::from_static(
            br#"[{"specversion":"1.0","id":"1","type":"t","source":"/s"}, {"specversion":"1.0","id":"2","type":"t","source":""}]"#,
        );
        let parts = split_batch(&body).unwrap();
        assert_eq!(parts.len(), 2);
        let why = check_batch(parts).unwrap_err();
        assert!(
            why.to_string().starts_with("event 1 of the batch: "),
            "{why}"
        );
        assert_eq!(why.event_id(), Some("2"));
        assert!(split_batch(&Bytes::from_static(b"{}")).is_err());
        assert!(from_batch(&Bytes::from_static(b"[]")).unwrap().is_empty());
    }
}
