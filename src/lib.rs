//! latchkey: database-backed sessions and authentication for Rocket.
//!
//! Data flow: a request's cookie or bearer token → `auth::guard` (token parsed, hashed) →
//! `auth::lookup` (one pooled query joining session and user, shared by the lookups waiting at
//! that moment, run by `db::Db::read_inline` on the async worker when its connection is warm,
//! else off it) → a route in `api` → JSON, with errors in one shape from `api::error`. The
//! worker binary and the admin endpoint share `cleanup`.

pub mod api;
pub mod auth;
pub mod cleanup;
pub mod clock;
pub mod config;
pub mod db;
pub mod metrics;
pub mod web;

use rocket::figment::Figment;
use rocket::{Build, Rocket};

use crate::auth::lookup::SessionLookup;
use crate::config::Settings;
use crate::db::models::SessionPolicy;
use crate::db::Db;
use crate::metrics::Metrics;

/// Managed state: everything a route needs, built once at boot.
pub struct App {
    pub settings: Settings,
    pub db: Db,
    pub lookup: SessionLookup,
    pub policy: SessionPolicy,
    pub metrics: Metrics,
}

/// Connects to the database (stopping with its own message if it can't), applies pending
/// migrations, and assembles the server. `rocket_figment` carries Rocket's own settings.
pub fn build(settings: Settings, rocket_figment: Figment) -> Result<Rocket<Build>, String> {
    let (db, applied) = Db::connect_and_migrate(&settings)?;
    if applied > 0 {
        tracing::info!(
            applied,
            backend = db.backend().as_str(),
            "migrations applied"
        );
    }
    Ok(assemble(settings, db, rocket_figment))
}

pub fn assemble(settings: Settings, db: Db, rocket_figment: Figment) -> Rocket<Build> {
    let hsts = settings.cookie_secure;
    let metrics = Metrics::new();
    let app = App {
        policy: SessionPolicy::from_settings(&settings),
        settings,
        lookup: SessionLookup::new(db.clone(), metrics.lookup_batch.clone()),
        db,
        metrics,
    };
    rocket::custom(rocket_figment)
        .manage(app)
        .mount("/api/auth", api::auth::routes())
        .mount("/api/auth", api::sessions::routes())
        .mount("/api", api::sessions::event_routes())
        .mount("/api/admin", api::admin::routes())
        .mount("/api", api::ops::health_routes())
        .mount("/", api::ops::metrics_routes())
        .mount("/", web::routes())
        .register("/", api::error::catchers())
        .attach(api::ApiHeaders { hsts })
        .attach(metrics::RequestMetrics)
}

/// Logs to stderr; `RUST_LOG` filters (default `info`). Never logs tokens or passwords.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
