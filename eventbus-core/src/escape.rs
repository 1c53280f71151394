//! Text from an event made safe for a log line or an error message.
//!
//! An event's `type`, `id` or a reason quoting them come from whoever wrote
//! the message. [`Escaped`] shows them with every control character escaped
//! (a `type` with a newline cannot forge a log line, a NUL never goes out
//! raw); the reasons of a [`DecodeError`](crate::codec::DecodeError) also
//! elide long values, so a 1 MiB attribute is never quoted in full.

use std::fmt::{self, Write as _};

/// Whether `c` must not reach a log line as it is: control characters (C0,
/// DEL, C1), the Unicode line and paragraph separators, and the
/// bidirectional formatting characters (which reorder what a reader sees).
fn must_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        )
}

/// Writes `c` as an escape: `\n`, `\r`, `\t`, `\0`, otherwise `\u{..}`.
fn write_escape(f: &mut impl fmt::Write, c: char) -> fmt::Result {
    match c {
        '\n' => f.write_str("\\n"),
        '\r' => f.write_str("\\r"),
        '\t' => f.write_str("\\t"),
        '\0' => f.write_str("\\0"),
        c => write!(f, "\\u{{{:x}}}", c as u32),
    }
}

/// Displays a string with its control characters escaped (`\n`, `\0`,
/// `\u{85}`, ...) and everything else as it is.
///
/// Use it for every event attribute or event-derived text that goes into a
/// log line:
///
/// ```
/// use eventbus_core::escape::Escaped;
/// assert_eq!(Escaped("a\nb\0").to_string(), r"a\nb\0");
/// assert_eq!(Escaped("review_created").to_string(), "review_created");
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Escaped<'a>(pub &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0;
        // The common case: printable ASCII, written as it is.
        if s.bytes().all(|b| (0x20..0x7f).contains(&b)) {
            return f.write_str(s);
        }
        let mut start = 0;
        for (i, c) in s.char_indices() {
            if must_escape(c) {
                f.write_str(&s[start..i])?;
                write_escape(f, c)?;
                start = i + c.len_utf8();
            }
        }
        f.write_str(&s[start..])
    }
}

/// `s` with its control characters escaped, as an owned string (unchanged,
/// without a copy, when it has none).
pub fn escape(s: &str) -> std::borrow::Cow<'_, str> {
    if s.chars().any(must_escape) {
        std::borrow::Cow::Owned(Escaped(s).to_string())
    } else {
        std::borrow::Cow::Borrowed(s)
    }
}

/// How many characters of a value a reason quotes before eliding the rest.
const QUOTED_CHARS: usize = 40;

/// A value in a reason: escaped, at most [`QUOTED_CHARS`] characters of it,
/// then `…` and its length in bytes. Written between `open` and `close`
/// (`"..."` for a value, `` `...` `` for a name).
pub(crate) struct Short<'a> {
    text: &'a str,
    open: char,
    close: char,
}

impl fmt::Display for Short<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_char(self.open)?;
        for (chars, c) in self.text.chars().enumerate() {
            if chars == QUOTED_CHARS {
                f.write_char('…')?;
                f.write_char(self.close)?;
                return write!(f, " ({} bytes)", self.text.len());
            }
            if must_escape(c) || (self.open == '"' && matches!(c, '"' | '\\')) {
                if matches!(c, '"' | '\\') {
                    f.write_char('\\')?;
                    f.write_char(c)?;
                } else {
                    write_escape(f, c)?;
                }
            } else {
                f.write_char(c)?;
            }
        }
        f.write_char(self.close)
    }
}

/// A value quoted in a reason: `"abc"`, or `"abc…" (1048576 bytes)`.
pub(crate) fn quoted(text: &str) -> Short<'_> {
    Short {
        text,
        open: '"',
        close: '"',
    }
}

/// A name in a reason: `` `abc` ``, or `` `abc…` (300 bytes) ``.
pub(crate) fn ticked(text: &str) -> Short<'_> {
    Short {
        text,
        open: '`',
        close: '`',
    }
}

/// `s` escaped and cut to about `max` characters: the head, ` … `, and the
/// tail (where a serde message says what was expected).
pub(crate) fn bounded(s: &str, max: usize) -> String {
    let escaped = escape(s);
    let count = escaped.chars().count();
    if count <= max {
        return escaped.into_owned();
    }
    let tail = max / 4;
    let head = max - tail - 3;
    let mut out = String::with_capacity(max * 4);
    out.extend(escaped.chars().take(head));
    out.push_str(" … ");
    out.extend(escaped.chars().skip(count - tail));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_nothing_else() {
        assert_eq!(Escaped("plain").to_string(), "plain");
        assert_eq!(Escaped("Café ☕").to_string(), "Café ☕");
        assert_eq!(
            Escaped("a\nb\r\tc\0d\u{7f}e\u{85}f\u{2028}g\u{202e}").to_string(),
            r"a\nb\r\tc\0d\u{7f}e\u{85}f\u{2028}g\u{202e}"
        );
        assert!(matches!(escape("ok"), std::borrow::Cow::Borrowed(_)));
        assert_eq!(escape("o\nk"), r"o\nk");
    }

    #[test]
    fn long_values_are_elided() {
        let big = "x".repeat(1 << 20);
        let q = quoted(&big).to_string();
        assert!(q.len() < 80, "{q}");
        assert!(q.ends_with("…\" (1048576 bytes)"), "{q}");
        assert_eq!(quoted("a\"b\n").to_string(), r#""a\"b\n""#);
        assert_eq!(ticked("Foo").to_string(), "`Foo`");
        let b = bounded(&format!("start {big} end"), 300);
        assert!(b.chars().count() <= 300, "{}", b.len());
        assert!(b.starts_with("start xxx") && b.ends_with("xxx end"), "{b}");
        assert_eq!(bounded("short\0", 300), r"short\0");
    }
}
