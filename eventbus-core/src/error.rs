//! The crate's one error type.

use std::time::Duration;

/// `Result` with [`Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in eventbus. Each message says what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration mistake: a bad URL, a missing feature, an invalid option.
    #[error("{0}")]
    Config(String),

    /// The registry of events and handlers is inconsistent.
    #[error("{}", .0.join("\n"))]
    Registry(Vec<String>),

    /// The transport failed (server unreachable, connection lost, ...).
    #[error("{transport} transport: {message}")]
    Transport {
        /// Which transport.
        transport: &'static str,
        /// What happened, without secrets.
        message: String,
        /// The underlying error.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },

    /// An event could not be encoded.
    #[error("cannot encode event `{event_type}`: {source}")]
    Encode {
        /// The CloudEvents type.
        event_type: String,
        /// The serializer's error.
        #[source]
        source: serde_json::Error,
    },

    /// A message could not be decoded.
    #[error(transparent)]
    Decode(#[from] crate::codec::DecodeError),

    /// A recurring schedule's function failed to produce its event.
    #[error("schedule `{schedule}` failed: {message}")]
    Schedule {
        /// The schedule's name.
        schedule: &'static str,
        /// The function's error.
        message: String,
    },

    /// The bus was shut down.
    #[error("the bus is shut down")]
    Closed,

    /// Graceful shutdown did not finish in time; unfinished events will be redelivered.
    #[error(
        "shutdown timed out after {0:?}; unfinished events stay unacknowledged and will be redelivered"
    )]
    ShutdownTimeout(Duration),

    /// An outbox database error.
    #[error("outbox: {message}")]
    Outbox {
        /// What happened.
        message: String,
        /// The database error.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },

    /// An I/O error (signals, files).
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl Error {
    /// A transport error with a source.
    pub fn transport(
        transport: &'static str,
        message: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Error::Transport {
            transport,
            message: message.into(),
            source: Some(source.into()),
        }
    }
}

impl Error {
    /// Displays the error followed by each of its sources (`a: b: c`), for
    /// logs: an error's own message never repeats its source's.
    pub fn report(&self) -> Report<'_> {
        Report(self)
    }
}

/// The error and its chain of sources; see [`Error::report`].
#[derive(Debug, Clone, Copy)]
pub struct Report<'a>(&'a (dyn std::error::Error + 'static));

impl std::fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(s) = source {
            write!(f, ": {s}")?;
            source = s.source();
        }
        Ok(())
    }
}
