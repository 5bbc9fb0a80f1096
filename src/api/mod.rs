//! The HTTP API of the contract: routes per area, the error type and its catchers, and the
//! JSON body guard. [`mount`] puts it all under one base (`/api`).

pub mod admin;
pub mod auth;
pub mod cors;
pub mod email;
pub mod error;
pub mod json;
pub mod mfa;
pub mod oidc;
pub mod ops;
pub mod sessions;
pub mod verify;
pub mod views;

use rocket::{Build, Rocket};

/// Mounts every API route under `base` and registers the API's catchers there (and only
/// there: the application keeps its own everywhere else).
pub fn mount(rocket: Rocket<Build>, base: &str) -> Rocket<Build> {
    rocket
        .mount(format!("{base}/auth"), auth::routes())
        .mount(format!("{base}/auth"), sessions::routes())
        .mount(format!("{base}/auth"), verify::routes())
        .mount(format!("{base}/auth"), email::routes())
        .mount(format!("{base}/auth"), mfa::routes())
        .mount(format!("{base}/auth"), oidc::routes())
        .mount(base, sessions::event_routes())
        .mount(format!("{base}/admin"), admin::routes())
        .mount(base, ops::health_routes())
        .mount(base, cors::routes())
        .register(base, error::catchers())
}
