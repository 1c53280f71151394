//! `POST /events` (being written).
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;

pub(crate) async fn post(State(_state): State<Arc<crate::State>>) -> StatusCode {
    StatusCode::NOT_IMPLEMENTED
}
