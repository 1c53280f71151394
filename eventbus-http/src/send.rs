//! The egress client (being written).

/// How a CloudEvent is put into an HTTP request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Attributes in `ce-*` headers, `data` as the body.
    Binary,
    /// The whole event as `application/cloudevents+json`.
    Structured,
}

/// Why a send failed.
#[derive(Debug, thiserror::Error)]
#[error("send failed")]
pub struct SendError;

/// Sends `event` to `url` in `mode`.
pub async fn send(_url: &str, _event: &eventbus_core::CloudEvent, _mode: Mode) -> Result<(), SendError> {
    Err(SendError)
}

/// [`send`] with a client of the caller's.
pub async fn send_with(
    _client: &reqwest::Client,
    _url: &str,
    _event: &eventbus_core::CloudEvent,
    _mode: Mode,
) -> Result<(), SendError> {
    Err(SendError)
}
