//! The browser client: the guest join page at `/j/{code}`, the staff console
//! at `/console`, and their static files.

use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use tower_http::services::{ServeDir, ServeFile};

use super::AppState;
use crate::config::Config;

/// The web client shipped in this repository.
pub fn default_web_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/web-client"))
}

pub fn router(config: &Config) -> Router<Arc<AppState>> {
    let dir = config.web_dir.clone().unwrap_or_else(default_web_dir);
    Router::new()
        .route_service("/j/{code}", ServeFile::new(dir.join("join.html")))
        .route_service("/console", ServeFile::new(dir.join("console.html")))
        .route_service("/", ServeFile::new(dir.join("index.html")))
        // No icon yet; answer without a 404 in every page's console.
        .route(
            "/favicon.ico",
            axum::routing::get(|| async { axum::http::StatusCode::NO_CONTENT }),
        )
        .nest_service("/static", ServeDir::new(dir))
}
