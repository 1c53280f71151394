//! The binding's own API against real redis-servers (one test binary for
//! the area): Streams, pub/sub, schedules, the DLQ, restarts, TLS, a cluster,
//! the django-broadcaster layout with a Python peer.

mod cluster;
mod common;
mod connect;
mod django_interop;
mod publish_concurrent;
mod pubsub;
mod schedule;
mod streams_basic;
mod streams_discovery;
mod streams_dlq;
mod streams_liveness;
mod streams_restart;
mod streams_retry;
mod tls;
