//! The browser client: the guest join page at `/j/{code}`, the staff console
//! at `/console`, and their static files.

use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::handler::HandlerWithoutStateExt;
use axum::routing::{get, get_service};
use tower_http::services::{ServeDir, ServeFile};

use super::{AppState, error};
use crate::config::Config;

/// The web client shipped in this repository.
pub fn default_web_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/web-client"))
}

pub fn router(config: &Config) -> Router<Arc<AppState>> {
    let dir = config.web_dir.clone().unwrap_or_else(default_web_dir);
    // GET (and HEAD) only: other methods get the router's JSON 405, and a missing
    // static file the same JSON 404 as any unknown path.
    let missing = error::unknown_path.into_service();
    Router::new()
        .route("/j/{code}", get_service(ServeFile::new(dir.join("join.html"))))
        .route("/console", get_service(ServeFile::new(dir.join("console.html"))))
        .route("/", get_service(ServeFile::new(dir.join("index.html"))))
        // No icon yet; answer without a 404 in every page's console.
        .route("/favicon.ico", get(|| async { axum::http::StatusCode::NO_CONTENT }))
        .nest_service(
            "/static",
            get_service(ServeDir::new(dir).not_found_service(missing)).fallback(error::wrong_method),
        )
}
