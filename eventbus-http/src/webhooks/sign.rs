//! The signatures of a delivery, from the subscription's secrets (see
//! [`crate::signature`]).

use std::time::SystemTime;

use axum::http::{HeaderMap, HeaderValue};

use super::model::Subscription;
use crate::signature::{self, Secret, Signer};

/// A fresh `whsec_` secret.
pub(crate) fn new_secret() -> String {
    Secret::generate().expose()
}

/// Why `secret` cannot sign, for a `400`.
pub(crate) fn check_secret(secret: &str) -> Result<(), String> {
    secret
        .parse::<Secret>()
        .map(drop)
        .map_err(|e| format!("`config.secret`: {e}"))
}

/// Adds `webhook-id` (the CloudEvents id, the same at every attempt),
/// `webhook-timestamp` and `webhook-signature` (one `v1` per secret still
/// signing: the current one and rotated ones in their grace period), and
/// `X-Hub-Signature` when the subscriber gave `hub.secret`.
pub(crate) fn sign_delivery(sub: &Subscription, id: &str, body: &[u8], headers: &mut HeaderMap) {
    let now = SystemTime::now();
    let now_ms = super::now_ms();
    let secrets = sub
        .signing_secrets(now_ms)
        .filter_map(|s| s.parse::<Secret>().ok());
    let key = sub
        .ed25519_key
        .as_deref()
        .and_then(|k| k.parse::<signature::SigningKey>().ok());
    let mut signer: Option<Signer> = key.map(Signer::ed25519);
    for secret in secrets {
        signer = Some(match signer {
            None => Signer::new(secret),
            Some(s) => s.with(secret),
        });
    }
    if let Some(signer) = signer {
        match signer.sign(id, now, body) {
            Ok(signed) => headers.extend(signed),
            Err(_) => {
                // An id Standard Webhooks cannot carry: fall back to none
                // rather than a signature a receiver cannot check.
                tracing::warn!(
                    event_id = %eventbus_core::escape::Escaped(id),
                    "webhooks: the event id cannot be a webhook-id; delivered unsigned"
                );
            }
        }
    }
    if let Some(hub_secret) = &sub.hub_secret
        && let Ok(v) = HeaderValue::try_from(signature::hub_signature(hub_secret, body))
    {
        headers.insert(signature::X_HUB_SIGNATURE, v);
    }
}
