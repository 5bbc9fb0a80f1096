//! Operations: `GET /api/health`, and `GET /api/openapi.json`, the API reference (OpenAPI
//! 3.1, kept true by a test that compares it with the mounted routes).

use std::time::Instant;

use diesel::RunQueryDsl;
use rocket::http::Status;
use rocket::response::content::RawJson;
use rocket::{Route, State};

use crate::api::error::ApiResult;
use crate::api::json::render;
use crate::api::views::{DatabaseHealth, Health};
use crate::db::Db;

pub fn health_routes() -> Vec<Route> {
    rocket::routes![health, openapi]
}

/// 200 when a pooled connection answers `SELECT 1` within the pool timeout, else 503.
#[rocket::get("/health")]
async fn health(db: &State<Db>) -> ApiResult<(Status, RawJson<String>)> {
    let started = Instant::now();
    let answered = db
        .run(|conn| diesel::sql_query("SELECT 1").execute(conn))
        .await;
    let backend = db.backend();
    let version = env!("CARGO_PKG_VERSION");
    match answered {
        Ok(_) => {
            let latency_ms = (started.elapsed().as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0;
            let database = DatabaseHealth {
                status: "connected",
                backend,
                latency_ms: Some(latency_ms),
            };
            let health = Health {
                status: "ok",
                database,
                version,
            };
            Ok((Status::Ok, render(&health)?))
        }
        Err(e) => {
            tracing::warn!(error = %e, "health check: database did not answer");
            let database = DatabaseHealth {
                status: "unavailable",
                backend,
                latency_ms: None,
            };
            let health = Health {
                status: "unavailable",
                database,
                version,
            };
            Ok((Status::ServiceUnavailable, render(&health)?))
        }
    }
}

const OPENAPI: &str = include_str!("openapi.json");

#[rocket::get("/openapi.json")]
fn openapi() -> RawJson<&'static str> {
    RawJson(OPENAPI)
}
