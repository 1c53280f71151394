//! The crate's one error type.

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong talking CloudEvents over Redis.
///
/// Every message is one sentence a person can act on. Passwords from URLs
/// never appear in it (they are shown as `***`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The Redis URL or an option in it is wrong.
    #[error("invalid Redis URL `{url}`: {reason}")]
    Config {
        /// The URL with its password replaced by `***`.
        url: String,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// The server could not be reached (or refused the credentials) at connect time.
    #[error(
        "cannot connect to Redis at {addr}: {reason}; is redis-server running and is the URL right?"
    )]
    Connect {
        /// `host:port` (or the list of cluster nodes).
        addr: String,
        /// Why, as reported by the client library.
        reason: String,
        /// The underlying error.
        #[source]
        source: Option<redis::RedisError>,
    },
    /// A Redis command failed (after reconnect attempts, for connection errors).
    #[error("Redis {op} failed: {source}")]
    Redis {
        /// What this crate was doing (`XADD`, `XREADGROUP`, `dead-letter script`, ...).
        op: &'static str,
        /// The error from the `redis` crate.
        #[source]
        source: redis::RedisError,
    },
    /// An event type, group or schedule name that cannot be used as (part of) a Redis key.
    #[error("invalid {what} `{value}`: {reason}")]
    InvalidName {
        /// `event type`, `group`, `schedule name`.
        what: &'static str,
        /// The offending value.
        value: String,
        /// Why.
        reason: &'static str,
    },
    /// A payload is not a valid structured-mode CloudEvent where one is required.
    #[error("invalid CloudEvent: {0}")]
    Codec(String),
    /// An operation the configured mode cannot do.
    #[error("{0}")]
    Unsupported(String),
}

impl Error {
    pub(crate) fn redis(op: &'static str, source: redis::RedisError) -> Self {
        Error::Redis { op, source }
    }

    /// True when the error is a lost or refused connection (the operation may
    /// succeed once Redis is back).
    pub fn is_connection_error(&self) -> bool {
        match self {
            Error::Connect { .. } => true,
            Error::Redis { source, .. } => crate::conn::is_transient(source),
            _ => false,
        }
    }
}

/// Into eventbus-core's error, keeping the cause as its source: a wrong URL
/// or name is a configuration error (one sentence to act on), an unreachable
/// server at connect time too; a failed command is a transport error whose
/// source is the `redis` crate's error.
impl From<Error> for eventbus_core::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::Redis { op, source } => eventbus_core::Error::Transport {
                transport: "redis",
                message: format!("Redis {op} failed"),
                source: Some(Box::new(source)),
            },
            Error::Codec(_) => eventbus_core::Error::Transport {
                transport: "redis",
                message: "a payload is not a CloudEvent".into(),
                source: Some(Box::new(e)),
            },
            e @ (Error::Config { .. }
            | Error::Connect { .. }
            | Error::InvalidName { .. }
            | Error::Unsupported(_)) => eventbus_core::Error::Config(e.to_string()),
        }
    }
}
