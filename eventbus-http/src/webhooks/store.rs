//! Where subscriptions and their delivery attempts are kept.
//!
//! Every instance of a service reads the same store, so a subscription made
//! through one instance is delivered by all of them (each event once per
//! subscription: the instances compete in its consumer group). The store is
//! also where attempts are recorded. [`MemoryStore`] keeps them in the
//! process (tests, one instance); a durable store keeps them in the outbox
//! database or in Redis.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use futures::future::BoxFuture;
use parking_lot::Mutex;

use super::model::{Attempt, Subscription};
use eventbus_core::Result;

/// How many attempts a store keeps per subscription (the newest).
pub const ATTEMPTS_KEPT: usize = 1000;

/// A store of subscriptions and their attempts.
pub trait SubscriptionStore: Send + Sync + 'static {
    /// Every subscription.
    fn list(&self) -> BoxFuture<'_, Result<Vec<Subscription>>>;
    /// One subscription.
    fn get<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<Subscription>>>;
    /// Creates or replaces a subscription.
    fn put<'a>(&'a self, subscription: &'a Subscription) -> BoxFuture<'a, Result<()>>;
    /// Removes a subscription and its attempts; false if there was none.
    fn delete<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<bool>>;
    /// Records an attempt of a subscription's delivery.
    fn record<'a>(&'a self, id: &'a str, attempt: &'a Attempt) -> BoxFuture<'a, Result<()>>;
    /// Up to `limit` attempts of a subscription, newest first.
    fn attempts<'a>(&'a self, id: &'a str, limit: usize) -> BoxFuture<'a, Result<Vec<Attempt>>>;
}

/// Subscriptions kept in this process (clones share them).
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug, Default)]
struct Inner {
    subscriptions: BTreeMap<String, Subscription>,
    attempts: BTreeMap<String, VecDeque<Attempt>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

impl SubscriptionStore for MemoryStore {
    fn list(&self) -> BoxFuture<'_, Result<Vec<Subscription>>> {
        let list = self.inner.lock().subscriptions.values().cloned().collect();
        Box::pin(std::future::ready(Ok(list)))
    }

    fn get<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<Subscription>>> {
        let found = self.inner.lock().subscriptions.get(id).cloned();
        Box::pin(std::future::ready(Ok(found)))
    }

    fn put<'a>(&'a self, subscription: &'a Subscription) -> BoxFuture<'a, Result<()>> {
        self.inner
            .lock()
            .subscriptions
            .insert(subscription.id.clone(), subscription.clone());
        Box::pin(std::future::ready(Ok(())))
    }

    fn delete<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<bool>> {
        let mut inner = self.inner.lock();
        inner.attempts.remove(id);
        let found = inner.subscriptions.remove(id).is_some();
        Box::pin(std::future::ready(Ok(found)))
    }

    fn record<'a>(&'a self, id: &'a str, attempt: &'a Attempt) -> BoxFuture<'a, Result<()>> {
        let mut inner = self.inner.lock();
        let list = inner.attempts.entry(id.to_owned()).or_default();
        if list.len() == ATTEMPTS_KEPT {
            list.pop_back();
        }
        list.push_front(attempt.clone());
        Box::pin(std::future::ready(Ok(())))
    }

    fn attempts<'a>(&'a self, id: &'a str, limit: usize) -> BoxFuture<'a, Result<Vec<Attempt>>> {
        let list = self
            .inner
            .lock()
            .attempts
            .get(id)
            .map(|l| l.iter().take(limit).cloned().collect())
            .unwrap_or_default();
        Box::pin(std::future::ready(Ok(list)))
    }
}
