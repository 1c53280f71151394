//! The CloudEvents HTTP protocol binding 1.0: content modes and the header
//! mapping (owned by the ingest work; being written).
