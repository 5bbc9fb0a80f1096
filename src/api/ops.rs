//! Operations: `GET /api/health`.

use std::time::Instant;

use diesel::RunQueryDsl;
use rocket::http::Status;
use rocket::serde::json::Json;
use rocket::{Route, State};
use serde_json::{json, Value};

use crate::db::Db;

pub fn health_routes() -> Vec<Route> {
    rocket::routes![health]
}

/// 200 when a pooled connection answers `SELECT 1` within the pool timeout, else 503.
#[rocket::get("/health")]
async fn health(db: &State<Db>) -> (Status, Json<Value>) {
    let started = Instant::now();
    let answered = db
        .run(|conn| diesel::sql_query("SELECT 1").execute(conn))
        .await;
    let backend = db.backend().as_str();
    let version = env!("CARGO_PKG_VERSION");
    match answered {
        Ok(_) => {
            let latency_ms = (started.elapsed().as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0;
            (
                Status::Ok,
                Json(json!({
                    "status": "ok",
                    "database": { "status": "connected", "backend": backend, "latency_ms": latency_ms },
                    "version": version,
                })),
            )
        }
        Err(e) => {
            tracing::warn!(error = %e, "health check: database did not answer");
            (
                Status::ServiceUnavailable,
                Json(json!({
                    "status": "unavailable",
                    "database": { "status": "unavailable", "backend": backend },
                    "version": version,
                })),
            )
        }
    }
}
