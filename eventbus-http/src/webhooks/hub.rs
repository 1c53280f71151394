//! The delivery side: one consumer group of the bus per subscription, a
//! worker per active subscription on every instance (the instances compete
//! in the group, so each event goes once to each subscription), signed
//! requests, the Standard Webhooks retry schedule, and the verification of
//! intent before the first delivery.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use bytes::Bytes;
use eventbus_core::Envelope;
use eventbus_core::escape::Escaped;
use eventbus_core::transport::{DeadLetterInfo, Delivery, GroupSpec, Outgoing, Transport};
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

use super::model::{Attempt, ContentMode, Method, Outcome, Status, Subscription};
use super::now_ms;
use super::store::SubscriptionStore;

/// The Standard Webhooks retry schedule: the delay before each attempt
/// after the first (immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 14 h,
/// 20 h, 24 h); each delay gets ±20 % jitter.
pub const STANDARD_SCHEDULE: [Duration; 9] = [
    Duration::from_secs(5),
    Duration::from_secs(5 * 60),
    Duration::from_secs(30 * 60),
    Duration::from_secs(2 * 3600),
    Duration::from_secs(5 * 3600),
    Duration::from_secs(10 * 3600),
    Duration::from_secs(14 * 3600),
    Duration::from_secs(20 * 3600),
    Duration::from_secs(24 * 3600),
];

/// The most of a response body an attempt records.
pub const RESPONSE_KEPT: usize = 20 * 1024;

/// The type of the operational event published when a subscription is
/// disabled.
pub const DISABLED_EVENT: &str = "eventbus.webhook.disabled";

/// Settings of a [`Hub`].
#[derive(Debug, Clone)]
pub struct HubOptions {
    /// Deliveries in flight per subscription (default 4).
    pub concurrency: usize,
    /// Requests in flight across all subscriptions (default 1024).
    pub max_in_flight: usize,
    /// The delays before each retry ([`STANDARD_SCHEDULE`]); after the last,
    /// a failing delivery is dead-lettered.
    pub schedule: Vec<Duration>,
    /// Jitter of each delay, as a fraction (default 0.2: ±20 %).
    pub jitter: f64,
    /// The longest `Retry-After` of a `429` that is honoured (default 1 h).
    pub max_retry_after: Duration,
    /// A sink failing this long without a success is disabled (5 days).
    pub disable_after: Duration,
    /// How often every instance looks at the store for new, changed and
    /// removed subscriptions (default 1 s; changes made through this
    /// instance take effect at once).
    pub refresh: Duration,
    /// `WebHook-Request-Origin` of the verification handshake.
    pub origin: String,
    /// How long a WebSub subscription lasts without a renewal (10 days).
    pub default_lease: Duration,
    /// Secrets the API accepts for rotation's grace period: at most 7 days.
    pub max_grace: Duration,
}

impl Default for HubOptions {
    fn default() -> Self {
        Self {
            concurrency: 4,
            max_in_flight: 1024,
            schedule: STANDARD_SCHEDULE.to_vec(),
            jitter: 0.2,
            max_retry_after: Duration::from_secs(3600),
            disable_after: Duration::from_secs(5 * 24 * 3600),
            refresh: Duration::from_secs(1),
            origin: "eventbus".to_owned(),
            default_lease: Duration::from_secs(10 * 24 * 3600),
            max_grace: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// The webhook hub: subscriptions, their verification and their delivery.
/// Cheap to clone. [`Hub::run`] delivers until its token is cancelled; the
/// subscriptions API is served by [`crate::Http::webhooks`].
#[derive(Clone)]
pub struct Hub {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("transport", &self.inner.transport.name())
            .field("options", &self.inner.options)
            .finish_non_exhaustive()
    }
}

pub(crate) struct Inner {
    pub(crate) transport: Arc<dyn Transport>,
    pub(crate) store: Arc<dyn SubscriptionStore>,
    pub(crate) client: reqwest::Client,
    pub(crate) policy: crate::guard::SinkPolicy,
    pub(crate) options: HubOptions,
    /// A subscription changed through this instance: look again now.
    pub(crate) changed: tokio::sync::Notify,
    in_flight: Arc<tokio::sync::Semaphore>,
    workers: Mutex<HashMap<String, Worker>>,
}

struct Worker {
    /// The subscription as the worker was started with it.
    subscription: Subscription,
    stop: CancellationToken,
}

impl Hub {
    /// A hub publishing to and delivering from `source`'s transport, with
    /// subscriptions in `store`, sending only where `policy` allows (the
    /// SSRF guard: every resolved address of a sink must be globally
    /// routable or allow-listed; redirects are never followed).
    pub fn new(
        source: &impl crate::Source,
        store: impl SubscriptionStore,
        policy: crate::guard::SinkPolicy,
        options: HubOptions,
    ) -> Result<Self, crate::guard::SinkError> {
        let client = policy.client()?;
        Ok(Self {
            inner: Arc::new(Inner {
                transport: source.transport(),
                store: Arc::new(store),
                client,
                policy,
                in_flight: Arc::new(tokio::sync::Semaphore::new(options.max_in_flight.max(1))),
                options,
                changed: tokio::sync::Notify::new(),
                workers: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The store.
    pub fn store(&self) -> &dyn SubscriptionStore {
        &*self.inner.store
    }

    /// Delivers until `shutdown` is cancelled: keeps one worker per active
    /// subscription, expires WebSub leases, and stops the workers of
    /// subscriptions removed or disabled (through any instance).
    pub async fn run(&self, shutdown: CancellationToken) -> eventbus_core::Result<()> {
        loop {
            let changed = self.inner.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if let Err(e) = self.reconcile(&shutdown).await {
                tracing::warn!(error = %e.report(), "webhooks: cannot read the subscriptions; trying again");
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = changed => {}
                _ = tokio::time::sleep(self.inner.options.refresh) => {}
            }
        }
        let workers: Vec<Worker> = self.inner.workers.lock().drain().map(|(_, w)| w).collect();
        for w in workers {
            w.stop.cancel();
        }
        Ok(())
    }

    async fn reconcile(&self, shutdown: &CancellationToken) -> eventbus_core::Result<()> {
        let now = now_ms();
        let mut list = self.inner.store.list().await?;
        for sub in &mut list {
            if let (Status::Active | Status::Pending, Some(ws)) = (&sub.status, &sub.websub)
                && ws.lease_until_ms <= now
            {
                sub.status = Status::Disabled {
                    reason: "the WebSub lease ran out without a renewal".into(),
                    at_ms: now,
                };
                self.inner.store.put(sub).await?;
            }
        }
        let active: HashMap<&str, &Subscription> = list
            .iter()
            .filter(|s| s.status == Status::Active)
            .map(|s| (s.id.as_str(), s))
            .collect();
        let mut workers = self.inner.workers.lock();
        workers.retain(|id, w| {
            let keep = active
                .get(id.as_str())
                .is_some_and(|s| s.delivers_like(&w.subscription));
            if !keep {
                w.stop.cancel();
            }
            keep
        });
        for (id, sub) in active {
            if workers.contains_key(id) {
                continue;
            }
            let stop = shutdown.child_token();
            workers.insert(
                id.to_owned(),
                Worker {
                    subscription: sub.clone(),
                    stop: stop.clone(),
                },
            );
            let hub = self.clone();
            let sub = sub.clone();
            tokio::spawn(async move { hub.deliver_loop(sub, stop).await });
        }
        Ok(())
    }

    fn spec(sub: &Subscription) -> GroupSpec {
        GroupSpec {
            group: sub.group(),
            handler: format!("webhook {}", eventbus_core::transport::redact(&sub.sink)),
            topics: sub.topics(),
            handler_timeout: Some(Duration::from_secs(60)),
            broadcast: false,
        }
    }

    /// Declares the subscription's queue, so that what is published from
    /// now on is kept for it even while it waits for its verification.
    pub(crate) async fn declare(&self, sub: &Subscription) -> eventbus_core::Result<()> {
        self.inner.transport.declare(&Self::spec(sub)).await
    }

    async fn deliver_loop(&self, sub: Subscription, stop: CancellationToken) {
        let spec = Self::spec(&sub);
        let subscriber = loop {
            match self.inner.transport.subscribe(&spec).await {
                Ok(s) => break s,
                Err(e) => {
                    tracing::warn!(subscription = %sub.id, error = %e.report(), "webhooks: cannot subscribe; trying again");
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        };
        // A sink that limited the rate gets one request at a time, spaced.
        let pace = sub
            .rate_per_minute
            .filter(|r| *r > 0)
            .map(|r| Duration::from_secs(60) / r);
        let concurrency = if pace.is_some() {
            1
        } else {
            self.inner.options.concurrency.max(1)
        };
        let sub = Arc::new(Mutex::new(sub));
        // Up to `concurrency` deliveries in flight at all times: a free slot
        // is refilled as soon as one settles, never held behind the slowest
        // request of a batch.
        let mut in_flight = futures::stream::FuturesUnordered::new();
        // The read in progress, kept across turns of the loop: a settled
        // delivery must not cancel it (a Redis consumer whose read was
        // cancelled re-reads its pending history, which bumps the delivery
        // count of the entries waiting for their retry: attempts would skip).
        let mut read: Option<futures::future::BoxFuture<'_, eventbus_core::Result<Vec<Delivery>>>> =
            None;
        loop {
            use futures::StreamExt as _;
            let free = concurrency - in_flight.len();
            if read.is_none() && free > 0 {
                read = Some(subscriber.next(free));
            }
            tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                Some(gone) = in_flight.next(), if !in_flight.is_empty() => {
                    if gone {
                        // Disabled by a 410 or by failing too long.
                        break;
                    }
                    if let Some(pace) = pace {
                        tokio::select! {
                            _ = stop.cancelled() => break,
                            _ = tokio::time::sleep(pace) => {}
                        }
                    }
                }
                batch = async {
                    match read.as_mut() {
                        Some(r) => r.await,
                        None => std::future::pending().await,
                    }
                } => match batch {
                    Ok(batch) => {
                        read = None;
                        for d in batch {
                            in_flight.push(self.deliver_one(&sub, &*subscriber, d));
                        }
                    }
                    Err(e) => {
                        read = None;
                        tracing::warn!(error = %e.report(), "webhooks: the transport failed; trying again");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                },
            }
        }
        drop(read);
        // What was handed out is settled before the subscriber goes (a
        // stopping instance finishes its requests; a disabled one too).
        {
            use futures::StreamExt as _;
            while in_flight.next().await.is_some() {}
        }
        let _ = subscriber.close().await;
    }

    /// Delivers one event; true when the subscription was disabled.
    async fn deliver_one(
        &self,
        sub: &Mutex<Subscription>,
        subscriber: &dyn eventbus_core::Subscriber,
        delivery: Delivery,
    ) -> bool {
        let delivery = &delivery;
        let current = sub.lock().clone();
        let event = match Envelope::parse(delivery.payload.clone()) {
            Ok(e) => e,
            Err(e) => {
                let info = DeadLetterInfo::new(
                    Self::spec(&current).handler,
                    delivery.attempt,
                    e.to_string(),
                );
                let _ = subscriber.dead_letter(delivery, info).await;
                return false;
            }
        };
        if !current.wants(&event) {
            let _ = subscriber.ack(std::slice::from_ref(&delivery.id)).await;
            return false;
        }
        let _permit = self.inner.in_flight.clone().acquire_owned().await;
        let started = Instant::now();
        let at_ms = now_ms();
        let result = self.send(&current, &event).await;
        let duration_ms = started.elapsed().as_millis() as u64;
        let (status, response) = match &result {
            Ok(a) => (Some(a.status.as_u16()), a.body.clone()),
            Err(e) => (None, e.clone()),
        };
        let schedule = &self.inner.options.schedule;
        let attempt_no = delivery.attempt;
        let mut disabled: Option<String> = None;
        let (outcome, next) = match result {
            Ok(a) if a.status.is_success() => {
                let _ = subscriber.ack(std::slice::from_ref(&delivery.id)).await;
                (Outcome::Delivered, None)
            }
            Ok(a) if a.status == StatusCode::GONE => {
                let info = DeadLetterInfo::new(
                    Self::spec(&current).handler,
                    attempt_no,
                    "the sink answered 410 Gone: the subscription is disabled",
                );
                let _ = subscriber.dead_letter(delivery, info).await;
                disabled = Some("the sink answered 410 Gone".to_owned());
                (Outcome::Gone, None)
            }
            failed => {
                let retry_after = match &failed {
                    Ok(a) if a.status == StatusCode::TOO_MANY_REQUESTS => a.retry_after,
                    _ => None,
                };
                let index = (attempt_no as usize).saturating_sub(1);
                match retry_after.or_else(|| schedule.get(index).map(|d| self.jitter(*d))) {
                    Some(delay) => {
                        let _ = subscriber.retry(delivery.id, delay).await;
                        (Outcome::Retrying, Some(at_ms + delay.as_millis() as u64))
                    }
                    None => {
                        let why = match &failed {
                            Ok(a) => format!(
                                "the sink answered {} at the last of {attempt_no} attempts",
                                a.status
                            ),
                            Err(e) => format!("{e} (the last of {attempt_no} attempts)"),
                        };
                        let info =
                            DeadLetterInfo::new(Self::spec(&current).handler, attempt_no, why);
                        let _ = subscriber.dead_letter(delivery, info).await;
                        (Outcome::DeadLettered, None)
                    }
                }
            }
        };
        let record = Attempt {
            event_id: event.id().to_owned(),
            event_type: event.event_type().to_owned(),
            attempt: attempt_no,
            at_ms,
            status,
            duration_ms,
            response,
            outcome,
            next_ms: next,
        };
        attempt_metric(&record);
        if let Err(e) = self.inner.store.record(&current.id, &record).await {
            tracing::warn!(subscription = %current.id, error = %e.report(), "webhooks: cannot record an attempt");
        }
        self.note_outcome(sub, outcome, at_ms, disabled).await
    }

    /// Keeps `last_success_ms` / `failing_since_ms` and disables a sink that
    /// answered 410 or kept failing; true when it was disabled.
    async fn note_outcome(
        &self,
        sub: &Mutex<Subscription>,
        outcome: Outcome,
        now: u64,
        mut disabled: Option<String>,
    ) -> bool {
        let updated = {
            let mut s = sub.lock();
            let before = s.clone();
            match outcome {
                Outcome::Delivered => {
                    s.failing_since_ms = None;
                    // One write a minute at most while all goes well.
                    if s.last_success_ms
                        .is_none_or(|t| now.saturating_sub(t) > 60_000)
                    {
                        s.last_success_ms = Some(now);
                    }
                }
                _ => {
                    let since = *s.failing_since_ms.get_or_insert(now);
                    let limit = self.inner.options.disable_after.as_millis() as u64;
                    if disabled.is_none() && now.saturating_sub(since) >= limit {
                        disabled = Some(format!(
                            "every delivery failed for {} without a success",
                            humantime::format_duration(Duration::from_millis(now - since))
                        ));
                    }
                }
            }
            let already = matches!(s.status, Status::Disabled { .. });
            if let Some(reason) = &disabled {
                if already {
                    // A concurrent delivery disabled it first: say it once.
                    return true;
                }
                s.status = Status::Disabled {
                    reason: reason.clone(),
                    at_ms: now,
                };
            }
            (*s != before).then(|| s.clone())
        };
        if let Some(s) = updated {
            // Read again: the API may have changed it meanwhile.
            let stored = self.inner.store.get(&s.id).await.ok().flatten();
            if let Some(mut stored) = stored {
                stored.last_success_ms = s.last_success_ms;
                stored.failing_since_ms = s.failing_since_ms;
                if disabled.is_some() {
                    stored.status = s.status.clone();
                }
                let _ = self.inner.store.put(&stored).await;
            }
        }
        if let Some(reason) = disabled {
            let current = sub.lock().clone();
            tracing::warn!(
                subscription = %current.id,
                sink = %Escaped(&eventbus_core::transport::redact(&current.sink)),
                "webhooks: subscription disabled: {reason}"
            );
            self.publish_disabled(&current, &reason).await;
            self.inner.changed.notify_one();
            return true;
        }
        false
    }

    /// Publishes `eventbus.webhook.disabled` on the bus.
    async fn publish_disabled(&self, sub: &Subscription, reason: &str) {
        let now = SystemTime::now();
        let event = serde_json::json!({
            "specversion": "1.0",
            "id": eventbus_core::codec::new_event_id(now).to_string(),
            "source": "/eventbus/webhooks",
            "type": DISABLED_EVENT,
            "subject": sub.id,
            "time": eventbus_core::codec::format_time(now),
            "datacontenttype": "application/json",
            "data": {
                "subscription": sub.id,
                "sink": eventbus_core::transport::redact(&sub.sink),
                "reason": reason,
            },
        });
        let message = Outgoing {
            event_type: DISABLED_EVENT.into(),
            payload: Bytes::from(event.to_string()),
        };
        if let Err(e) = self
            .inner
            .transport
            .publish(std::slice::from_ref(&message))
            .await
        {
            tracing::warn!(error = %e.report(), "webhooks: cannot publish {DISABLED_EVENT}");
        }
    }

    fn jitter(&self, delay: Duration) -> Duration {
        let j = self.inner.options.jitter.clamp(0.0, 1.0);
        let factor = 1.0 + j * (fastrand::f64() * 2.0 - 1.0);
        delay.mul_f64(factor.max(0.0))
    }

    /// One request to the sink: its status and (truncated) body, or why
    /// there was no answer.
    async fn send(&self, sub: &Subscription, event: &Envelope) -> Result<Answer, String> {
        let (mut headers, body) = match sub.mode {
            ContentMode::Structured => {
                let mut h = HeaderMap::new();
                h.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(crate::binding::STRUCTURED),
                );
                (h, event.payload().clone())
            }
            ContentMode::Binary => match crate::binding::to_binary(event.payload()) {
                Ok(b) => (b.headers, b.body),
                Err(e) => return Err(format!("cannot put the event in binary mode: {e}")),
            },
        };
        // The event's trace context is also the hop's own `traceparent`.
        if let Some(tc) = event.trace_context() {
            if let Ok(v) = HeaderValue::try_from(tc.traceparent()) {
                headers.insert(crate::binding::TRACEPARENT_HEADER, v);
            }
            if let Some(v) = tc.state.and_then(|s| HeaderValue::try_from(s).ok()) {
                headers.insert(crate::binding::TRACESTATE_HEADER, v);
            }
        }
        for (name, value) in &sub.headers {
            if let (Ok(n), Ok(v)) = (
                HeaderName::try_from(name.as_str()),
                HeaderValue::try_from(value.as_str()),
            ) {
                headers.insert(n, v);
            }
        }
        if let Some(token) = &sub.credential
            && let Ok(v) = HeaderValue::try_from(format!("Bearer {token}"))
        {
            headers.insert(header::AUTHORIZATION, v);
        }
        super::sign::sign_delivery(sub, event.id(), &body, &mut headers);
        let url =
            reqwest::Url::parse(&sub.sink).map_err(|e| format!("the sink is not a URL: {e}"))?;
        // An address in the URL itself does not go through the resolver.
        self.inner
            .policy
            .check_url(&url)
            .map_err(|e| e.to_string())?;
        let method = match sub.method {
            Method::Post => reqwest::Method::POST,
            Method::Put => reqwest::Method::PUT,
        };
        let response = self
            .inner
            .client
            .request(method, url)
            .headers(headers)
            .body(body)
            .send()
            .await
            .map_err(|e| describe(&e))?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|s| {
                Duration::from_secs(s)
                    .clamp(Duration::from_secs(1), self.inner.options.max_retry_after)
            });
        let mut text = response.text().await.unwrap_or_default();
        if text.len() > RESPONSE_KEPT {
            let mut cut = RESPONSE_KEPT;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
        }
        Ok(Answer {
            status: StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::BAD_GATEWAY),
            body: text,
            retry_after,
        })
    }
}

/// A sink's answer.
struct Answer {
    status: StatusCode,
    /// At most [`RESPONSE_KEPT`] bytes.
    body: String,
    /// A `429`'s `Retry-After`, clamped.
    retry_after: Option<Duration>,
}

/// Why a request got no answer, in a sentence without the URL's password.
fn describe(e: &reqwest::Error) -> String {
    let what = if e.is_timeout() {
        "the sink did not answer in time"
    } else if e.is_connect() {
        "cannot connect to the sink"
    } else if e.is_redirect() {
        "the sink redirected"
    } else {
        "the request failed"
    };
    let mut text = format!("{what}: {e}");
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    eventbus_core::transport::redact(&text)
}

/// `eventbus.webhook.attempts` of one attempt.
fn attempt_metric(attempt: &Attempt) {
    let outcome = match attempt.outcome {
        Outcome::Delivered => "delivered",
        Outcome::Retrying => "retrying",
        Outcome::DeadLettered => "dead_lettered",
        Outcome::Gone => "gone",
    };
    metrics::counter!(
        eventbus_core::metrics::WEBHOOK_ATTEMPTS.name,
        "type" => attempt.event_type.clone(),
        "outcome" => outcome
    )
    .increment(1);
}
