//! One bus, several transports: events routed by type, and bridges.
//!
//! A bus whose builder was given routes ([`BusBuilder::route`](crate::BusBuilder::route))
//! or bridges ([`BusBuilder::bridge`](crate::BusBuilder::bridge)), in code or
//! from `EVENTBUS_ROUTES` / `EVENTBUS_BRIDGES`, runs on a router: a
//! [`Transport`] over the transports it names (what [`Bus::transport`](crate::Bus::transport)
//! returns then).
//!
//! - **Publishing** goes to the transport of the event's type: the route
//!   whose pattern matches (an exact type wins over a `prefix*`, a longer
//!   prefix over a shorter one), else the default (`EVENTBUS_URL`). A bridged
//!   type is published on its bridge's source (where the legacy consumers
//!   listen); the bridge then appends it to its destination.
//! - **Subscribing**: each group subscribes on the transport of its types. A
//!   group whose types live on several transports (a type and its alias, a
//!   global `#[handler(all)]` group) is split: one subscription per
//!   transport, merged into one subscriber. A global group receives each type
//!   only from the transport that type is routed to, so a bridged event is
//!   seen once (from its destination), not also from its source.
//! - **Bridges**: each bridged type is a group `eventbus.bridge.<type>` on
//!   the source whose handler appends each message, as received, to the
//!   destination; the source's groups compete (on Redis pub/sub through a
//!   lease), so each message is appended once across all instances.
//! - **Dead letters** are listed from every transport (once each, when two
//!   transports share one dead-letter queue) and replayed through the
//!   transport of the group that gave up; their ids are `<transport>/<id>`.
//! - **Schedules**: ticks are claimed on the default transport; delayed
//!   events wait on the transport of their type.
//!
//! The syntax of `EVENTBUS_ROUTES` and `EVENTBUS_BRIDGES` (see
//! [`parse_routes`]): `types=url;types=url`, where `types` is a
//! comma-separated list of event types, each optionally ending in `*`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::Poll;
use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;
use parking_lot::Mutex;

use crate::error::{Error, Result};
use crate::transport::{
    Capabilities, DeadLetter, DeadLetterInfo, Delivery, DeliveryId, GroupSpec, Outgoing,
    Subscriber, Topics, Transport, redact,
};
use eventbus_core::feed::{Cursor, Feed, FeedError, FeedPage};

/// The environment variable with the routes of [`BusBuilder::connect_env`](crate::BusBuilder::connect_env).
pub const ROUTES_ENV: &str = "EVENTBUS_ROUTES";
/// The environment variable with the bridges of [`BusBuilder::connect_env`](crate::BusBuilder::connect_env).
pub const BRIDGES_ENV: &str = "EVENTBUS_BRIDGES";

/// The group name of the bridge of `event_type`.
pub(crate) fn bridge_group(event_type: &str) -> String {
    format!("{BRIDGE_PREFIX}{event_type}")
}

const BRIDGE_PREFIX: &str = "eventbus.bridge.";

/// Whether `group` is a bridge's group (bridges run with every run of a bus).
pub(crate) fn is_bridge_group(group: &str) -> bool {
    group.starts_with(BRIDGE_PREFIX)
}

/// A pattern of event types: one type, or every type with a prefix (`review_*`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Pattern {
    Exact(String),
    Prefix(String),
}

impl Pattern {
    /// Parses `review_created` or `review_*`; the error says why not.
    fn parse(text: &str) -> std::result::Result<Self, String> {
        let t = text.trim();
        if t.is_empty() {
            return Err("an empty event type".into());
        }
        if let Some(bad) = t
            .chars()
            .find(|c| c.is_whitespace() || c.is_control() || matches!(c, '=' | ';' | ','))
        {
            return Err(format!(
                "`{}` contains {bad:?}, which an event type cannot",
                t.escape_debug()
            ));
        }
        match t.find('*') {
            None => Ok(Pattern::Exact(t.to_owned())),
            Some(i) if i + 1 == t.len() && i > 0 => Ok(Pattern::Prefix(t[..i].to_owned())),
            Some(_) if t == "*" => Err(
                "`*` alone would route every type; set the default transport (EVENTBUS_URL) instead"
                    .into(),
            ),
            Some(_) => Err(format!(
                "`{t}` has a `*` that is not at its end; a pattern is a type or a prefix followed by `*`, as in `review_*`"
            )),
        }
    }

    fn matches(&self, ty: &str) -> bool {
        match self {
            Pattern::Exact(t) => t == ty,
            Pattern::Prefix(p) => ty.starts_with(p.as_str()),
        }
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pattern::Exact(t) => f.write_str(t),
            Pattern::Prefix(p) => write!(f, "{p}*"),
        }
    }
}

/// Where a route or bridge leads: a URL to connect, or a transport given in code.
pub(crate) enum Target {
    Url(String),
    Transport(Arc<dyn Transport>),
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Url(u) => write!(f, "{}", redact(u)),
            Target::Transport(t) => write!(f, "<{}>", t.name()),
        }
    }
}

/// A route or bridge as configured: type patterns, a target, and where it
/// was given (`Bus::builder()` or an environment variable), for errors.
#[derive(Debug)]
pub(crate) struct RouteSpec {
    pub(crate) patterns: Vec<String>,
    pub(crate) target: Target,
    pub(crate) origin: &'static str,
}

/// Parses the value of `EVENTBUS_ROUTES` or `EVENTBUS_BRIDGES` (named `var`
/// in errors): routes separated by `;` (or new lines), each
/// `types=url`, `types` a comma-separated list of event types each
/// optionally ending in `*`. Spaces around the separators are ignored; a
/// `;` inside a URL (a password) must be written `%3B`.
///
/// ```
/// use eventbus::routing::parse_routes;
/// let routes = parse_routes(
///     "EVENTBUS_ROUTES",
///     "review_*,moderate_action=redis://:pw@r:6379?mode=pubsub&codec=legacy; send_short_message=redis://r:6379",
/// )?;
/// assert_eq!(routes[0].0, ["review_*", "moderate_action"]);
/// assert_eq!(routes[0].1, "redis://:pw@r:6379?mode=pubsub&codec=legacy");
/// assert_eq!(routes[1].0, ["send_short_message"]);
///
/// let err = parse_routes("EVENTBUS_ROUTES", "review_*=redis://:pw@r:6379;moderate_action").unwrap_err();
/// assert_eq!(
///     err.to_string(),
///     "EVENTBUS_ROUTES: `moderate_action` (route 2) has no `=url`; write `types=url;types=url`, as in `review_*,moderate_action=redis://host:6379?mode=pubsub`"
/// );
/// # Ok::<(), eventbus::Error>(())
/// ```
pub fn parse_routes(var: &str, value: &str) -> Result<Vec<(Vec<String>, String)>> {
    let mut out = Vec::new();
    let routes = value
        .split([';', '\n'])
        .map(str::trim)
        .filter(|r| !r.is_empty());
    for (n, route) in routes.enumerate() {
        let n = n + 1;
        let Some((types, url)) = route.split_once('=') else {
            return Err(Error::Config(format!(
                "{var}: `{}` (route {n}) has no `=url`; write `types=url;types=url`, as in `review_*,moderate_action=redis://host:6379?mode=pubsub`",
                redact(route)
            )));
        };
        let url = url.trim();
        if url.is_empty() {
            return Err(Error::Config(format!(
                "{var}: route {n} (`{}`) has no URL after `=`; write `types=url`, as in `{}=redis://host:6379`",
                types.trim(),
                types.trim()
            )));
        }
        if !url.contains("://") {
            return Err(Error::Config(format!(
                "{var}: route {n} (`{}`) leads to `{}`, which is not a transport URL; write `types=redis://host:6379` (a `;` inside a URL is written `%3B`)",
                types.trim(),
                redact(url)
            )));
        }
        let patterns: Vec<String> = types.split(',').map(|t| t.trim().to_owned()).collect();
        for p in &patterns {
            Pattern::parse(p).map_err(|why| {
                Error::Config(format!(
                    "{var}: route {n} has {why}; list event types separated by `,` before the `=`"
                ))
            })?;
        }
        out.push((patterns, url.to_owned()));
    }
    Ok(out)
}

/// The routing table: which transport each type is published on and
/// subscribed from. Shared by the router and its merged subscribers.
#[derive(Debug, Default)]
struct Table {
    exact: HashMap<String, usize>,
    /// Longest prefix first.
    prefixes: Vec<(String, usize)>,
    /// Bridged types: published on their bridge's source.
    bridged: HashMap<String, usize>,
    /// Bridge groups: subscribed on their source.
    bridge_groups: HashMap<String, usize>,
    /// The transports a global group subscribes on (the default and every
    /// route's; not a bridge's source unless a route leads there too).
    all: Vec<usize>,
}

impl Table {
    /// The transport `ty` is routed to (subscribed from).
    fn home(&self, ty: &str) -> usize {
        if let Some(&i) = self.exact.get(ty) {
            return i;
        }
        self.prefixes
            .iter()
            .find(|(p, _)| ty.starts_with(p.as_str()))
            .map_or(0, |&(_, i)| i)
    }

    /// The transport `ty` is published on.
    fn publish_to(&self, ty: &str) -> usize {
        match self.bridged.get(ty) {
            Some(&from) => from,
            None => self.home(ty),
        }
    }

    /// The parts of `group`: each transport it subscribes on, with the
    /// topics it reads there.
    fn split(&self, group: &GroupSpec) -> Vec<(usize, Topics)> {
        if let Some(&from) = self.bridge_groups.get(&group.group) {
            return vec![(from, group.topics.clone())];
        }
        match &group.topics {
            Topics::All => self.all.iter().map(|&i| (i, Topics::All)).collect(),
            Topics::Types(types) => {
                let mut parts: BTreeMap<usize, Vec<String>> = BTreeMap::new();
                for t in types {
                    parts.entry(self.home(t)).or_default().push(t.clone());
                }
                parts
                    .into_iter()
                    .map(|(i, types)| (i, Topics::Types(types)))
                    .collect()
            }
        }
    }
}

/// A bridge the bus runs: its type, group and destination.
#[derive(Clone)]
pub(crate) struct Bridge {
    pub(crate) event_type: String,
    pub(crate) group: String,
    pub(crate) to: Arc<dyn Transport>,
}

/// A [`Transport`] over several, routed by event type (see the module docs).
pub(crate) struct Router {
    transports: Vec<Arc<dyn Transport>>,
    /// For logs and errors: the URL (password redacted) or the transport's name.
    labels: Vec<String>,
    table: Arc<Table>,
}

impl fmt::Debug for Router {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Router")
            .field("transports", &self.labels)
            .finish_non_exhaustive()
    }
}

/// Connects `target`, reusing a transport already connected for the same URL.
async fn connect(
    target: Target,
    what: &str,
    transports: &mut Vec<Arc<dyn Transport>>,
    labels: &mut Vec<String>,
    by_url: &mut HashMap<String, usize>,
) -> Result<usize> {
    match target {
        Target::Url(url) => {
            if let Some(&i) = by_url.get(&url) {
                return Ok(i);
            }
            let transport = crate::transport::connect(&url)
                .await
                .map_err(|e| Error::Config(format!("{what}: {e}")))?;
            transports.push(transport);
            labels.push(redact(&url));
            by_url.insert(url, transports.len() - 1);
            Ok(transports.len() - 1)
        }
        Target::Transport(t) => {
            labels.push(format!("the {} transport given in code", t.name()));
            transports.push(t);
            Ok(transports.len() - 1)
        }
    }
}

impl Router {
    /// Connects the default target and every route's and bridge's, and
    /// resolves the bridges' patterns against `known` (the event types the
    /// bus knows). Returns the router and the bridges to run.
    pub(crate) async fn build(
        default: Target,
        routes: Vec<RouteSpec>,
        bridges: Vec<RouteSpec>,
        known: &BTreeSet<&str>,
    ) -> Result<(Router, Vec<Bridge>)> {
        let mut transports = Vec::new();
        let mut labels = Vec::new();
        let mut by_url = HashMap::new();
        connect(
            default,
            "the default transport",
            &mut transports,
            &mut labels,
            &mut by_url,
        )
        .await?;

        // pattern -> (transport, origin)
        let mut routed: BTreeMap<Pattern, (usize, &'static str)> = BTreeMap::new();
        for route in routes {
            let patterns = parse_patterns(&route)?;
            let what = format!("{}: the route of {}", route.origin, list(&route.patterns));
            let i = connect(
                route.target,
                &what,
                &mut transports,
                &mut labels,
                &mut by_url,
            )
            .await?;
            for p in patterns {
                match routed.get(&p) {
                    Some(&(prev, origin)) if origin == route.origin && prev != i => {
                        return Err(Error::Config(format!(
                            "{}: `{p}` is routed twice, to {} and to {}; route each type once",
                            route.origin, labels[prev], labels[i]
                        )));
                    }
                    Some(&(prev, origin)) if prev != i => {
                        // Routes from the environment come after those in
                        // code: a deployment's configuration wins.
                        tracing::info!(
                            "{}: `{p}` goes to {} instead of {} (given by {origin})",
                            route.origin,
                            labels[i],
                            labels[prev]
                        );
                    }
                    _ => {}
                }
                routed.insert(p, (i, route.origin));
            }
        }
        let mut table = Table::default();
        for (p, (i, _)) in &routed {
            match p {
                Pattern::Exact(t) => {
                    table.exact.insert(t.clone(), *i);
                }
                Pattern::Prefix(pre) => table.prefixes.push((pre.clone(), *i)),
            }
        }
        table
            .prefixes
            .sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.0.cmp(&b.0)));
        let mut all: BTreeSet<usize> = BTreeSet::from([0]);
        all.extend(routed.values().map(|(i, _)| *i));
        table.all = all.into_iter().collect();

        let mut out: BTreeMap<String, Bridge> = BTreeMap::new();
        for bridge in bridges {
            let patterns = parse_patterns(&bridge)?;
            let what = format!(
                "{}: the bridge of {}",
                bridge.origin,
                list(&bridge.patterns)
            );
            let from = connect(
                bridge.target,
                &what,
                &mut transports,
                &mut labels,
                &mut by_url,
            )
            .await?;
            let mut types = BTreeSet::new();
            for p in &patterns {
                match p {
                    Pattern::Exact(t) => {
                        types.insert(t.clone());
                    }
                    Pattern::Prefix(_) => {
                        let matched: Vec<&str> =
                            known.iter().copied().filter(|t| p.matches(t)).collect();
                        if matched.is_empty() {
                            return Err(Error::Config(format!(
                                "{}: the bridge pattern `{p}` matches no event type this binary knows; name the types to bridge (a bridge subscribes to one channel per type)",
                                bridge.origin
                            )));
                        }
                        types.extend(matched.into_iter().map(str::to_owned));
                    }
                }
            }
            for t in types {
                let to = table.home(&t);
                if to == from {
                    return Err(Error::Config(format!(
                        "{}: `{t}` is bridged from {} into the same transport; route `{t}` to the transport its handlers should read (e.g. Redis Streams) with EVENTBUS_ROUTES or Bus::builder().route(..), or set EVENTBUS_URL to it",
                        bridge.origin, labels[from]
                    )));
                }
                if let Some(&prev) = table.bridged.get(&t)
                    && prev != from
                {
                    return Err(Error::Config(format!(
                        "{}: `{t}` is bridged from both {} and {}; bridge each type from one source",
                        bridge.origin, labels[prev], labels[from]
                    )));
                }
                table.bridged.insert(t.clone(), from);
                let group = bridge_group(&t);
                table.bridge_groups.insert(group.clone(), from);
                out.insert(
                    group.clone(),
                    Bridge {
                        event_type: t,
                        group,
                        to: transports[to].clone(),
                    },
                );
            }
        }
        let out: Vec<Bridge> = out.into_values().collect();

        let router = Router {
            transports,
            labels,
            table: Arc::new(table),
        };
        for p in routed.keys() {
            if !known.iter().any(|t| p.matches(t)) {
                tracing::warn!(
                    "the route of `{p}` matches no event type this binary knows (a typo?); it applies to whatever is published with that type"
                );
            }
        }
        tracing::info!("event routes: {}", router.describe(&out));
        Ok((router, out))
    }

    /// One line for the logs: each route, each bridge, the default.
    pub(crate) fn describe(&self, bridges: &[Bridge]) -> String {
        let mut by_target: BTreeMap<usize, Vec<String>> = BTreeMap::new();
        for (t, &i) in &self.table.exact {
            by_target.entry(i).or_default().push(t.clone());
        }
        for (p, i) in &self.table.prefixes {
            by_target.entry(*i).or_default().push(format!("{p}*"));
        }
        let mut parts: Vec<String> = by_target
            .into_iter()
            .filter(|(i, _)| *i != 0)
            .map(|(i, mut types)| {
                types.sort();
                format!("{} -> {}", types.join(", "), self.labels[i])
            })
            .collect();
        for b in bridges {
            let from = self.table.bridged[&b.event_type];
            let to = self.table.home(&b.event_type);
            parts.push(format!(
                "{} bridged from {} into {}",
                b.event_type, self.labels[from], self.labels[to]
            ));
        }
        parts.push(format!("everything else -> {}", self.labels[0]));
        parts.join("; ")
    }

    /// The parts of `group` with what their transports can do, for the
    /// start-up check.
    pub(crate) fn parts(&self, group: &GroupSpec) -> Vec<Part> {
        self.table
            .split(group)
            .into_iter()
            .map(|(i, topics)| {
                let t = &self.transports[i];
                Part {
                    name: t.name(),
                    label: Some(self.labels[i].clone()),
                    capabilities: t.capabilities(),
                    topics,
                }
            })
            .collect()
    }

    fn part_spec(group: &GroupSpec, topics: Topics) -> GroupSpec {
        GroupSpec {
            topics,
            ..group.clone()
        }
    }

    /// The distinct transports, each once.
    fn each(&self) -> impl Iterator<Item = &Arc<dyn Transport>> {
        self.transports.iter()
    }
}

fn parse_patterns(spec: &RouteSpec) -> Result<Vec<Pattern>> {
    if spec.patterns.is_empty() {
        return Err(Error::Config(format!(
            "{}: a route or bridge without event types; name at least one (`review_*`, `moderate_action`)",
            spec.origin
        )));
    }
    spec.patterns
        .iter()
        .map(|p| {
            Pattern::parse(p).map_err(|why| {
                Error::Config(format!(
                    "{}: {why}; name event types, each optionally ending in `*`",
                    spec.origin
                ))
            })
        })
        .collect()
}

fn list(patterns: &[String]) -> String {
    patterns
        .iter()
        .map(|p| format!("`{}`", p.trim()))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Router {
    /// The one transport whose log holds `topics`, or why there is none.
    fn feed_for(&self, topics: &Topics) -> std::result::Result<&dyn Feed, FeedError> {
        let homes: BTreeSet<usize> = match topics {
            Topics::All => self.table.all.iter().copied().collect(),
            Topics::Types(types) => types.iter().map(|t| self.table.home(t)).collect(),
        };
        let mut homes = homes.into_iter();
        let (Some(i), None) = (homes.next(), homes.next()) else {
            let which = match topics {
                Topics::All => "every type".to_owned(),
                Topics::Types(types) => list(types),
            };
            return Err(FeedError::Unsupported(format!(
                "{which} live on several transports of this bus ({}); read a feed of the types of one transport at a time",
                self.labels.join(", ")
            )));
        };
        self.transports[i].feed().ok_or_else(|| {
            FeedError::Unsupported(format!(
                "`{}` ({}) keeps no log to read a feed from; route these types to a transport that does (Redis Streams, memory)",
                self.labels[i],
                self.transports[i].name()
            ))
        })
    }
}

impl Feed for Router {
    fn read<'a>(
        &'a self,
        after: Option<&'a Cursor>,
        topics: &'a Topics,
        limit: usize,
    ) -> BoxFuture<'a, std::result::Result<FeedPage, FeedError>> {
        match self.feed_for(topics) {
            Ok(feed) => feed.read(after, topics, limit),
            Err(e) => Box::pin(std::future::ready(Err(e))),
        }
    }

    fn wait<'a>(
        &'a self,
        after: Option<&'a Cursor>,
        topics: &'a Topics,
        timeout: Duration,
    ) -> BoxFuture<'a, std::result::Result<(), FeedError>> {
        match self.feed_for(topics) {
            Ok(feed) => feed.wait(after, topics, timeout),
            Err(e) => Box::pin(std::future::ready(Err(e))),
        }
    }
}

impl Transport for Router {
    fn name(&self) -> &'static str {
        "routed"
    }

    /// Reads the log of the transport the asked types live on (see
    /// [`Router::feed_for`]); `None` when no transport keeps one.
    fn feed(&self) -> Option<&dyn Feed> {
        self.each()
            .any(|t| t.feed().is_some())
            .then_some(self as &dyn Feed)
    }

    /// What every transport of the router can do (the bus checks each group
    /// against the transports it subscribes on instead).
    fn capabilities(&self) -> Capabilities {
        self.each()
            .fold(Capabilities::COMPETING.with_broadcast(true), |acc, t| {
                let c = t.capabilities();
                acc.with_broadcast(acc.broadcast && c.broadcast)
                    .with_competing_consumers(acc.competing_consumers && c.competing_consumers)
            })
    }

    fn publish<'a>(&'a self, batch: &'a [Outgoing]) -> BoxFuture<'a, Result<()>> {
        let Some(first) = batch.first() else {
            return Box::pin(async { Ok(()) });
        };
        let i = self.table.publish_to(&first.event_type);
        if batch
            .iter()
            .all(|m| self.table.publish_to(&m.event_type) == i)
        {
            return self.transports[i].publish(batch);
        }
        Box::pin(async move {
            let mut parts: BTreeMap<usize, Vec<Outgoing>> = BTreeMap::new();
            for m in batch {
                parts
                    .entry(self.table.publish_to(&m.event_type))
                    .or_default()
                    .push(m.clone());
            }
            let sends = parts
                .iter()
                .map(|(i, part)| self.transports[*i].publish(part));
            futures::future::try_join_all(sends).await.map(drop)
        })
    }

    fn publish_now(&self, batch: &[Outgoing]) -> Option<Result<()>> {
        let i = self.table.publish_to(&batch.first()?.event_type);
        if batch
            .iter()
            .all(|m| self.table.publish_to(&m.event_type) == i)
        {
            self.transports[i].publish_now(batch)
        } else {
            None
        }
    }

    fn publish_at(&self, message: Outgoing, at: SystemTime) -> BoxFuture<'_, Result<()>> {
        let i = self.table.publish_to(&message.event_type);
        self.transports[i].publish_at(message, at)
    }

    fn declare<'a>(&'a self, group: &'a GroupSpec) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            for (i, topics) in self.table.split(group) {
                let part = Self::part_spec(group, topics);
                self.transports[i].declare(&part).await?;
            }
            Ok(())
        })
    }

    fn subscribe<'a>(&'a self, group: &'a GroupSpec) -> BoxFuture<'a, Result<Box<dyn Subscriber>>> {
        Box::pin(async move {
            let split = self.table.split(group);
            let global = group.topics == Topics::All && split.len() > 1;
            let mut parts = Vec::with_capacity(split.len());
            for (i, topics) in split {
                let part = Self::part_spec(group, topics);
                parts.push((i, self.transports[i].subscribe(&part).await?));
            }
            if parts.len() == 1 && !global {
                let (_, sub) = parts.pop().expect("one part");
                return Ok(sub);
            }
            let parts = parts
                .into_iter()
                .map(|(i, sub)| (i, Arc::<dyn Subscriber>::from(sub)))
                .collect();
            Ok(
                Box::new(Merged::new(parts, global.then(|| self.table.clone())))
                    as Box<dyn Subscriber>,
            )
        })
    }

    fn claim_tick<'a>(&'a self, schedule: &'a str, tick_ms: u64) -> BoxFuture<'a, Result<bool>> {
        self.transports[0].claim_tick(schedule, tick_ms)
    }

    fn dead_letters(&self, limit: usize) -> BoxFuture<'_, Result<Vec<DeadLetter>>> {
        Box::pin(async move {
            let lists = futures::future::try_join_all(
                self.transports.iter().map(|t| t.dead_letters(limit)),
            )
            .await?;
            // Two transports on one server share its dead-letter queue: each
            // entry is listed once, under the transport its group reads.
            let mut seen: HashMap<(String, String, SystemTime, bytes::Bytes), Vec<usize>> =
                HashMap::new();
            let mut entries: Vec<(usize, DeadLetter)> = Vec::new();
            for (i, list) in lists.into_iter().enumerate() {
                for dl in list {
                    let key = (dl.id.clone(), dl.group.clone(), dl.time, dl.payload.clone());
                    let listed = seen.entry(key).or_default();
                    listed.push(i);
                    if listed.len() == 1 {
                        entries.push((i, dl));
                    }
                }
            }
            let mut out: Vec<DeadLetter> = entries
                .into_iter()
                .map(|(first, mut dl)| {
                    let key = (dl.id.clone(), dl.group.clone(), dl.time, dl.payload.clone());
                    let listed = &seen[&key];
                    let owner = self.owner_of(&dl);
                    let i = if listed.contains(&owner) {
                        owner
                    } else {
                        first
                    };
                    dl.id = format!("{i}/{}", dl.id);
                    dl
                })
                .collect();
            out.sort_by_key(|d| d.time);
            out.truncate(limit);
            Ok(out)
        })
    }

    fn delete_dead_letter<'a>(&'a self, dead_letter_id: &'a str) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            match dead_letter_id
                .split_once('/')
                .and_then(|(i, id)| Some((i.parse::<usize>().ok()?, id)))
                .filter(|(i, _)| *i < self.transports.len())
            {
                Some((i, id)) => self.transports[i].delete_dead_letter(id).await,
                None => Ok(false),
            }
        })
    }

    fn replay<'a>(&'a self, dead_letter_id: &'a str) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            let routed = dead_letter_id
                .split_once('/')
                .and_then(|(i, id)| Some((i.parse::<usize>().ok()?, id)))
                .filter(|(i, _)| *i < self.transports.len());
            if let Some((i, id)) = routed {
                return self.transports[i].replay(id).await;
            }
            // An id as one transport lists it (a tool reading the DLQ
            // directly): replayed through the transport its group reads.
            let listed = self.dead_letters(100_000).await?;
            match listed.iter().find(|d| {
                d.id.split_once('/')
                    .is_some_and(|(_, id)| id == dead_letter_id)
            }) {
                Some(d) => self.replay(&d.id).await,
                None => Ok(false),
            }
        })
    }

    /// Combined over the transports the group's types live on that can tell.
    fn group_stats<'a>(
        &'a self,
        group: &'a GroupSpec,
    ) -> Option<BoxFuture<'a, Result<crate::transport::GroupStats>>> {
        Some(Box::pin(async move {
            let mut total: Option<crate::transport::GroupStats> = None;
            for (i, topics) in self.table.split(group) {
                let part = Self::part_spec(group, topics);
                let Some(stats) = self.transports[i].group_stats(&part) else {
                    continue;
                };
                let stats = stats.await?;
                total = Some(total.map_or(stats, |t| t.combine(stats)));
            }
            Ok(total.unwrap_or_default())
        }))
    }

    fn ping(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            futures::future::try_join_all(self.each().map(|t| t.ping()))
                .await
                .map(drop)
        })
    }

    fn run_background(
        &self,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> BoxFuture<'static, Result<()>> {
        let all: Vec<_> = self
            .each()
            .map(|t| t.run_background(shutdown.clone()))
            .collect();
        Box::pin(async move { futures::future::try_join_all(all).await.map(drop) })
    }
}

impl Router {
    /// The transport whose group dead-lettered `dl`: a bridge's source, else
    /// the transport of the event's type.
    fn owner_of(&self, dl: &DeadLetter) -> usize {
        if let Some(&from) = self.table.bridge_groups.get(&dl.group) {
            return from;
        }
        dl.event_type.as_deref().map_or(0, |t| self.table.home(t))
    }
}

type Read = BoxFuture<'static, Result<Vec<Delivery>>>;

/// A group split over several transports: one subscriber per part, read
/// together. Each part keeps one read in flight across calls to `next`
/// (a read that finished is handed out; the others stay pending), so
/// nothing a part delivered is lost when a `next` is cancelled.
struct Merged {
    /// `(transport index, subscriber)`.
    parts: Vec<(usize, Arc<dyn Subscriber>)>,
    reads: tokio::sync::Mutex<Vec<Option<Read>>>,
    /// A merged delivery id -> its part and the part's own id.
    ids: Mutex<HashMap<u128, (usize, Delivery)>>,
    next_id: AtomicU64,
    /// Where the next poll starts, so that no part starves another.
    turn: AtomicUsize,
    /// A global group: a part keeps only the types routed to its transport.
    global: Option<Arc<Table>>,
    /// Deliveries read and not handed out yet (a `next` cancelled while it
    /// acknowledged what another transport's part reads).
    ready: Mutex<Vec<Delivery>>,
}

impl Merged {
    fn new(parts: Vec<(usize, Arc<dyn Subscriber>)>, global: Option<Arc<Table>>) -> Self {
        let reads = parts.iter().map(|_| None).collect();
        Self {
            parts,
            reads: tokio::sync::Mutex::new(reads),
            ids: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            turn: AtomicUsize::new(0),
            global,
            ready: Mutex::new(Vec::new()),
        }
    }

    fn part_of(&self, id: DeliveryId) -> Option<(usize, Delivery)> {
        self.ids.lock().remove(&id.0)
    }
}

impl Subscriber for Merged {
    fn next(&self, max: usize) -> BoxFuture<'_, Result<Vec<Delivery>>> {
        Box::pin(async move {
            loop {
                let ready = std::mem::take(&mut *self.ready.lock());
                if !ready.is_empty() {
                    return Ok(ready);
                }
                let (k, got) = {
                    let mut reads = self.reads.lock().await;
                    for (slot, (_, sub)) in reads.iter_mut().zip(&self.parts) {
                        if slot.is_none() {
                            let sub = sub.clone();
                            *slot = Some(Box::pin(async move { sub.next(max).await }));
                        }
                    }
                    let start = self.turn.fetch_add(1, Ordering::Relaxed);
                    let n = reads.len();
                    std::future::poll_fn(|cx| {
                        for j in 0..n {
                            let k = (start + j) % n;
                            if let Some(read) = reads[k].as_mut()
                                && let Poll::Ready(got) = read.as_mut().poll(cx)
                            {
                                reads[k] = None;
                                return Poll::Ready((k, got));
                            }
                        }
                        Poll::Pending
                    })
                    .await
                };
                let (transport, sub) = &self.parts[k];
                let batch = got?;
                let (keep, other): (Vec<Delivery>, Vec<Delivery>) = match &self.global {
                    None => (batch, Vec::new()),
                    Some(table) => batch
                        .into_iter()
                        .partition(|d| table.home(&d.event_type) == *transport),
                };
                {
                    let mut ids = self.ids.lock();
                    let out = keep.into_iter().map(|d| {
                        let id = u128::from(self.next_id.fetch_add(1, Ordering::Relaxed));
                        let outer = Delivery {
                            id: DeliveryId(id),
                            ..d.clone()
                        };
                        ids.insert(id, (k, d));
                        outer
                    });
                    self.ready.lock().extend(out);
                }
                if !other.is_empty() {
                    // Routed to another transport: this group reads them there.
                    let ids: Vec<DeliveryId> = other.iter().map(|d| d.id).collect();
                    sub.ack(&ids).await?;
                }
            }
        })
    }

    fn ack<'a>(&'a self, ids: &'a [DeliveryId]) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let mut by_part: BTreeMap<usize, Vec<DeliveryId>> = BTreeMap::new();
            for id in ids {
                if let Some((k, d)) = self.part_of(*id) {
                    by_part.entry(k).or_default().push(d.id);
                }
            }
            for (k, ids) in by_part {
                self.parts[k].1.ack(&ids).await?;
            }
            Ok(())
        })
    }

    fn retry(&self, id: DeliveryId, delay: Duration) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            match self.part_of(id) {
                Some((k, d)) => self.parts[k].1.retry(d.id, delay).await,
                None => Ok(()),
            }
        })
    }

    fn dead_letter<'a>(
        &'a self,
        delivery: &'a Delivery,
        info: DeadLetterInfo,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            match self.part_of(delivery.id) {
                Some((k, d)) => self.parts[k].1.dead_letter(&d, info).await,
                None => Ok(()),
            }
        })
    }

    fn close(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            // The parts' reads kept in flight across `next` calls end here
            // (cancel-safe), so that no part's close waits for its own read.
            for read in self.reads.lock().await.iter_mut() {
                *read = None;
            }
            let closes = self.parts.iter().map(|(_, s)| s.close());
            let results = futures::future::join_all(closes).await;
            results.into_iter().collect::<Result<Vec<()>>>().map(drop)
        })
    }

    fn settles_inline(&self) -> bool {
        self.parts.iter().all(|(_, s)| s.settles_inline())
    }
}

/// One transport a group subscribes on, for the start-up check.
pub(crate) struct Part {
    name: &'static str,
    /// The route's URL (password redacted) on a routed bus.
    label: Option<String>,
    capabilities: Capabilities,
    topics: Topics,
}

/// Checks each group the bus is about to run against what the transports
/// it subscribes on can do; every problem is one sentence that says what to
/// do, one per line.
pub(crate) fn check_groups<'a>(
    transport: &dyn Transport,
    router: Option<&Router>,
    groups: impl IntoIterator<Item = &'a GroupSpec>,
) -> Result<()> {
    let mut problems = Vec::new();
    for g in groups {
        let parts = match router {
            Some(r) => r.parts(g),
            None => vec![Part {
                name: transport.name(),
                label: None,
                capabilities: transport.capabilities(),
                topics: g.topics.clone(),
            }],
        };
        for part in parts {
            let (name, caps, topics) = (part.name, part.capabilities, &part.topics);
            let at = match &part.label {
                Some(label) => format!("{name} ({label})"),
                None => name.to_owned(),
            };
            let types = match topics {
                Topics::All => "every".to_owned(),
                Topics::Types(t) => t
                    .iter()
                    .map(|t| format!("`{t}`"))
                    .collect::<Vec<_>>()
                    .join(", "),
            };
            let first = match topics {
                Topics::Types(t) => t.first().map_or("the_type", String::as_str),
                Topics::All => "the_type",
            };
            if is_bridge_group(&g.group) {
                if !caps.competing_consumers {
                    problems.push(format!(
                        "cannot bridge {types} from {at}: it cannot make a group's instances compete, so every running instance would append each message; bridge from a transport whose groups compete (Redis pub/sub does, through a lease)"
                    ));
                }
            } else if g.broadcast && !caps.broadcast {
                problems.push(format!(
                    "handler `{}` is broadcast, but {at} gives each event of a group to one instance: route {types} to a transport that broadcasts (e.g. `EVENTBUS_ROUTES='{first}=redis://host:6379?mode=pubsub'`), or drop `broadcast` to have one instance handle each event",
                    g.handler
                ));
            } else if !g.broadcast && !caps.competing_consumers {
                problems.push(format!(
                    "group `{}` (handler `{}`) cannot compete on {at}, so every running instance would handle each {types} event: route {types} to a transport whose groups compete (e.g. `EVENTBUS_ROUTES='{first}=redis://host:6379'` for Redis Streams, or `Bus::builder().route([..], url)`), or mark the handler `#[handler(broadcast)]` if every instance should handle each event",
                    g.group, g.handler
                ));
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Error::Config(problems.join("\n")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        assert_eq!(
            Pattern::parse(" review_* "),
            Ok(Pattern::Prefix("review_".into()))
        );
        assert_eq!(
            Pattern::parse("moderate_action"),
            Ok(Pattern::Exact("moderate_action".into()))
        );
        assert!(Pattern::parse("*").unwrap_err().contains("EVENTBUS_URL"));
        assert!(
            Pattern::parse("re*view")
                .unwrap_err()
                .contains("not at its end")
        );
        assert!(Pattern::parse("a b").unwrap_err().contains("' '"));
        assert!(Pattern::parse("").unwrap_err().contains("empty"));
        assert!(Pattern::Prefix("review_".into()).matches("review_created"));
        assert!(!Pattern::Prefix("review_".into()).matches("record_change"));
    }

    #[test]
    fn env_syntax() {
        let r = parse_routes(
            "EVENTBUS_ROUTES",
            "\n  review_*, moderate_action = redis://u:p@h:1/0?mode=pubsub&codec=legacy ;\n send_short_message=redis+cluster://h:1,h:2 ;",
        )
        .unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].0, ["review_*", "moderate_action"]);
        assert_eq!(r[0].1, "redis://u:p@h:1/0?mode=pubsub&codec=legacy");
        assert_eq!(r[1].1, "redis+cluster://h:1,h:2");
        assert!(parse_routes("EVENTBUS_ROUTES", "  ").unwrap().is_empty());
    }

    #[test]
    fn env_errors_are_one_sentence_without_passwords() {
        let cases = [
            (
                "redis://:s3cret@h:6379",
                "EVENTBUS_ROUTES: `redis://:***@h:6379` (route 1) has no `=url`",
            ),
            (
                "review_*=",
                "EVENTBUS_ROUTES: route 1 (`review_*`) has no URL after `=`; write `types=url`, as in `review_*=redis://host:6379`",
            ),
            (
                "review_*=localhost:6379",
                "EVENTBUS_ROUTES: route 1 (`review_*`) leads to `localhost:6379`, which is not a transport URL",
            ),
            (
                "a=redis://h;re*view=redis://:s3cret@h",
                "EVENTBUS_ROUTES: route 2 has `re*view` has a `*` that is not at its end",
            ),
            (
                "review created=redis://h",
                "EVENTBUS_ROUTES: route 1 has `review created` contains ' ', which an event type cannot",
            ),
            (
                "a,,b=redis://h",
                "EVENTBUS_ROUTES: route 1 has an empty event type; list event types separated by `,` before the `=`",
            ),
        ];
        for (value, want) in cases {
            match parse_routes("EVENTBUS_ROUTES", value) {
                Ok(_) => panic!("{value} parsed"),
                Err(e) => {
                    let msg = e.to_string();
                    assert!(msg.starts_with(want), "{value}: {msg}");
                    assert!(!msg.contains("s3cret"), "{msg}");
                    assert!(!msg.contains('\n'), "{msg}");
                }
            }
        }
    }

    fn table() -> Table {
        let mut t = Table::default();
        t.exact.insert("moderate_action".into(), 1);
        t.exact.insert("review_special".into(), 0);
        t.prefixes = vec![("review_old_".into(), 2), ("review_".into(), 1)];
        t.bridged.insert("review_created".into(), 3);
        t.bridge_groups.insert(bridge_group("review_created"), 3);
        t.all = vec![0, 1, 2];
        t
    }

    #[test]
    fn exact_wins_then_the_longest_prefix() {
        let t = table();
        assert_eq!(t.home("moderate_action"), 1);
        assert_eq!(t.home("review_special"), 0);
        assert_eq!(t.home("review_old_thing"), 2);
        assert_eq!(t.home("review_approved"), 1);
        assert_eq!(t.home("send_short_message"), 0);
        // A bridged type is published on its source, read from its home.
        assert_eq!(t.publish_to("review_created"), 3);
        assert_eq!(t.home("review_created"), 1);
    }

    #[test]
    fn groups_split_by_transport() {
        let t = table();
        let spec = |topics| GroupSpec {
            group: "g".into(),
            handler: "h".into(),
            topics,
            handler_timeout: None,
            broadcast: false,
        };
        let parts = t.split(&spec(Topics::Types(vec![
            "id_user_changed".into(),
            "review_approved".into(),
            "sso_user_changed".into(),
        ])));
        assert_eq!(
            parts,
            vec![
                (
                    0,
                    Topics::Types(vec!["id_user_changed".into(), "sso_user_changed".into()])
                ),
                (1, Topics::Types(vec!["review_approved".into()])),
            ]
        );
        let all: Vec<usize> = t
            .split(&spec(Topics::All))
            .into_iter()
            .map(|p| p.0)
            .collect();
        assert_eq!(
            all,
            [0, 1, 2],
            "a global group reads every route, not bridge sources"
        );
        let mut bridge = spec(Topics::Types(vec!["review_created".into()]));
        bridge.group = bridge_group("review_created");
        assert_eq!(t.split(&bridge)[0].0, 3, "a bridge reads its source");
    }
}
