//! `GET /api/v1/cluster/nodes` (admins): this node's id and the live nodes of its cluster
//! with their load, as the registry has them now. A node on its own answers with no id
//! and no nodes.

use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use gatehouse_signaling::ErrorCode;
use gatehouse_signaling::token::StaffRole;
use serde::Serialize;

use super::NodeReport;
use crate::server::AppState;
use crate::server::auth::Staff;
use crate::server::error::ApiError;

#[derive(Debug, Serialize)]
pub struct ClusterView {
    /// This node's id; `null` without `--redis-url`.
    pub node_id: Option<String>,
    /// The live nodes, this one included, ordered by id.
    pub nodes: Vec<NodeReport>,
}

pub fn router() -> Router<Arc<AppState>> {
    Router::new().route("/api/v1/cluster/nodes", get(nodes))
}

async fn nodes(State(state): State<Arc<AppState>>, Staff(staff): Staff) -> Result<Json<ClusterView>, ApiError> {
    if staff.role != StaffRole::Admin {
        return Err(ApiError::new(ErrorCode::Forbidden, "only admins see the cluster"));
    }
    Ok(Json(ClusterView {
        node_id: state.router.node_id().map(str::to_owned),
        nodes: state.router.nodes().await?,
    }))
}
