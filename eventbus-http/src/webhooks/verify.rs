//! Verification of intent: a sink confirms it wants the deliveries before
//! the first one is sent.
//!
//! - WebSub: `GET <callback>?hub.mode=subscribe&hub.topic=..&hub.challenge=..&hub.lease_seconds=..`;
//!   the subscriber answers 2xx with the challenge as the body.
//! - CloudEvents webhooks (abuse protection): `OPTIONS <sink>` with
//!   `WebHook-Request-Origin`; the sink answers 2xx with
//!   `WebHook-Allowed-Origin` (the origin or `*`) and may limit the rate
//!   with `WebHook-Allowed-Rate` (requests per minute).

use std::time::Duration;

use super::hub::Hub;
use super::model::Subscription;

/// What a successful verification told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Verified {
    /// `WebHook-Allowed-Rate`, requests per minute (`None`: no limit).
    pub(crate) rate: Option<u32>,
}

/// An unguessable challenge: 24 random bytes from the OS, in hex.
fn challenge() -> String {
    let mut bytes = [0u8; 24];
    if getrandom::fill(&mut bytes).is_err() {
        bytes.iter_mut().for_each(|b| *b = fastrand::u8(..));
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Asks the sink of `sub` whether it wants `mode` (`subscribe` or
/// `unsubscribe`); `Err` with what it answered otherwise.
pub(crate) async fn verify(hub: &Hub, sub: &Subscription, mode: &str) -> Result<Verified, String> {
    let client = &hub.inner.client;
    let sink = eventbus_core::transport::redact(&sub.sink);
    match &sub.websub {
        Some(ws) => {
            let challenge = challenge();
            let lease = ws
                .lease_until_ms
                .saturating_sub(super::now_ms())
                .div_ceil(1000)
                .to_string();
            let mut url = reqwest::Url::parse(&sub.sink)
                .map_err(|e| format!("the callback `{sink}` is not a URL: {e}"))?;
            url.query_pairs_mut()
                .append_pair("hub.mode", mode)
                .append_pair("hub.topic", &ws.topic)
                .append_pair("hub.challenge", &challenge)
                .append_pair("hub.lease_seconds", &lease);
            let r = client
                .get(url)
                .timeout(Duration::from_secs(15))
                .send()
                .await
                .map_err(|e| format!("the callback `{sink}` could not be asked: {e}"))?;
            let status = r.status();
            let body = r.text().await.unwrap_or_default();
            if status.is_success() && body.trim() == challenge {
                Ok(Verified { rate: None })
            } else if status.is_success() {
                Err(format!(
                    "the callback `{sink}` answered {status} without echoing `hub.challenge`"
                ))
            } else {
                Err(format!(
                    "the callback `{sink}` answered {status} to the verification"
                ))
            }
        }
        None => {
            let origin = &hub.inner.options.origin;
            let r = client
                .request(reqwest::Method::OPTIONS, &sub.sink)
                .header("WebHook-Request-Origin", origin)
                .timeout(Duration::from_secs(15))
                .send()
                .await
                .map_err(|e| format!("the sink `{sink}` could not be asked: {e}"))?;
            let status = r.status();
            let allowed = r
                .headers()
                .get("webhook-allowed-origin")
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
                .map(str::to_owned);
            let rate = r
                .headers()
                .get("webhook-allowed-rate")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u32>().ok());
            match allowed {
                Some(a) if status.is_success() && (a == *origin || a == "*") => {
                    Ok(Verified { rate })
                }
                Some(a) if status.is_success() => Err(format!(
                    "the sink `{sink}` allows the origin `{}`, not `{origin}`",
                    eventbus_core::escape::Escaped(&a)
                )),
                _ if status.is_success() => Err(format!(
                    "the sink `{sink}` answered {status} to OPTIONS without `WebHook-Allowed-Origin`"
                )),
                _ => Err(format!(
                    "the sink `{sink}` answered {status} to the OPTIONS handshake"
                )),
            }
        }
    }
}
