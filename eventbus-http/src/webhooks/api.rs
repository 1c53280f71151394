//! The subscriptions API: the CloudEvents Subscriptions API's shape in
//! JSON, and WebSub's form protocol on the same `POST /subscriptions`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Deserialize;

use super::filter::Filter;
use super::hub::Hub;
use super::model::{ContentMode, Method, SigningSecret, Status, Subscription, WebSub};
use super::now_ms;
use crate::ingest::{problem, problem_with};

/// The routes, nested by [`crate::Http::router`] when a hub is configured.
pub(crate) fn routes() -> axum::Router<Arc<crate::State>> {
    use axum::routing::{get, post};
    axum::Router::new()
        .route("/subscriptions", post(create).get(list))
        .route("/subscriptions/{id}", get(show).put(replace).delete(remove))
        .route("/subscriptions/{id}/attempts", get(attempts))
        .route("/subscriptions/{id}/rotate", post(rotate))
        .route("/subscriptions/{id}/recover", post(recover))
}

/// The hub, or the answer when the request may not go on.
fn hub<'a>(state: &'a crate::State, headers: &HeaderMap) -> Result<&'a Hub, Box<Response>> {
    if !state.authorized(headers) {
        let mut r = problem(
            StatusCode::UNAUTHORIZED,
            "this endpoint needs `Authorization: Bearer <token>` with the token it was configured with",
        );
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            axum::http::HeaderValue::from_static("Bearer"),
        );
        return Err(Box::new(r));
    }
    state.config.hub.as_ref().ok_or_else(|| {
        Box::new(problem(
            StatusCode::NOT_IMPLEMENTED,
            "this service has no webhook hub; build the router with `Http::webhooks(hub)`",
        ))
    })
}

fn store_error(e: eventbus_core::Error) -> Response {
    tracing::warn!(error = %e.report(), "webhooks: the subscription store failed");
    problem(
        StatusCode::SERVICE_UNAVAILABLE,
        &format!("the subscription store failed: {e}; try again"),
    )
}

/// The JSON body of `POST /subscriptions` and `PUT /subscriptions/{id}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Request {
    sink: String,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    source: Option<String>,
    #[serde(default)]
    types: Vec<String>,
    #[serde(default)]
    filters: Vec<Filter>,
    #[serde(default)]
    protocol: Option<String>,
    #[serde(default)]
    protocolsettings: ProtocolSettings,
    #[serde(default)]
    config: Config,
    #[serde(default)]
    sinkcredential: Option<SinkCredential>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProtocolSettings {
    #[serde(default)]
    method: Method,
    #[serde(default)]
    headers: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    mode: ContentMode,
    /// The subscriber's own `whsec_` secret.
    #[serde(default)]
    secret: Option<String>,
    /// `"ed25519"`: sign with an ed25519 key as well (`v1a`); its public
    /// key is in `config.public_key`.
    #[serde(default)]
    signature: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SinkCredential {
    #[serde(default)]
    credentialtype: Option<String>,
    accesstoken: String,
}

impl std::fmt::Debug for SinkCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SinkCredential").finish_non_exhaustive()
    }
}

/// Refuses a sink whose address the hub's policy refuses (an IP literal
/// here; a name is checked at each connection).
fn check_policy(hub: &Hub, sink: &str) -> Result<(), String> {
    let url = reqwest::Url::parse(sink).map_err(|e| e.to_string())?;
    hub.inner.policy.check_url(&url).map_err(|e| e.to_string())
}

/// Checks a sink URL: absolute http(s), no userinfo.
fn check_sink(sink: &str) -> Result<(), String> {
    let url = reqwest::Url::parse(sink).map_err(|e| {
        format!(
            "the sink `{}` is not a URL: {e}",
            eventbus_core::escape::Escaped(sink)
        )
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "the sink `{}` must be an http:// or https:// URL",
            eventbus_core::transport::redact(sink)
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "the sink `{}` carries credentials in the URL; give them as `sinkcredential` instead",
            eventbus_core::transport::redact(sink)
        ));
    }
    Ok(())
}

impl Request {
    /// The body of `POST /subscriptions` or `PUT /subscriptions/{id}`.
    fn parse(body: &[u8]) -> Result<Self, Box<Response>> {
        serde_json::from_slice(body).map_err(|e| {
            Box::new(problem(
                StatusCode::BAD_REQUEST,
                &format!("the subscription is not valid JSON of the Subscriptions API: {e}"),
            ))
        })
    }

    /// The subscription it asks for (status pending), or why not.
    fn build(self, hub: &Hub, id: String) -> Result<(Subscription, Option<String>), String> {
        check_sink(&self.sink)?;
        check_policy(hub, &self.sink)?;
        if let Some(p) = &self.protocol
            && !p.eq_ignore_ascii_case("HTTP")
        {
            return Err(format!(
                "the protocol `{}` is not served here; this hub delivers over `HTTP`",
                eventbus_core::escape::Escaped(p)
            ));
        }
        for f in &self.filters {
            f.check()?;
        }
        if self.types.iter().any(|t| t.trim().is_empty()) {
            return Err("`types` lists an empty type".into());
        }
        if let Some(c) = &self.sinkcredential
            && c.credentialtype
                .as_deref()
                .is_some_and(|t| !t.eq_ignore_ascii_case("ACCESSTOKEN"))
        {
            return Err("only `\"credentialtype\": \"ACCESSTOKEN\"` is supported: the token is sent as `Authorization: Bearer`".into());
        }
        let ed25519_key = match self.config.signature.as_deref() {
            None | Some("hmac") | Some("v1") => None,
            Some("ed25519") | Some("v1a") => {
                Some(crate::signature::SigningKey::generate().expose())
            }
            Some(other) => {
                return Err(format!(
                    "`config.signature` is `{}`; write `hmac` (v1, the default) or `ed25519` (v1a as well)",
                    eventbus_core::escape::Escaped(other)
                ));
            }
        };
        let mut filters = self.filters;
        if let Some(source) = self.source {
            filters.push(Filter::Exact(BTreeMap::from([(
                "source".to_owned(),
                source,
            )])));
        }
        let (secret, generated) = match self.config.secret {
            Some(s) => {
                super::sign::check_secret(&s)?;
                (s, None)
            }
            None => {
                let s = super::sign::new_secret();
                (s.clone(), Some(s))
            }
        };
        Ok((
            Subscription {
                id,
                sink: self.sink,
                method: self.protocolsettings.method,
                mode: self.config.mode,
                types: self.types,
                filters,
                headers: self.protocolsettings.headers,
                credential: self.sinkcredential.map(|c| c.accesstoken),
                secrets: vec![SigningSecret {
                    secret,
                    until_ms: None,
                }],
                ed25519_key,
                hub_secret: None,
                websub: None,
                rate_per_minute: None,
                status: Status::Pending,
                created_ms: now_ms(),
                last_success_ms: None,
                failing_since_ms: None,
            },
            generated,
        ))
    }
}

/// Stores `sub` as pending, declares its queue, and verifies it in the
/// background (active once the sink confirmed).
async fn start(hub: &Hub, sub: &Subscription) -> Result<(), Box<Response>> {
    hub.inner
        .store
        .put(sub)
        .await
        .map_err(|e| Box::new(store_error(e)))?;
    hub.declare(sub).await.map_err(|e| {
        Box::new(problem(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("cannot create the subscription's queue: {e}; try again"),
        ))
    })?;
    let hub = hub.clone();
    let sub = sub.clone();
    tokio::spawn(async move {
        let result = super::verify::verify(&hub, &sub, "subscribe").await;
        let Ok(Some(mut stored)) = hub.inner.store.get(&sub.id).await else {
            return;
        };
        if stored.status != Status::Pending {
            return;
        }
        match result {
            Ok(v) => {
                stored.status = Status::Active;
                stored.rate_per_minute = v.rate;
            }
            Err(reason) => {
                tracing::info!(subscription = %sub.id, "webhooks: verification refused: {reason}");
                stored.status = Status::Refused { reason };
            }
        }
        let _ = hub.inner.store.put(&stored).await;
        hub.inner.changed.notify_one();
    });
    Ok(())
}

async fn create(
    State(state): State<Arc<crate::State>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let hub = match hub(&state, &headers) {
        Ok(h) => h,
        Err(r) => return *r,
    };
    let form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            ct.to_ascii_lowercase()
                .starts_with("application/x-www-form-urlencoded")
        });
    if form {
        return websub(hub, &body).await;
    }
    let request = match Request::parse(&body) {
        Ok(r) => r,
        Err(r) => return *r,
    };
    let id = match &request.id {
        Some(id) => id.clone(),
        None => eventbus_core::codec::new_event_id(std::time::SystemTime::now()).to_string(),
    };
    if matches!(hub.inner.store.get(&id).await, Ok(Some(_))) {
        return problem(
            StatusCode::CONFLICT,
            &format!(
                "a subscription `{}` exists; change it with PUT",
                eventbus_core::escape::Escaped(&id)
            ),
        );
    }
    let (sub, generated) = match request.build(hub, id) {
        Ok(s) => s,
        Err(why) => return problem(StatusCode::BAD_REQUEST, &why),
    };
    if let Err(r) = start(hub, &sub).await {
        return *r;
    }
    let mut view = sub.view();
    if let Some(secret) = generated {
        // Shown once: the subscriber keeps it to verify the signatures.
        view["secret"] = secret.into();
    }
    let location = format!("/subscriptions/{}", sub.id);
    (
        StatusCode::CREATED,
        [
            (header::CONTENT_TYPE, "application/json".to_owned()),
            (header::LOCATION, location),
        ],
        view.to_string(),
    )
        .into_response()
}

/// WebSub's form protocol: `hub.mode`, `hub.topic`, `hub.callback`,
/// `hub.lease_seconds`, `hub.secret`; answered 202, verified afterwards.
async fn websub(hub: &Hub, body: &[u8]) -> Response {
    let form: BTreeMap<String, String> = form_urlencoded(body);
    let get = |k: &str| form.get(k).map(String::as_str).filter(|v| !v.is_empty());
    let (Some(mode), Some(topic), Some(callback)) =
        (get("hub.mode"), get("hub.topic"), get("hub.callback"))
    else {
        return problem(
            StatusCode::BAD_REQUEST,
            "a WebSub request needs `hub.mode`, `hub.topic` and `hub.callback`",
        );
    };
    if let Err(why) = check_sink(callback).and_then(|()| check_policy(hub, callback)) {
        return problem(StatusCode::BAD_REQUEST, &why);
    }
    let lease = match get("hub.lease_seconds").map(str::parse::<u64>) {
        None => hub.inner.options.default_lease,
        Some(Ok(s)) if s > 0 => Duration::from_secs(s),
        Some(_) => {
            return problem(
                StatusCode::BAD_REQUEST,
                "`hub.lease_seconds` must be a positive number of seconds",
            );
        }
    };
    let existing = match hub.inner.store.list().await {
        Ok(list) => list
            .into_iter()
            .find(|s| s.sink == callback && s.websub.as_ref().is_some_and(|w| w.topic == topic)),
        Err(e) => return store_error(e),
    };
    match mode {
        "subscribe" => {
            let now = now_ms();
            let mut sub = existing.unwrap_or_else(|| Subscription {
                id: eventbus_core::codec::new_event_id(std::time::SystemTime::now()).to_string(),
                sink: callback.to_owned(),
                method: Method::Post,
                mode: ContentMode::Structured,
                types: Vec::new(),
                filters: vec![topic_filter(topic)],
                headers: BTreeMap::new(),
                credential: None,
                secrets: vec![SigningSecret {
                    secret: super::sign::new_secret(),
                    until_ms: None,
                }],
                ed25519_key: None,
                hub_secret: None,
                websub: None,
                rate_per_minute: None,
                status: Status::Pending,
                created_ms: now,
                last_success_ms: None,
                failing_since_ms: None,
            });
            // A renewal is verified again, with the new lease.
            sub.websub = Some(WebSub {
                topic: topic.to_owned(),
                lease_until_ms: now + lease.as_millis() as u64,
            });
            sub.hub_secret = get("hub.secret").map(str::to_owned);
            sub.status = Status::Pending;
            if let Err(r) = start(hub, &sub).await {
                return *r;
            }
            StatusCode::ACCEPTED.into_response()
        }
        "unsubscribe" => {
            let Some(sub) = existing else {
                return problem(
                    StatusCode::NOT_FOUND,
                    "no subscription of this callback to this topic",
                );
            };
            let hub = hub.clone();
            tokio::spawn(async move {
                if super::verify::verify(&hub, &sub, "unsubscribe")
                    .await
                    .is_ok()
                {
                    let _ = hub.inner.store.delete(&sub.id).await;
                    hub.inner.changed.notify_one();
                }
            });
            StatusCode::ACCEPTED.into_response()
        }
        other => problem(
            StatusCode::BAD_REQUEST,
            &format!(
                "`hub.mode={}` is neither `subscribe` nor `unsubscribe`",
                eventbus_core::escape::Escaped(other)
            ),
        ),
    }
}

/// A WebSub topic as a filter: an event type, or a layer of them when it
/// ends with `.` or `*` (`reviews.` and `reviews.*` both match
/// `reviews.created`).
fn topic_filter(topic: &str) -> Filter {
    let one = |dialect: fn(BTreeMap<String, String>) -> Filter, v: &str| {
        dialect(BTreeMap::from([("type".to_owned(), v.to_owned())]))
    };
    if let Some(layer) = topic.strip_suffix('*') {
        one(Filter::Prefix, layer)
    } else if topic.ends_with('.') {
        one(Filter::Prefix, topic)
    } else {
        one(Filter::Exact, topic)
    }
}

fn form_urlencoded(body: &[u8]) -> BTreeMap<String, String> {
    let text = String::from_utf8_lossy(body);
    text.split('&')
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let decode = |s: &str| {
                percent_encoding::percent_decode_str(&s.replace('+', " "))
                    .decode_utf8_lossy()
                    .into_owned()
            };
            (decode(k), decode(v))
        })
        .collect()
}

async fn list(State(state): State<Arc<crate::State>>, headers: HeaderMap) -> Response {
    let hub = match hub(&state, &headers) {
        Ok(h) => h,
        Err(r) => return *r,
    };
    match hub.inner.store.list().await {
        Ok(list) => {
            axum::Json(list.iter().map(Subscription::view).collect::<Vec<_>>()).into_response()
        }
        Err(e) => store_error(e),
    }
}

/// The hub and subscription `id` of a request, or the answer when the
/// request may not go on (unauthorized, no hub, no such subscription).
async fn hub_and<'a>(
    state: &'a crate::State,
    headers: &HeaderMap,
    id: &str,
) -> Result<(&'a Hub, Subscription), Box<Response>> {
    let hub = hub(state, headers)?;
    Ok((hub, find(hub, id).await?))
}

async fn find(hub: &Hub, id: &str) -> Result<Subscription, Box<Response>> {
    match hub.inner.store.get(id).await {
        Ok(Some(s)) => Ok(s),
        Ok(None) => Err(Box::new(problem(
            StatusCode::NOT_FOUND,
            &format!("no subscription `{}`", eventbus_core::escape::Escaped(id)),
        ))),
        Err(e) => Err(Box::new(store_error(e))),
    }
}

async fn show(
    State(state): State<Arc<crate::State>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let hub = match hub(&state, &headers) {
        Ok(h) => h,
        Err(r) => return *r,
    };
    match find(hub, &id).await {
        Ok(s) => axum::Json(s.view()).into_response(),
        Err(r) => *r,
    }
}

async fn replace(
    State(state): State<Arc<crate::State>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let (hub, old) = match hub_and(&state, &headers, &id).await {
        Ok(found) => found,
        Err(r) => return *r,
    };
    let request = match Request::parse(&body) {
        Ok(r) => r,
        Err(r) => return *r,
    };
    let keep_secret = request.config.secret.is_none();
    let (mut sub, _) = match request.build(hub, id) {
        Ok(s) => s,
        Err(why) => return problem(StatusCode::BAD_REQUEST, &why),
    };
    if keep_secret {
        sub.secrets = old.secrets.clone();
    }
    if sub.ed25519_key.is_some() && old.ed25519_key.is_some() {
        // The same key as before: the subscriber has its public key.
        sub.ed25519_key = old.ed25519_key.clone();
    }
    sub.created_ms = old.created_ms;
    sub.hub_secret = old.hub_secret.clone();
    sub.websub = old.websub.clone();
    if sub.sink == old.sink && old.status == Status::Active {
        // Same sink: no new verification.
        sub.status = Status::Active;
        sub.rate_per_minute = old.rate_per_minute;
        if let Err(e) = hub.inner.store.put(&sub).await {
            return store_error(e);
        }
        if let Err(e) = hub.declare(&sub).await {
            return problem(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("cannot update the subscription's queue: {e}"),
            );
        }
        hub.inner.changed.notify_one();
    } else if let Err(r) = start(hub, &sub).await {
        return *r;
    }
    axum::Json(sub.view()).into_response()
}

async fn remove(
    State(state): State<Arc<crate::State>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let hub = match hub(&state, &headers) {
        Ok(h) => h,
        Err(r) => return *r,
    };
    match hub.inner.store.delete(&id).await {
        Ok(true) => {
            hub.inner.changed.notify_one();
            StatusCode::NO_CONTENT.into_response()
        }
        Ok(false) => problem(
            StatusCode::NOT_FOUND,
            &format!("no subscription `{}`", eventbus_core::escape::Escaped(&id)),
        ),
        Err(e) => store_error(e),
    }
}

#[derive(Debug, Deserialize)]
struct Limit {
    limit: Option<usize>,
}

async fn attempts(
    State(state): State<Arc<crate::State>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<Limit>,
) -> Response {
    let hub = match hub(&state, &headers) {
        Ok(h) => h,
        Err(r) => return *r,
    };
    if let Err(r) = find(hub, &id).await {
        return *r;
    }
    let limit = q.limit.unwrap_or(100).clamp(1, super::store::ATTEMPTS_KEPT);
    match hub.inner.store.attempts(&id, limit).await {
        Ok(list) => {
            let view: Vec<serde_json::Value> = list
                .iter()
                .map(|a| {
                    let mut v = serde_json::to_value(a).unwrap_or_default();
                    v["at"] = super::rfc3339_ms(a.at_ms).into();
                    if let Some(n) = a.next_ms {
                        v["next"] = super::rfc3339_ms(n).into();
                    }
                    v
                })
                .collect();
            axum::Json(view).into_response()
        }
        Err(e) => store_error(e),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Rotate {
    /// How long the old secret still signs (default 24 h, at most 7 days).
    #[serde(default)]
    grace: Option<String>,
}

async fn rotate(
    State(state): State<Arc<crate::State>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let (hub, mut sub) = match hub_and(&state, &headers, &id).await {
        Ok(found) => found,
        Err(r) => return *r,
    };
    let ask: Rotate = if body.is_empty() {
        Rotate::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(r) => r,
            Err(e) => {
                return problem(
                    StatusCode::BAD_REQUEST,
                    &format!("not a rotation request (`{{\"grace\": \"24h\"}}`): {e}"),
                );
            }
        }
    };
    let grace = match ask.grace.as_deref().map(humantime::parse_duration) {
        None => Duration::from_secs(24 * 3600),
        Some(Ok(g)) if g <= hub.inner.options.max_grace => g,
        Some(Ok(_)) => {
            return problem(
                StatusCode::BAD_REQUEST,
                &format!(
                    "the grace period is at most {}",
                    humantime::format_duration(hub.inner.options.max_grace)
                ),
            );
        }
        Some(Err(e)) => {
            return problem(
                StatusCode::BAD_REQUEST,
                &format!("`grace`: {e}; write e.g. `24h`"),
            );
        }
    };
    let now = now_ms();
    for s in &mut sub.secrets {
        if s.until_ms.is_none() {
            s.until_ms = Some(now + grace.as_millis() as u64);
        }
    }
    sub.secrets.retain(|s| s.until_ms.is_none_or(|u| u > now));
    let fresh = super::sign::new_secret();
    sub.secrets.insert(
        0,
        SigningSecret {
            secret: fresh.clone(),
            until_ms: None,
        },
    );
    if let Err(e) = hub.inner.store.put(&sub).await {
        return store_error(e);
    }
    hub.inner.changed.notify_one();
    let mut members = serde_json::Map::new();
    members.insert("secret".into(), fresh.into());
    members.insert(
        "old_secret_until".into(),
        super::rfc3339_ms(now + grace.as_millis() as u64).into(),
    );
    axum::Json(serde_json::Value::Object(members)).into_response()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Recover {
    since: String,
    #[serde(default)]
    until: Option<String>,
}

/// Re-sends the dead-lettered deliveries of the subscription between
/// `since` and `until` (at most 14 days back).
async fn recover(
    State(state): State<Arc<crate::State>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let (hub, sub) = match hub_and(&state, &headers, &id).await {
        Ok(found) => found,
        Err(r) => return *r,
    };
    let ask: Recover = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return problem(
                StatusCode::BAD_REQUEST,
                &format!("write `{{\"since\": \"2026-12-01T00:00:00Z\"}}`: {e}"),
            );
        }
    };
    let parse = |t: &str| {
        eventbus_core::codec::parse_time(t).ok_or_else(|| {
            Box::new(problem(
                StatusCode::BAD_REQUEST,
                &format!(
                    "`{}` is not an RFC 3339 time",
                    eventbus_core::escape::Escaped(t)
                ),
            ))
        })
    };
    let since = match parse(&ask.since) {
        Ok(t) => t,
        Err(r) => return *r,
    };
    let until = match ask.until.as_deref().map(parse).transpose() {
        Ok(t) => t.unwrap_or_else(std::time::SystemTime::now),
        Err(r) => return *r,
    };
    let oldest = std::time::SystemTime::now() - Duration::from_secs(14 * 24 * 3600);
    let since = since.max(oldest);
    let group = sub.group();
    let dead = match hub.inner.transport.dead_letters(100_000).await {
        Ok(d) => d,
        Err(e) => {
            return problem(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("cannot read the dead letters: {e}"),
            );
        }
    };
    let mut replayed = 0u64;
    for dl in dead
        .iter()
        .filter(|d| d.group == group && d.time >= since && d.time <= until)
    {
        match hub.inner.transport.replay(&dl.id).await {
            Ok(true) => replayed += 1,
            Ok(false) => {}
            Err(e) => {
                return problem_with(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &format!("replayed {replayed}, then the transport failed: {e}"),
                    serde_json::Map::from_iter([("replayed".to_owned(), replayed.into())]),
                );
            }
        }
    }
    axum::Json(serde_json::json!({ "replayed": replayed })).into_response()
}
