//! W3C Trace Context (`traceparent`, `tracestate`), as the CloudEvents
//! Distributed Tracing extension carries it.
//!
//! [`TraceContext`] is parsed and formatted here, without OpenTelemetry: a
//! transport or a bus without it still carries the trace of an event from
//! service to service. Parsing is strict as the W3C recommendation asks
//! (version `00` exactly 55 characters of lowercase hex; all-zero ids
//! invalid; version `ff` invalid; a later version read by its first four
//! fields), and a malformed header is an error the caller ignores: a trace
//! is never a reason to refuse an event.

use std::fmt;

/// The CloudEvents extension attribute of the `traceparent` header.
pub const TRACEPARENT: &str = "traceparent";
/// The CloudEvents extension attribute of the `tracestate` header.
pub const TRACESTATE: &str = "tracestate";

/// The longest `tracestate` kept (the W3C limit a vendor must propagate);
/// a longer one is dropped rather than cut inside a member.
pub const MAX_TRACESTATE: usize = 512;

/// A W3C trace context: the trace, the parent span, the flags and the
/// vendor `tracestate`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct TraceContext {
    /// The trace id (never all zero).
    pub trace_id: [u8; 16],
    /// The id of the span that is the parent (never all zero).
    pub span_id: [u8; 8],
    /// The trace flags; bit 0 is `sampled`.
    pub flags: u8,
    /// The `tracestate` header as received, if any.
    pub state: Option<String>,
}

/// Why a `traceparent` was not read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid traceparent `{value}`: {why}")]
pub struct TraceParentError {
    value: String,
    why: &'static str,
}

impl TraceParentError {
    pub(crate) fn new(value: &str, why: &'static str) -> Self {
        // Bounded: the value is logged.
        let value = value.chars().take(64).collect();
        Self { value, why }
    }

    /// What is wrong with it.
    pub fn reason(&self) -> &str {
        self.why
    }
}

/// The value of one lowercase hex digit.
fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

/// `out.len() * 2` lowercase hex digits into `out`.
fn unhex(s: &[u8], out: &mut [u8]) -> bool {
    if s.len() != out.len() * 2 {
        return false;
    }
    for (byte, pair) in out.iter_mut().zip(s.chunks_exact(2)) {
        match (hex(pair[0]), hex(pair[1])) {
            (Some(h), Some(l)) => *byte = h << 4 | l,
            _ => return false,
        }
    }
    true
}

const DIGITS: &[u8; 16] = b"0123456789abcdef";

fn put_hex(out: &mut [u8], bytes: &[u8]) {
    for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 0xf)];
    }
}

impl TraceContext {
    /// The `sampled` bit of [`flags`](Self::flags).
    pub const SAMPLED: u8 = 0x01;

    /// Reads a `traceparent` header, and keeps `tracestate` with it (a
    /// blank or overlong one is dropped).
    ///
    /// ```
    /// use eventbus_core::trace::TraceContext;
    /// let tc = TraceContext::parse(
    ///     "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    ///     Some("congo=t61rcWkgMzE"),
    /// )
    /// .unwrap();
    /// assert!(tc.is_sampled());
    /// assert_eq!(tc.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
    /// assert_eq!(tc.state.as_deref(), Some("congo=t61rcWkgMzE"));
    /// assert!(TraceContext::parse("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", None).is_err());
    /// ```
    pub fn parse(traceparent: &str, tracestate: Option<&str>) -> Result<Self, TraceParentError> {
        let err = |why| TraceParentError::new(traceparent, why);
        // Surrounding whitespace is allowed in an HTTP header value.
        let s = traceparent.trim_matches([' ', '\t']).as_bytes();
        if s.len() < 55 {
            return Err(err("shorter than 55 characters"));
        }
        let mut version = [0u8; 1];
        if !unhex(&s[..2], &mut version) || s[2] != b'-' {
            return Err(err(
                "the version is not two lowercase hex digits and a dash",
            ));
        }
        match version[0] {
            0xff => return Err(err("version ff is invalid")),
            0x00 if s.len() != 55 => return Err(err("version 00 is exactly 55 characters")),
            // A later version: its first four fields are read as 00's, and
            // whatever follows must start with a dash.
            _ if s.len() > 55 && s[55] != b'-' => {
                return Err(err("the flags are not followed by a dash"));
            }
            _ => {}
        }
        let mut trace_id = [0u8; 16];
        if !unhex(&s[3..35], &mut trace_id) || s[35] != b'-' {
            return Err(err("the trace id is not 32 lowercase hex digits"));
        }
        let mut span_id = [0u8; 8];
        if !unhex(&s[36..52], &mut span_id) || s[52] != b'-' {
            return Err(err("the parent id is not 16 lowercase hex digits"));
        }
        let mut flags = [0u8; 1];
        if !unhex(&s[53..55], &mut flags) {
            return Err(err("the flags are not two lowercase hex digits"));
        }
        if trace_id == [0; 16] {
            return Err(err("the trace id is all zeros"));
        }
        if span_id == [0; 8] {
            return Err(err("the parent id is all zeros"));
        }
        // Of a later version only the flags this one knows are kept.
        let flags = if version[0] == 0 {
            flags[0]
        } else {
            flags[0] & Self::SAMPLED
        };
        let state = tracestate
            .map(|s| s.trim_matches([' ', '\t']))
            .filter(|s| !s.is_empty() && s.len() <= MAX_TRACESTATE)
            .map(str::to_owned);
        Ok(Self {
            trace_id,
            span_id,
            flags,
            state,
        })
    }

    /// A new trace: random ids, sampled.
    pub fn new_root() -> Self {
        Self {
            trace_id: nonzero(fastrand::u128(..)).to_be_bytes(),
            span_id: fresh_span_id(),
            flags: Self::SAMPLED,
            state: None,
        }
    }

    /// The same trace, flags and state with a fresh span id: the context a
    /// new span continuing this one writes.
    pub fn child(&self) -> Self {
        Self {
            trace_id: self.trace_id,
            span_id: fresh_span_id(),
            flags: self.flags,
            state: self.state.clone(),
        }
    }

    /// Whether the `sampled` flag is set.
    pub fn is_sampled(&self) -> bool {
        self.flags & Self::SAMPLED != 0
    }

    /// The `traceparent` header (version `00`), 55 bytes of ASCII.
    pub fn traceparent_bytes(&self) -> [u8; 55] {
        let mut out = [b'-'; 55];
        out[..2].copy_from_slice(b"00");
        put_hex(&mut out[3..35], &self.trace_id);
        put_hex(&mut out[36..52], &self.span_id);
        put_hex(&mut out[53..55], &[self.flags]);
        out
    }

    /// The `traceparent` header (version `00`).
    pub fn traceparent(&self) -> String {
        // Only ASCII hex digits and dashes.
        String::from_utf8_lossy(&self.traceparent_bytes()).into_owned()
    }

    /// The trace id as 32 lowercase hex digits.
    pub fn trace_id_hex(&self) -> String {
        let mut out = [0u8; 32];
        put_hex(&mut out, &self.trace_id);
        String::from_utf8_lossy(&out).into_owned()
    }

    /// The span id as 16 lowercase hex digits.
    pub fn span_id_hex(&self) -> String {
        let mut out = [0u8; 16];
        put_hex(&mut out, &self.span_id);
        String::from_utf8_lossy(&out).into_owned()
    }
}

fn nonzero(v: u128) -> u128 {
    if v == 0 { 1 } else { v }
}

/// A random span id, never all zero.
fn fresh_span_id() -> [u8; 8] {
    let v = fastrand::u64(..);
    (if v == 0 { 1 } else { v }).to_be_bytes()
}

impl fmt::Display for TraceContext {
    /// The `traceparent` header.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.traceparent_bytes()))
    }
}

impl fmt::Debug for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TraceContext")
            .field("traceparent", &format_args!("{self}"))
            .field("state", &self.state)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn reads_and_writes_the_spec_examples() {
        let tc =
            TraceContext::parse(SPEC, Some("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE")).unwrap();
        assert_eq!(
            tc.trace_id,
            [
                0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e,
                0x47, 0x36
            ]
        );
        assert_eq!(tc.span_id, [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7]);
        assert_eq!(tc.flags, 1);
        assert!(tc.is_sampled());
        assert_eq!(
            tc.state.as_deref(),
            Some("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE")
        );
        assert_eq!(tc.traceparent(), SPEC);
        assert_eq!(tc.to_string(), SPEC);
        assert_eq!(tc.span_id_hex(), "00f067aa0ba902b7");

        let unsampled = TraceContext::parse(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
            None,
        )
        .unwrap();
        assert!(!unsampled.is_sampled());
        assert_eq!(unsampled.state, None);
        // Unknown flags of version 00 are carried on.
        let other = TraceContext::parse(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09",
            None,
        )
        .unwrap();
        assert_eq!(other.flags, 0x09);
        assert!(other.traceparent().ends_with("-09"));
    }

    #[test]
    fn later_versions_are_read_by_their_first_fields() {
        let tc = TraceContext::parse(
            "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09-what-the-future-holds",
            None,
        )
        .unwrap();
        assert_eq!(tc.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        // Only the sampled bit of an unknown version's flags.
        assert_eq!(tc.flags, 0x01);
        // Written back as version 00.
        assert_eq!(tc.traceparent(), SPEC);
        assert!(
            TraceContext::parse(
                "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                None
            )
            .is_ok()
        );
    }

    #[test]
    fn rejects_what_the_spec_says_to_ignore() {
        for (bad, why) in [
            ("", "shorter"),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
                "shorter",
            ),
            (
                "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                "version ff",
            ),
            (
                "0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                "version",
            ),
            (
                "0A-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                "version",
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
                "exactly 55",
            ),
            (
                "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
                "trace id",
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00F067AA0BA902B7-01",
                "parent id",
            ),
            (
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
                "trace id is all zeros",
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
                "parent id is all zeros",
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0x",
                "flags",
            ),
            (
                "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                "version",
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7-01",
                "trace id",
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7_01",
                "parent id",
            ),
            (
                "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01.x",
                "followed by a dash",
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",
                "trace id",
            ),
        ] {
            let err = TraceContext::parse(bad, None).unwrap_err();
            assert!(err.to_string().contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn tracestate_is_kept_unless_blank_or_overlong() {
        let with = |s: &str| TraceContext::parse(SPEC, Some(s)).unwrap().state;
        assert_eq!(with("  a=1 "), Some("a=1".into()));
        assert_eq!(with(""), None);
        assert_eq!(with(&"a".repeat(MAX_TRACESTATE + 1)), None);
    }

    #[test]
    fn children_and_roots_are_valid_contexts() {
        let parent = TraceContext::parse(SPEC, Some("a=1")).unwrap();
        let child = parent.child();
        assert_eq!(child.trace_id, parent.trace_id);
        assert_ne!(child.span_id, parent.span_id);
        assert_eq!(child.state, parent.state);
        assert_eq!(
            TraceContext::parse(&child.traceparent(), Some("a=1")).unwrap(),
            child
        );
        let root = TraceContext::new_root();
        assert!(root.is_sampled());
        assert_eq!(
            TraceContext::parse(&root.traceparent(), None).unwrap(),
            root
        );
    }
}
