//! latchkey: database-backed sessions and authentication for Rocket.
//!
//! Sessions live in PostgreSQL or SQLite (chosen by `DATABASE_URL`), survive restarts, are
//! shared by every instance, expire on time and can be listed and revoked per device. This
//! crate is both the `latchkey` server and a library a Rocket application attaches to protect
//! its own routes:
//!
//! ```no_run
//! use latchkey::{CurrentSession, Latchkey};
//!
//! #[rocket::get("/dashboard")]
//! fn dashboard(me: CurrentSession) -> String {
//!     format!("{} {}", me.user.id, me.user.email)
//! }
//!
//! #[rocket::launch]
//! fn rocket() -> _ {
//!     rocket::build()
//!         .attach(Latchkey::fairing())
//!         .mount("/", rocket::routes![dashboard])
//! }
//! ```
//!
//! [`Latchkey::fairing`] reads the configuration (the keys of docs/configuration.md) from the
//! application's Figment, connects and applies migrations at ignite (a launch that cannot
//! fails with one line naming the problem), and mounts the JSON API under `/api`. The
//! application keeps its own `/`, catchers and headers. The web page ([`web::routes`]) and
//! `/metrics` ([`metrics::routes`], [`metrics::RequestMetrics`]) are opt-in; the `latchkey`
//! server binary is [`server::rocket`]: the fairing plus those pieces.
//!
//! In the application's routes:
//! - [`CurrentSession`]: the signed-in user and session. 401 with no or a bad credential, 503
//!   when the database cannot answer. `Option<CurrentSession>` or
//!   `Result<CurrentSession, AuthError>` give the route the reason instead. An unsafe request
//!   authenticated by cookie passes the cross-site check first, whatever the path.
//! - [`AdminUser`]: the same, for the admin role only (403 otherwise).
//! - `&State<latchkey::Db>`: [`Db::run`] runs the application's own Diesel queries on
//!   latchkey's pool, off the async workers, with the same bounded wait (503 past
//!   `pool_timeout_ms`).
//!
//! Layers, each knowing only those below it: `config` → `db` (the one place that knows the
//! backend) → `auth` (tokens, guards, the shared lookup, the cross-site check) → `api` and
//! `web` (routes) → `fairing` and `server`; the worker binary uses `config`, `db` and
//! `cleanup`.

// The layers below are public for the binaries and the integration tests; an application uses
// the items re-exported here and the documented modules (`config`, `web`, `metrics`,
// `server`, `clock`).
#[doc(hidden)]
pub mod api;
#[doc(hidden)]
pub mod auth;
#[doc(hidden)]
pub mod cleanup;
#[doc(hidden)]
#[doc(hidden)]
pub mod cli;
pub mod clock;
pub mod config;
#[doc(hidden)]
pub mod db;
pub mod domain;
mod fairing;
#[doc(hidden)]
pub mod mail;
pub mod metrics;
pub mod server;
#[doc(hidden)]
pub mod signin;
#[doc(hidden)]
pub mod token;
#[doc(hidden)]
pub mod validation;
pub mod web;

pub use auth::{AdminUser, AuthError, CurrentSession, SignedIn, Via};
pub use db::models::{Session, User};
pub use db::{Db, DbConnection, DbError};
pub use domain::{Role, SessionId, UserId};
pub use fairing::{BootError, BootWatch, Latchkey, API_BASE};

/// The log stream of both binaries: stderr, one line per event, filtered by `RUST_LOG`
/// (default `info`), coloured only when stderr is a terminal, as JSON objects with
/// `log_format = "json"`. Lines are written by a background thread (an access line per request
/// must not cost the request a write to stderr); the returned guard flushes them when dropped.
/// Never logs tokens or passwords.
pub fn init_tracing(
    format: config::LogFormat,
) -> Option<tracing_appender::non_blocking::WorkerGuard> {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        // Buffered: the writer thread drains every line waiting and then flushes, so under
        // load many lines go out in one write instead of one system call each.
        .finish(std::io::BufWriter::with_capacity(
            64 * 1024,
            std::io::stderr(),
        ));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    let installed = match format {
        config::LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        config::LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
    installed.ok().map(|_| guard)
}
