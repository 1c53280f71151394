//! eventbus on Redis, end to end against real redis-servers (one test binary
//! for the area): crashes and takeover, the legacy catalogue and its codec,
//! routing, deprecations, a cluster, readiness, the migration recipe (routes,
//! pub/sub groups, the bridge). The transport contract itself is the
//! conformance suite's (`eventbus-redis/tests/conformance.rs`).
#![cfg(feature = "redis")]

mod cluster;
mod crash;
mod delivery;
mod discovery;
mod legacy;
mod legacy_replay;
mod liveness;
mod migration;
mod readiness;
mod routing;
mod support;
mod validation;
