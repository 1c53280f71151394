//! The transactional outbox against real databases and brokers (one test
//! binary for the area): PostgreSQL, SQLite, relays to Redis, killed relays.
#![cfg(any(feature = "postgres", feature = "sqlite"))]

mod capture;
mod common;
mod feed;
mod http;
mod postgres;
mod redis;
mod sqlite;
