//! Subscriptions in Redis.

use eventbus_redis::redis;
use futures::future::BoxFuture;

use super::{ATTEMPTS_KEPT, Attempt, Subscription, SubscriptionStore};
use crate::error::{Error, Result};

/// Subscriptions in Redis: the hash `{P}:webhooks` (field: the id, value:
/// the subscription as JSON) and, per subscription, its newest
/// [`ATTEMPTS_KEPT`] attempts in the list `{P}:webhooks:attempts:<id>`,
/// newest first. `{P}` is the transport's key prefix with its hash tag
/// ([`eventbus_redis::Keys::base`]), so on a cluster every key of the store
/// is in the transport's slot.
///
/// Cheap to clone (clones share the connection).
#[derive(Clone)]
pub struct RedisStore {
    client: eventbus_redis::Client,
    subscriptions: String,
    attempts: String,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("subscriptions", &self.subscriptions)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// A store on `client`'s connection, under its key prefix.
    pub fn new(client: eventbus_redis::Client) -> Self {
        let base = client.keys().base();
        Self {
            subscriptions: format!("{base}:webhooks"),
            attempts: format!("{base}:webhooks:attempts:"),
            client,
        }
    }

    /// Connects to `redis://...` (the transport's URL: the same prefix
    /// options give the same keys).
    pub async fn connect(url: &str) -> Result<Self> {
        Ok(Self::new(eventbus_redis::Client::connect_url(url).await?))
    }

    /// The hash of the subscriptions.
    pub fn key(&self) -> &str {
        &self.subscriptions
    }

    fn attempts_key(&self, id: &str) -> String {
        format!("{}{id}", self.attempts)
    }
}

/// A stored value that is not what this version wrote.
fn corrupt(what: &str, e: serde_json::Error) -> Error {
    Error::Transport {
        transport: "redis",
        message: format!("a stored webhook {what} is not valid JSON; remove it or fix it"),
        source: Some(Box::new(e)),
    }
}

fn encode(e: serde_json::Error) -> Error {
    Error::Transport {
        transport: "redis",
        message: "cannot encode a webhook subscription or attempt".into(),
        source: Some(Box::new(e)),
    }
}

impl SubscriptionStore for RedisStore {
    fn list(&self) -> BoxFuture<'_, Result<Vec<Subscription>>> {
        Box::pin(async move {
            let values: Vec<String> = self
                .client
                .query("HVALS", redis::cmd("HVALS").arg(&self.subscriptions))
                .await?;
            let mut list = values
                .iter()
                .map(|v| serde_json::from_str::<Subscription>(v))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| corrupt("subscription", e))?;
            // A hash has no order; ids are UUIDv7s: creation order.
            list.sort_by(|a, b| a.id.cmp(&b.id));
            Ok(list)
        })
    }

    fn get<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<Subscription>>> {
        Box::pin(async move {
            let value: Option<String> = self
                .client
                .query("HGET", redis::cmd("HGET").arg(&self.subscriptions).arg(id))
                .await?;
            value
                .map(|v| serde_json::from_str(&v).map_err(|e| corrupt("subscription", e)))
                .transpose()
        })
    }

    fn put<'a>(&'a self, subscription: &'a Subscription) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let value = serde_json::to_string(subscription).map_err(encode)?;
            self.client
                .query::<()>(
                    "HSET",
                    redis::cmd("HSET")
                        .arg(&self.subscriptions)
                        .arg(&subscription.id)
                        .arg(value),
                )
                .await?;
            Ok(())
        })
    }

    fn delete<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            let mut pipe = redis::pipe();
            pipe.atomic()
                .cmd("HDEL")
                .arg(&self.subscriptions)
                .arg(id)
                .cmd("DEL")
                .arg(self.attempts_key(id))
                .ignore();
            let (removed,): (u64,) = self.client.query_pipe("HDEL", &pipe).await?;
            Ok(removed > 0)
        })
    }

    fn record<'a>(&'a self, id: &'a str, attempt: &'a Attempt) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let value = serde_json::to_string(attempt).map_err(encode)?;
            let key = self.attempts_key(id);
            let mut pipe = redis::pipe();
            pipe.cmd("LPUSH")
                .arg(&key)
                .arg(value)
                .ignore()
                .cmd("LTRIM")
                .arg(&key)
                .arg(0)
                .arg(ATTEMPTS_KEPT as i64 - 1)
                .ignore();
            self.client.query_pipe::<()>("LPUSH", &pipe).await?;
            Ok(())
        })
    }

    fn attempts<'a>(&'a self, id: &'a str, limit: usize) -> BoxFuture<'a, Result<Vec<Attempt>>> {
        Box::pin(async move {
            if limit == 0 {
                return Ok(Vec::new());
            }
            let stop = limit.min(ATTEMPTS_KEPT) as i64 - 1;
            let values: Vec<String> = self
                .client
                .query(
                    "LRANGE",
                    redis::cmd("LRANGE")
                        .arg(self.attempts_key(id))
                        .arg(0)
                        .arg(stop),
                )
                .await?;
            values
                .iter()
                .map(|v| serde_json::from_str(v).map_err(|e| corrupt("attempt", e)))
                .collect()
        })
    }
}
