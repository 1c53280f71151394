//! Signed webhooks against implementations that are not ours: headers signed
//! here are verified by the Python `standardwebhooks` reference library and
//! by Svix's verifier, headers signed by the reference library are verified
//! here, `v1a` signatures cross-checked with PyCA `cryptography` (OpenSSL's
//! ed25519) and `X-Hub-Signature` with Python's `hmac`; then rotation and the
//! refusals, each with its error.

use std::io::Write as _;
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use eventbus_http::signature::{
    self, KeyError, PublicKey, Secret, Signer, SigningKey, VerifyError, WEBHOOK_ID,
    WEBHOOK_SIGNATURE, WEBHOOK_TIMESTAMP, X_HUB_SIGNATURE,
};
use serde_json::{Value, json};

/// Runs `script` with the pinned Python peers, `input` as JSON on its
/// standard input; its standard output is JSON.
fn python(script: &str, input: &Value) -> Value {
    let mut child = testkit::python()
        .args(["-W", "ignore", "-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python3");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.to_string().as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "python printed no JSON ({e}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

fn as_json(headers: &HeaderMap) -> Value {
    headers
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), json!(v.to_str().unwrap())))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

fn headers(pairs: &[(HeaderName, &str)]) -> HeaderMap {
    pairs
        .iter()
        .map(|(k, v)| (k.clone(), HeaderValue::from_str(v).unwrap()))
        .collect()
}

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

const BODIES: [&str; 4] = [
    r#"{"type":"review.created","timestamp":"2026-11-27T11:01:30Z","data":{"id":7}}"#,
    "{\n  \"text\": \"Euro € 😀, café\"\n}",
    "",
    "not json at all. with dots... and \"quotes\"",
];

#[test]
fn signed_here_verified_by_standardwebhooks_and_svix() {
    let old = Secret::generate();
    let new = Secret::generate_len(64).unwrap();
    let mut cases = Vec::new();
    for (i, body) in BODIES.iter().enumerate() {
        let id = format!("msg_{i}_0190f3f5-1c2b-7e3a-9d4e-5f6a7b8c9d0e");
        let alone = signature::sign(&old, &id, SystemTime::now(), body.as_bytes()).unwrap();
        cases.push(json!({"secret": old.expose(), "body": body, "headers": as_json(&alone)}));
        // Rotation: both sign, and a receiver with either accepts.
        let both = Signer::new(new.clone())
            .with(old.clone())
            .sign(&id, SystemTime::now(), body.as_bytes())
            .unwrap();
        for secret in [&old, &new] {
            cases.push(json!({"secret": secret.expose(), "body": body, "headers": as_json(&both)}));
        }
    }
    let script = r#"
import json, sys
import standardwebhooks
import svix.webhooks

def outcome(verify, body, headers):
    try:
        verify(body, headers)
        return "ok"
    except Exception as e:
        return type(e).__name__ + ": " + str(e)

out = []
for case in json.load(sys.stdin):
    body, headers, secret = case["body"], case["headers"], case["secret"]
    std = standardwebhooks.Webhook(secret)
    sv = svix.webhooks.Webhook(secret)
    std_verify = lambda b, h: std.verify(b, h, json_parse=False)
    out.append({
        "standardwebhooks": outcome(std_verify, body.encode(), headers),
        "svix": outcome(sv.verify, body.encode(), headers),
        # The same check must refuse a changed body, or "ok" means nothing.
        "standardwebhooks_tampered": outcome(std_verify, (body + " ").encode(), headers),
        "svix_tampered": outcome(sv.verify, (body + " ").encode(), headers),
    })
print(json.dumps(out))
"#;
    let results = python(script, &Value::Array(cases.clone()));
    assert_eq!(results.as_array().unwrap().len(), cases.len());
    for (case, result) in cases.iter().zip(results.as_array().unwrap()) {
        assert_eq!(result["standardwebhooks"], "ok", "{case}");
        assert_eq!(result["svix"], "ok", "{case}");
        for refused in ["standardwebhooks_tampered", "svix_tampered"] {
            assert_eq!(
                result[refused], "WebhookVerificationError: No matching signature found",
                "{case}"
            );
        }
    }
}

#[test]
fn signed_by_standardwebhooks_verified_here() {
    let script = r#"
import base64, json, os, sys
from datetime import datetime, timezone
import standardwebhooks

out = []
for i, body in enumerate(json.load(sys.stdin)):
    old = "whsec_" + base64.b64encode(os.urandom(24)).decode()
    new = "whsec_" + base64.b64encode(os.urandom(32)).decode()
    msg_id = "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W" + str(i)
    now = datetime.now(tz=timezone.utc)
    signatures = [standardwebhooks.Webhook(s).sign(msg_id, now, body) for s in (new, old)]
    out.append({
        "body": body, "old": old, "new": new, "id": msg_id,
        "timestamp": str(int(now.timestamp())), "signature": " ".join(signatures),
    })
print(json.dumps(out))
"#;
    let signed = python(script, &json!(BODIES));
    for case in signed.as_array().unwrap() {
        let body = case["body"].as_str().unwrap().as_bytes();
        let received = headers(&[
            (WEBHOOK_ID, case["id"].as_str().unwrap()),
            (WEBHOOK_TIMESTAMP, case["timestamp"].as_str().unwrap()),
            (WEBHOOK_SIGNATURE, case["signature"].as_str().unwrap()),
        ]);
        for secret in ["old", "new"] {
            let secret: Secret = case[secret].as_str().unwrap().parse().unwrap();
            assert_eq!(
                eventbus_http::verify(&received, body, &secret),
                Ok(()),
                "{case}"
            );
            let mut tampered = body.to_vec();
            tampered.push(b' ');
            assert_eq!(
                eventbus_http::verify(&received, &tampered, &secret),
                Err(VerifyError::NoMatchingSignature),
                "{case}"
            );
        }
    }
}

#[test]
fn rotation_old_and_new_both_sign_and_either_verifies() {
    let (old, new, other) = (Secret::generate(), Secret::generate(), Secret::generate());
    let now = at(1_800_000_000);
    let body = br#"{"id":7}"#;
    let signed = Signer::new(new.clone())
        .with(old.clone())
        .sign("msg_rotation", now, body)
        .unwrap();
    let value = signed[WEBHOOK_SIGNATURE].to_str().unwrap();
    let entries: Vec<&str> = value.split(' ').collect();
    assert_eq!(entries.len(), 2, "{value}");
    assert!(entries.iter().all(|e| e.starts_with("v1,")), "{value}");
    // In the order given: the new secret's first.
    assert_eq!(
        signature::sign(&new, "msg_rotation", now, body).unwrap()[WEBHOOK_SIGNATURE],
        entries[0]
    );
    assert_eq!(signature::verify_at(&signed, body, &new, now), Ok(()));
    assert_eq!(signature::verify_at(&signed, body, &old, now), Ok(()));
    assert_eq!(
        signature::verify_at(&signed, body, &other, now),
        Err(VerifyError::NoMatchingSignature)
    );
    // Entries that are not `v1`, or not base64, are passed over, not fatal.
    let mut mixed = signed.clone();
    mixed.insert(
        WEBHOOK_SIGNATURE,
        HeaderValue::from_str(&format!("v2,abc v1,%%% {} {}", entries[1], "v1a,AAAA")).unwrap(),
    );
    assert_eq!(signature::verify_at(&mixed, body, &old, now), Ok(()));
    assert_eq!(
        signature::verify_at(&mixed, body, &new, now),
        Err(VerifyError::NoMatchingSignature)
    );
}

#[test]
fn refusals_each_with_its_error() {
    let secret = Secret::generate();
    let now = at(1_800_000_000);
    let body = br#"{"id":7}"#;
    let signed = signature::sign(&secret, "msg_1", now, body).unwrap();
    assert_eq!(signature::verify_at(&signed, body, &secret, now), Ok(()));

    let refused = |headers: &HeaderMap, body: &[u8], secret: &Secret, now| {
        signature::verify_at(headers, body, secret, now).unwrap_err()
    };
    assert_eq!(
        refused(&signed, br#"{"id":8}"#, &secret, now),
        VerifyError::NoMatchingSignature
    );
    assert_eq!(
        refused(&signed, body, &Secret::generate(), now),
        VerifyError::NoMatchingSignature
    );
    let six_minutes = Duration::from_secs(6 * 60);
    // The request is 6 minutes old, or the receiver's clock 6 minutes behind.
    assert_eq!(
        refused(&signed, body, &secret, now + six_minutes),
        VerifyError::TooOld
    );
    assert_eq!(
        refused(&signed, body, &secret, now - six_minutes),
        VerifyError::TooNew
    );
    // 5 minutes either way is still accepted.
    for edge in [now + signature::TOLERANCE, now - signature::TOLERANCE] {
        assert_eq!(signature::verify_at(&signed, body, &secret, edge), Ok(()));
    }
    // The id and the timestamp are signed too.
    for (name, value) in [(WEBHOOK_ID, "msg_2"), (WEBHOOK_TIMESTAMP, "1800000001")] {
        let mut changed = signed.clone();
        changed.insert(name, HeaderValue::from_static(value));
        assert_eq!(
            refused(&changed, body, &secret, now),
            VerifyError::NoMatchingSignature
        );
    }
    for (name, label) in [
        (WEBHOOK_ID, "webhook-id"),
        (WEBHOOK_TIMESTAMP, "webhook-timestamp"),
        (WEBHOOK_SIGNATURE, "webhook-signature"),
    ] {
        let mut missing = signed.clone();
        missing.remove(&name);
        assert_eq!(
            refused(&missing, body, &secret, now),
            VerifyError::MissingHeader(label)
        );
        missing.insert(name, HeaderValue::from_static(""));
        assert_eq!(
            refused(&missing, body, &secret, now),
            VerifyError::MissingHeader(label)
        );
    }
    for bad in ["soon", "1800000000.5", "-1", "18446744073709551616"] {
        let mut changed = signed.clone();
        changed.insert(WEBHOOK_TIMESTAMP, HeaderValue::from_static(bad));
        assert_eq!(
            refused(&changed, body, &secret, now),
            VerifyError::BadTimestamp,
            "{bad}"
        );
    }
    let mut opaque = signed.clone();
    opaque.insert(
        WEBHOOK_SIGNATURE,
        HeaderValue::from_bytes(b"v1,\xff").unwrap(),
    );
    assert_eq!(
        refused(&opaque, body, &secret, now),
        VerifyError::MalformedHeader("webhook-signature")
    );

    // One sentence each.
    for error in [
        VerifyError::MissingHeader("webhook-id"),
        VerifyError::MalformedHeader("webhook-signature"),
        VerifyError::BadTimestamp,
        VerifyError::TooOld,
        VerifyError::TooNew,
        VerifyError::NoMatchingSignature,
    ] {
        let message = error.to_string();
        assert!(
            !message.is_empty() && !message.contains(". ") && !message.ends_with('.'),
            "{message}"
        );
    }
}

#[test]
fn secrets_parse_generate_and_stay_hidden() {
    for len in [signature::MIN_SECRET_LEN, 32, signature::MAX_SECRET_LEN] {
        let secret = Secret::generate_len(len).unwrap();
        let text = secret.expose();
        assert!(text.starts_with("whsec_"), "{text}");
        assert_eq!(text.parse::<Secret>().unwrap(), secret);
        // Unpadded base64 too, as other libraries accept it.
        assert_eq!(
            text.trim_end_matches('=').parse::<Secret>().unwrap(),
            secret
        );
        assert_eq!(format!("{secret:?}"), "Secret(whsec_***)");
    }
    assert_ne!(Secret::generate(), Secret::generate());
    for len in [0, 23, 65] {
        assert_eq!(
            Secret::generate_len(len).unwrap_err(),
            KeyError::Length {
                expected: "24 to 64 bytes",
                got: len
            }
        );
    }
    assert_eq!(
        "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
            .parse::<Secret>()
            .unwrap_err(),
        KeyError::Prefix { expected: "whsec_" }
    );
    assert_eq!(
        "whsec_not*base64".parse::<Secret>().unwrap_err(),
        KeyError::Base64
    );
    assert_eq!(
        "whsec_c2hvcnQ=".parse::<Secret>().unwrap_err(),
        KeyError::Length {
            expected: "24 to 64 bytes",
            got: 5
        }
    );
    let public = SigningKey::generate().public_key().to_string();
    assert_eq!(
        public.parse::<Secret>().unwrap_err(),
        KeyError::Prefix { expected: "whsec_" }
    );
}

#[test]
fn ed25519_round_trip_and_cross_checked_with_openssl() {
    let key = SigningKey::generate();
    let public = key.public_key();
    let key: SigningKey = key.expose().parse().unwrap();
    assert_eq!(key.public_key(), public);
    let public: PublicKey = public.to_string().parse().unwrap();
    assert_eq!(public, key.public_key());
    assert!(public.to_string().starts_with("whpk_"));
    assert!(key.expose().starts_with("whsk_"));

    let now = at(1_800_000_000);
    let body = br#"{"id":7}"#;
    let signed = Signer::ed25519(key.clone())
        .sign("msg_a", now, body)
        .unwrap();
    assert!(
        signed[WEBHOOK_SIGNATURE]
            .to_str()
            .unwrap()
            .starts_with("v1a,")
    );
    assert_eq!(
        signature::verify_ed25519_at(&signed, body, &public, now),
        Ok(())
    );
    assert_eq!(
        signature::verify_ed25519_at(&signed, b"{}", &public, now),
        Err(VerifyError::NoMatchingSignature)
    );
    assert_eq!(
        signature::verify_ed25519_at(&signed, body, &SigningKey::generate().public_key(), now),
        Err(VerifyError::NoMatchingSignature)
    );
    assert_eq!(
        signature::verify_ed25519_at(&signed, body, &public, now + Duration::from_secs(360)),
        Err(VerifyError::TooOld)
    );
    // A `v1a` signature is no `v1` one.
    assert_eq!(
        signature::verify_at(&signed, body, &Secret::generate(), now),
        Err(VerifyError::NoMatchingSignature)
    );

    // Both schemes in one header, each receiver checks its own.
    let secret = Secret::generate();
    let both = Signer::new(secret.clone())
        .with_ed25519(key.clone())
        .sign("msg_b", now, body)
        .unwrap();
    assert_eq!(signature::verify_at(&both, body, &secret, now), Ok(()));
    assert_eq!(
        signature::verify_ed25519_at(&both, body, &public, now),
        Ok(())
    );

    // OpenSSL's ed25519 verifies ours, and signs what ours verifies: the
    // whsk_ (32-byte seed) and whpk_ encodings as the reference libraries.
    let script = r#"
import base64, json, sys
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, PrivateFormat, NoEncryption
from cryptography.exceptions import InvalidSignature

case = json.load(sys.stdin)
public = Ed25519PublicKey.from_public_bytes(base64.b64decode(case["public"].removeprefix("whpk_")))
private = Ed25519PrivateKey.from_private_bytes(base64.b64decode(case["secret"].removeprefix("whsk_")))
h = case["headers"]
content = (h["webhook-id"] + "." + h["webhook-timestamp"] + ".").encode() + case["body"].encode()
out = {"same_public": private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw) == public.public_bytes(Encoding.Raw, PublicFormat.Raw)}
sig = h["webhook-signature"].removeprefix("v1a,")
public.verify(base64.b64decode(sig), content)
out["verified"] = True
try:
    public.verify(base64.b64decode(sig), content + b" ")
    out["tampered"] = "accepted"
except InvalidSignature:
    out["tampered"] = "refused"
theirs = Ed25519PrivateKey.generate()
raw = lambda k: k.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
out["their_public"] = "whpk_" + base64.b64encode(raw(theirs)).decode()
out["their_secret"] = "whsk_" + base64.b64encode(theirs.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())).decode()
out["their_signature"] = "v1a," + base64.b64encode(theirs.sign(content)).decode()
print(json.dumps(out))
"#;
    let input = json!({
        "public": public.to_string(),
        "secret": key.expose(),
        "headers": as_json(&signed),
        "body": std::str::from_utf8(body).unwrap(),
    });
    let out = python(script, &input);
    assert_eq!(out["same_public"], true, "{out}");
    assert_eq!(out["verified"], true, "{out}");
    assert_eq!(out["tampered"], "refused", "{out}");
    let theirs: PublicKey = out["their_public"].as_str().unwrap().parse().unwrap();
    let mut received = signed.clone();
    received.insert(
        WEBHOOK_SIGNATURE,
        HeaderValue::from_str(out["their_signature"].as_str().unwrap()).unwrap(),
    );
    assert_eq!(
        signature::verify_ed25519_at(&received, body, &theirs, now),
        Ok(())
    );
    assert_eq!(
        signature::verify_ed25519_at(&received, body, &public, now),
        Err(VerifyError::NoMatchingSignature)
    );
    // Their secret key, read as ours, signs the same (ed25519 is deterministic).
    let their_key: SigningKey = out["their_secret"].as_str().unwrap().parse().unwrap();
    assert_eq!(their_key.public_key(), theirs);
    assert_eq!(
        Signer::ed25519(their_key).sign("msg_a", now, body).unwrap()[WEBHOOK_SIGNATURE],
        out["their_signature"].as_str().unwrap()
    );
}

#[test]
fn x_hub_signature_matches_python_hmac() {
    let cases = [
        ("hub-secret", &b"{\"id\":7}"[..]),
        ("", &b"empty secret"[..]),
        ("caf\u{e9} \u{20ac}", &b""[..]),
        ("s", &[0u8, 255, 10, 13, 128][..]),
    ];
    let input: Vec<Value> = cases
        .iter()
        .map(|(secret, body)| json!({"secret": secret, "body": body}))
        .collect();
    let script = r#"
import hashlib, hmac, json, sys
print(json.dumps([
    hmac.new(c["secret"].encode(), bytes(c["body"]), hashlib.sha256).hexdigest()
    for c in json.load(sys.stdin)
]))
"#;
    let digests = python(script, &Value::Array(input));
    for ((secret, body), digest) in cases.iter().zip(digests.as_array().unwrap()) {
        let value = signature::hub_signature(secret, body);
        assert_eq!(value, format!("sha256={}", digest.as_str().unwrap()));
        let received = headers(&[(X_HUB_SIGNATURE, &value)]);
        assert_eq!(
            signature::verify_hub_signature(&received, body, secret),
            Ok(())
        );
        assert_eq!(
            signature::verify_hub_signature(&received, b"other", secret),
            Err(VerifyError::NoMatchingSignature)
        );
        assert_eq!(
            signature::verify_hub_signature(&received, body, "wrong"),
            Err(VerifyError::NoMatchingSignature)
        );
        // Hex digits in upper case are the same signature.
        let upper = headers(&[(
            X_HUB_SIGNATURE,
            &format!("sha256={}", value[7..].to_uppercase()),
        )]);
        assert_eq!(
            signature::verify_hub_signature(&upper, body, secret),
            Ok(())
        );
    }
    let sha1 = headers(&[(X_HUB_SIGNATURE, "sha1=0123")]);
    assert_eq!(
        signature::verify_hub_signature(&sha1, b"", "s"),
        Err(VerifyError::NoMatchingSignature)
    );
    let not_hex = headers(&[(X_HUB_SIGNATURE, "sha256=xyz")]);
    assert_eq!(
        signature::verify_hub_signature(&not_hex, b"", "s"),
        Err(VerifyError::MalformedHeader("x-hub-signature"))
    );
    assert_eq!(
        signature::verify_hub_signature(&HeaderMap::new(), b"", "s"),
        Err(VerifyError::MissingHeader("x-hub-signature"))
    );
}
