//! Signed webhooks: [Standard Webhooks] signatures and WebSub's
//! `X-Hub-Signature`, for the sender and for a Rust receiver.
//!
//! A Standard Webhooks request carries three headers: `webhook-id` (the
//! message id, the same on every retry), `webhook-timestamp` (unix seconds of
//! this attempt) and `webhook-signature`, a space-separated list of
//! signatures of `{id}.{timestamp}.{body}`:
//!
//! - `v1,<base64>`: HMAC-SHA256 with a shared [`Secret`] (`whsec_<base64>`);
//! - `v1a,<base64>`: ed25519 with a [`SigningKey`] (`whsk_<base64>`), checked
//!   with its [`PublicKey`] (`whpk_<base64>`), which the receiver may publish.
//!
//! A [`Signer`] may hold several keys: while a secret is rotated, the new and
//! the old one both sign, and a receiver holding either accepts the request.
//!
//! ```
//! use std::time::SystemTime;
//! use eventbus_http::signature::{self, Secret, Signer};
//!
//! // The sender: a secret per subscription, handed to the subscriber once.
//! let secret = Secret::generate();
//! let handed_over: String = secret.expose();
//! let headers = Signer::new(secret)
//!     .sign("msg_2KWPBgLlAfxdpx2AI54pPJ85f4W", SystemTime::now(), br#"{"id":7}"#)
//!     .expect("an id without `.`");
//!
//! // The receiver: the same secret, the raw body as it arrived.
//! let secret: Secret = handed_over.parse()?;
//! signature::verify(&headers, br#"{"id":7}"#, &secret)?;
//! assert_eq!(
//!     signature::verify(&headers, br#"{"id":8}"#, &secret),
//!     Err(signature::VerifyError::NoMatchingSignature)
//! );
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! WebSub (W3C, §8) signs only the body, with the subscriber's `hub.secret`:
//! [`hub_signature`] is the value of [`X_HUB_SIGNATURE`],
//! `sha256=<hex HMAC-SHA256>`, and [`verify_hub_signature`] checks it.
//!
//! [Standard Webhooks]: https://www.standardwebhooks.com

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_PAD_INDIFFERENT};
use ed25519_dalek::Signer as _;
use hmac::{Hmac, KeyInit as _, Mac as _};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// `webhook-id`: the message id, the same on every delivery attempt (the
/// receiver's idempotency key).
pub const WEBHOOK_ID: HeaderName = HeaderName::from_static("webhook-id");
/// `webhook-timestamp`: unix seconds of the delivery attempt.
pub const WEBHOOK_TIMESTAMP: HeaderName = HeaderName::from_static("webhook-timestamp");
/// `webhook-signature`: space-separated `v1,<base64>` / `v1a,<base64>` signatures.
pub const WEBHOOK_SIGNATURE: HeaderName = HeaderName::from_static("webhook-signature");
/// WebSub's `X-Hub-Signature`: `sha256=<hex>` of the body.
pub const X_HUB_SIGNATURE: HeaderName = HeaderName::from_static("x-hub-signature");

/// How far a `webhook-timestamp` may be from the receiver's clock, either way.
pub const TOLERANCE: Duration = Duration::from_secs(5 * 60);

/// The shortest secret the specification allows, in bytes (192 bits).
pub const MIN_SECRET_LEN: usize = 24;
/// The longest secret the specification allows, in bytes (512 bits).
pub const MAX_SECRET_LEN: usize = 64;

const SECRET_PREFIX: &str = "whsec_";
const SIGNING_KEY_PREFIX: &str = "whsk_";
const PUBLIC_KEY_PREFIX: &str = "whpk_";

/// A shared HMAC secret of Standard Webhooks, written `whsec_<base64>`.
///
/// Its `Debug` never shows the key, and it has no `Display`: the one way to
/// the text is [`Secret::expose`]. Two secrets compare in constant time.
#[derive(Clone)]
pub struct Secret {
    key: Box<[u8]>,
}

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        crate::constant_time_eq(&self.key, &other.key)
    }
}

impl Eq for Secret {}

impl Secret {
    /// A fresh secret of 32 random bytes from the operating system.
    ///
    /// # Panics
    /// When the operating system has no randomness to give.
    pub fn generate() -> Self {
        Self::generate_len(32).expect("32 bytes is a valid secret length")
    }

    /// A fresh secret of `len` random bytes; `len` must be in
    /// [`MIN_SECRET_LEN`]`..=`[`MAX_SECRET_LEN`].
    ///
    /// # Panics
    /// When the operating system has no randomness to give.
    pub fn generate_len(len: usize) -> Result<Self, KeyError> {
        check_secret_len(len)?;
        let mut key = vec![0; len].into_boxed_slice();
        random(&mut key);
        Ok(Self { key })
    }

    /// A secret from its raw bytes (24 to 64 of them).
    pub fn from_bytes(key: &[u8]) -> Result<Self, KeyError> {
        check_secret_len(key.len())?;
        Ok(Self { key: key.into() })
    }

    /// The `whsec_<base64>` text, to hand to the subscriber (once, over a
    /// channel that keeps it secret).
    pub fn expose(&self) -> String {
        format!("{SECRET_PREFIX}{}", STANDARD.encode(&self.key))
    }

    /// The HMAC over `{id}.{timestamp}.{body}`, ready to finalize or compare.
    fn mac(&self, id: &str, timestamp: u64, body: &[u8]) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC takes keys of any length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }
}

impl FromStr for Secret {
    type Err = KeyError;

    /// Parses `whsec_<base64>` (padded or not).
    fn from_str(s: &str) -> Result<Self, KeyError> {
        Self::from_bytes(&decode_key(s, SECRET_PREFIX)?)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(whsec_***)")
    }
}

/// The ed25519 key that makes `v1a` signatures, written `whsk_<base64 of the
/// 32-byte seed>`; its [`PublicKey`] verifies them.
///
/// Its `Debug` shows only the public key.
#[derive(Clone)]
pub struct SigningKey {
    key: ed25519_dalek::SigningKey,
}

impl SigningKey {
    /// A fresh key pair from the operating system's randomness.
    ///
    /// # Panics
    /// When the operating system has no randomness to give.
    pub fn generate() -> Self {
        let mut seed = [0; ed25519_dalek::SECRET_KEY_LENGTH];
        random(&mut seed);
        Self {
            key: ed25519_dalek::SigningKey::from_bytes(&seed),
        }
    }

    /// The key that verifies this key's signatures.
    pub fn public_key(&self) -> PublicKey {
        PublicKey {
            key: self.key.verifying_key(),
        }
    }

    /// The `whsk_<base64>` text, for the sender's configuration.
    pub fn expose(&self) -> String {
        format!(
            "{SIGNING_KEY_PREFIX}{}",
            STANDARD.encode(self.key.as_bytes())
        )
    }
}

impl FromStr for SigningKey {
    type Err = KeyError;

    /// Parses `whsk_<base64 of 32 bytes>` (padded or not).
    fn from_str(s: &str) -> Result<Self, KeyError> {
        let seed = decode_key(s, SIGNING_KEY_PREFIX)?;
        let seed: [u8; 32] = seed.as_slice().try_into().map_err(|_| KeyError::Length {
            expected: "32 bytes",
            got: seed.len(),
        })?;
        Ok(Self {
            key: ed25519_dalek::SigningKey::from_bytes(&seed),
        })
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey(whsk_***, public: {})", self.public_key())
    }
}

/// The ed25519 key that verifies `v1a` signatures, written `whpk_<base64>`.
/// It is not secret: `Display` writes that text.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PublicKey {
    key: ed25519_dalek::VerifyingKey,
}

impl FromStr for PublicKey {
    type Err = KeyError;

    /// Parses `whpk_<base64 of 32 bytes>` (padded or not).
    fn from_str(s: &str) -> Result<Self, KeyError> {
        let bytes = decode_key(s, PUBLIC_KEY_PREFIX)?;
        let bytes: [u8; 32] = bytes.as_slice().try_into().map_err(|_| KeyError::Length {
            expected: "32 bytes",
            got: bytes.len(),
        })?;
        let key = ed25519_dalek::VerifyingKey::from_bytes(&bytes).map_err(|_| KeyError::NotAKey)?;
        Ok(Self { key })
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{PUBLIC_KEY_PREFIX}{}",
            STANDARD.encode(self.key.as_bytes())
        )
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

/// Why a key's text was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The text does not start with the prefix of its kind.
    #[error(
        "the key must start with `{expected}`: `whsec_` is a shared secret, `whsk_` a signing key, `whpk_` a public key"
    )]
    Prefix {
        /// `whsec_`, `whsk_` or `whpk_`.
        expected: &'static str,
    },
    /// What follows the prefix is not base64.
    #[error("the key after its prefix is not valid base64")]
    Base64,
    /// The key has the wrong number of bytes.
    #[error("the key has {got} bytes where {expected} are required")]
    Length {
        /// What the kind of key requires ("24 to 64 bytes", "32 bytes").
        expected: &'static str,
        /// How many bytes it had.
        got: usize,
    },
    /// The 32 bytes are not a point of the curve, so no signature can match them.
    #[error("the public key is not a valid ed25519 key")]
    NotAKey,
}

/// The message id may not be signed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "a webhook id must be non-empty visible ASCII without `.` (it is part of the signed `{{id}}.{{timestamp}}.{{body}}`)"
)]
#[non_exhaustive]
pub struct InvalidId;

/// Signs Standard Webhooks requests with one or more keys.
///
/// Each key adds a signature to `webhook-signature`. While a secret is
/// rotated, sign with both: `Signer::new(new).with(old)`, then drop the old
/// one once every receiver has the new one.
#[derive(Clone, Debug)]
pub struct Signer {
    keys: Vec<Key>,
}

#[derive(Clone, Debug)]
enum Key {
    Hmac(Secret),
    Ed25519(Box<SigningKey>),
}

impl Signer {
    /// A signer making `v1` (HMAC-SHA256) signatures with `secret`.
    pub fn new(secret: Secret) -> Self {
        Self {
            keys: vec![Key::Hmac(secret)],
        }
    }

    /// A signer making `v1a` (ed25519) signatures with `key`.
    pub fn ed25519(key: SigningKey) -> Self {
        Self {
            keys: vec![Key::Ed25519(Box::new(key))],
        }
    }

    /// Signs with `secret` as well (another `v1` signature).
    pub fn with(mut self, secret: Secret) -> Self {
        self.keys.push(Key::Hmac(secret));
        self
    }

    /// Signs with `key` as well (another `v1a` signature).
    pub fn with_ed25519(mut self, key: SigningKey) -> Self {
        self.keys.push(Key::Ed25519(Box::new(key)));
        self
    }

    /// The `webhook-signature` value for `id`, `timestamp` and `body`: one
    /// signature per key, in the order the keys were given, space-separated.
    pub fn signature(
        &self,
        id: &str,
        timestamp: SystemTime,
        body: &[u8],
    ) -> Result<String, InvalidId> {
        check_id(id)?;
        let timestamp = unix_seconds(timestamp);
        let mut out = String::new();
        for key in &self.keys {
            if !out.is_empty() {
                out.push(' ');
            }
            match key {
                Key::Hmac(secret) => {
                    out.push_str("v1,");
                    let tag = secret.mac(id, timestamp, body).finalize().into_bytes();
                    STANDARD.encode_string(tag, &mut out);
                }
                Key::Ed25519(key) => {
                    out.push_str("v1a,");
                    let signature = key.key.sign(&signed_content(id, timestamp, body));
                    STANDARD.encode_string(signature.to_bytes(), &mut out);
                }
            }
        }
        Ok(out)
    }

    /// The three headers `webhook-id`, `webhook-timestamp` and
    /// `webhook-signature` of a delivery attempt made at `timestamp`.
    pub fn sign(
        &self,
        id: &str,
        timestamp: SystemTime,
        body: &[u8],
    ) -> Result<HeaderMap, InvalidId> {
        let signature = self.signature(id, timestamp, body)?;
        let mut headers = HeaderMap::with_capacity(3);
        headers.insert(
            WEBHOOK_ID,
            HeaderValue::from_str(id).map_err(|_| InvalidId)?,
        );
        headers.insert(
            WEBHOOK_TIMESTAMP,
            HeaderValue::from(unix_seconds(timestamp)),
        );
        headers.insert(
            WEBHOOK_SIGNATURE,
            HeaderValue::try_from(signature).expect("base64 is a valid header value"),
        );
        Ok(headers)
    }
}

/// The three Standard Webhooks headers of `body`, signed with `secret`
/// alone: `Signer::new(secret.clone()).sign(id, timestamp, body)`.
pub fn sign(
    secret: &Secret,
    id: &str,
    timestamp: SystemTime,
    body: &[u8],
) -> Result<HeaderMap, InvalidId> {
    Signer::new(secret.clone()).sign(id, timestamp, body)
}

/// Why a signed request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// A required header is absent (or empty).
    #[error("the request has no `{0}` header, so it cannot be verified")]
    MissingHeader(&'static str),
    /// A header is there but is not text of the expected form.
    #[error("the `{0}` header is malformed")]
    MalformedHeader(&'static str),
    /// `webhook-timestamp` is not unix seconds.
    #[error("the `webhook-timestamp` header is not unix seconds")]
    BadTimestamp,
    /// The attempt is older than [`TOLERANCE`]: a replay, or a clock far behind.
    #[error(
        "the `webhook-timestamp` is more than 5 minutes in the past; refusing a possible replay"
    )]
    TooOld,
    /// The attempt is further in the future than [`TOLERANCE`]: a clock far ahead.
    #[error(
        "the `webhook-timestamp` is more than 5 minutes in the future; check the sender's clock"
    )]
    TooNew,
    /// No signature of the header matches the key: a wrong key, or a body or
    /// header changed on the way (parse the body only after verifying it).
    #[error("no signature matches: the key is wrong or the body was changed")]
    NoMatchingSignature,
}

/// Verifies a Standard Webhooks request signed with `secret` (`v1`), against
/// the receiver's clock: see [`verify_at`].
pub fn verify(headers: &HeaderMap, body: &[u8], secret: &Secret) -> Result<(), VerifyError> {
    verify_at(headers, body, secret, SystemTime::now())
}

/// Verifies a Standard Webhooks request signed with `secret`, taking `now`
/// as the time: the timestamp must be within [`TOLERANCE`] of `now`, and one
/// of the `v1` signatures must match (in constant time); other signatures
/// (`v1a`, later versions) are skipped.
pub fn verify_at(
    headers: &HeaderMap,
    body: &[u8],
    secret: &Secret,
    now: SystemTime,
) -> Result<(), VerifyError> {
    let signed = Signed::read(headers, now)?;
    let mac = secret.mac(signed.id, signed.timestamp, body);
    let found = signed
        .signatures("v1")
        .any(|tag| mac.clone().verify_slice(&tag).is_ok());
    if found {
        Ok(())
    } else {
        Err(VerifyError::NoMatchingSignature)
    }
}

/// Verifies a Standard Webhooks request signed with the ed25519 key of
/// `key` (`v1a`), against the receiver's clock: see [`verify_ed25519_at`].
pub fn verify_ed25519(
    headers: &HeaderMap,
    body: &[u8],
    key: &PublicKey,
) -> Result<(), VerifyError> {
    verify_ed25519_at(headers, body, key, SystemTime::now())
}

/// Verifies a Standard Webhooks request signed with the ed25519 key of
/// `key`, taking `now` as the time: as [`verify_at`], with the `v1a`
/// signatures (checked strictly: no malleable signatures, no weak keys).
pub fn verify_ed25519_at(
    headers: &HeaderMap,
    body: &[u8],
    key: &PublicKey,
    now: SystemTime,
) -> Result<(), VerifyError> {
    let signed = Signed::read(headers, now)?;
    let content = signed_content(signed.id, signed.timestamp, body);
    let found = signed.signatures("v1a").any(|bytes| {
        ed25519_dalek::Signature::from_slice(&bytes)
            .is_ok_and(|signature| key.key.verify_strict(&content, &signature).is_ok())
    });
    if found {
        Ok(())
    } else {
        Err(VerifyError::NoMatchingSignature)
    }
}

/// The `X-Hub-Signature` value of `body` for a WebSub subscriber's
/// `hub.secret`: `sha256=<lowercase hex HMAC-SHA256>`.
pub fn hub_signature(secret: impl AsRef<[u8]>, body: &[u8]) -> String {
    let mut mac =
        HmacSha256::new_from_slice(secret.as_ref()).expect("HMAC takes keys of any length");
    mac.update(body);
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256=");
    for byte in mac.finalize().into_bytes() {
        out.push(char::from(HEX[usize::from(byte >> 4)]));
        out.push(char::from(HEX[usize::from(byte & 0xf)]));
    }
    out
}

/// Verifies WebSub's `X-Hub-Signature` (`sha256=<hex>`, in constant time)
/// against `body` and the subscription's `hub.secret`. Other methods
/// (`sha1=`, ...) are refused as [`VerifyError::NoMatchingSignature`].
pub fn verify_hub_signature(
    headers: &HeaderMap,
    body: &[u8],
    secret: impl AsRef<[u8]>,
) -> Result<(), VerifyError> {
    const NAME: &str = "x-hub-signature";
    let value = header(headers, &X_HUB_SIGNATURE, NAME)?;
    let hex = value
        .strip_prefix("sha256=")
        .ok_or(VerifyError::NoMatchingSignature)?;
    let tag = decode_hex(hex).ok_or(VerifyError::MalformedHeader(NAME))?;
    let mut mac =
        HmacSha256::new_from_slice(secret.as_ref()).expect("HMAC takes keys of any length");
    mac.update(body);
    mac.verify_slice(&tag)
        .map_err(|_| VerifyError::NoMatchingSignature)
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    let hex = hex.as_bytes();
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    hex.chunks_exact(2)
        .map(|pair| Some(nibble(pair[0])? << 4 | nibble(pair[1])?))
        .collect()
}

/// The headers of a signed request, read and its timestamp checked.
struct Signed<'h> {
    id: &'h str,
    timestamp: u64,
    signatures: &'h str,
}

impl<'h> Signed<'h> {
    fn read(headers: &'h HeaderMap, now: SystemTime) -> Result<Self, VerifyError> {
        let id = header(headers, &WEBHOOK_ID, "webhook-id")?;
        let timestamp = header(headers, &WEBHOOK_TIMESTAMP, "webhook-timestamp")?;
        let signatures = header(headers, &WEBHOOK_SIGNATURE, "webhook-signature")?;
        if !timestamp.bytes().all(|b| b.is_ascii_digit()) {
            return Err(VerifyError::BadTimestamp);
        }
        let timestamp: u64 = timestamp.parse().map_err(|_| VerifyError::BadTimestamp)?;
        let now = unix_seconds(now);
        let tolerance = TOLERANCE.as_secs();
        if timestamp < now.saturating_sub(tolerance) {
            return Err(VerifyError::TooOld);
        }
        if timestamp > now.saturating_add(tolerance) {
            return Err(VerifyError::TooNew);
        }
        Ok(Self {
            id,
            timestamp,
            signatures,
        })
    }

    /// The decoded signatures of one version; malformed entries are skipped.
    fn signatures(&self, version: &'static str) -> impl Iterator<Item = Vec<u8>> + 'h {
        self.signatures
            .split(' ')
            .filter_map(move |entry| entry.strip_prefix(version)?.strip_prefix(','))
            .filter_map(|b64| STANDARD_PAD_INDIFFERENT.decode(b64).ok())
    }
}

/// A header's text; absent or empty is missing, non-ASCII is malformed.
fn header<'h>(
    headers: &'h HeaderMap,
    name: &HeaderName,
    label: &'static str,
) -> Result<&'h str, VerifyError> {
    let value = headers.get(name).ok_or(VerifyError::MissingHeader(label))?;
    let value = value
        .to_str()
        .map_err(|_| VerifyError::MalformedHeader(label))?
        .trim();
    if value.is_empty() {
        return Err(VerifyError::MissingHeader(label));
    }
    Ok(value)
}

/// `{id}.{timestamp}.{body}`, what both schemes sign.
fn signed_content(id: &str, timestamp: u64, body: &[u8]) -> Vec<u8> {
    let timestamp = timestamp.to_string();
    let mut content = Vec::with_capacity(id.len() + timestamp.len() + body.len() + 2);
    content.extend_from_slice(id.as_bytes());
    content.push(b'.');
    content.extend_from_slice(timestamp.as_bytes());
    content.push(b'.');
    content.extend_from_slice(body);
    content
}

fn check_id(id: &str) -> Result<(), InvalidId> {
    if !id.is_empty() && id.bytes().all(|b| b.is_ascii_graphic() && b != b'.') {
        Ok(())
    } else {
        Err(InvalidId)
    }
}

fn check_secret_len(len: usize) -> Result<(), KeyError> {
    if (MIN_SECRET_LEN..=MAX_SECRET_LEN).contains(&len) {
        Ok(())
    } else {
        Err(KeyError::Length {
            expected: "24 to 64 bytes",
            got: len,
        })
    }
}

fn decode_key(s: &str, prefix: &'static str) -> Result<Vec<u8>, KeyError> {
    let b64 = s
        .trim()
        .strip_prefix(prefix)
        .ok_or(KeyError::Prefix { expected: prefix })?;
    STANDARD_PAD_INDIFFERENT
        .decode(b64)
        .map_err(|_| KeyError::Base64)
}

fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn random(bytes: &mut [u8]) {
    getrandom::fill(bytes).expect("the operating system's random source failed");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reference_test_vector() {
        // The test vector of the reference libraries' tests.
        let secret: Secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".parse().unwrap();
        let at = UNIX_EPOCH + Duration::from_secs(1_614_265_330);
        let body = br#"{"test": 2432232314}"#;
        let headers = sign(&secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", at, body).unwrap();
        assert_eq!(headers[WEBHOOK_TIMESTAMP], "1614265330");
        assert_eq!(
            headers[WEBHOOK_SIGNATURE],
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
        assert_eq!(verify_at(&headers, body, &secret, at), Ok(()));
    }

    #[test]
    fn debug_hides_secrets() {
        let secret = Secret::generate();
        let shown = format!("{secret:?}");
        assert!(!shown.contains(&secret.expose()[6..]), "{shown}");
        let key = SigningKey::generate();
        let shown = format!("{key:?}");
        assert!(!shown.contains(&key.expose()[5..]), "{shown}");
        assert!(shown.contains(&key.public_key().to_string()), "{shown}");
    }

    #[test]
    fn ids_that_cannot_be_signed() {
        let signer = Signer::new(Secret::generate());
        for id in ["", "a.b", "with space", "café"] {
            assert_eq!(
                signer.sign(id, SystemTime::now(), b"").unwrap_err(),
                InvalidId,
                "{id:?}"
            );
        }
    }

    #[test]
    fn hex_round_trip() {
        let value = hub_signature("s", b"body");
        assert_eq!(value.len(), 7 + 64);
        let tag = decode_hex(&value[7..]).unwrap();
        assert_eq!(tag.len(), 32);
        assert_eq!(decode_hex("0"), None);
        assert_eq!(decode_hex("zz"), None);
    }
}
