//! `GET /events` and `GET /events/stream` (being written).
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;

pub(crate) async fn page(State(_state): State<Arc<crate::State>>) -> StatusCode {
    StatusCode::NOT_IMPLEMENTED
}

pub(crate) async fn stream(State(_state): State<Arc<crate::State>>) -> StatusCode {
    StatusCode::NOT_IMPLEMENTED
}
