//! The `latchkey` server: Rocket with the [`Latchkey`] fairing, plus the opt-in pieces an
//! application may also mount (the page at `/`, `/metrics` and request metrics), the JSON
//! error shape for every path, and the site-wide headers. The binary and the tests both build
//! it here; there is no other way the server is assembled.

use std::time::Instant;

use rocket::fairing::{AdHoc, Fairing, Info, Kind};
use rocket::figment::Figment;
use rocket::http::Header;
use rocket::shield::{Frame, Shield};
use rocket::{Build, Data, Request, Response, Rocket};

use crate::config::Settings;
use crate::metrics::RequestStart;
use crate::{api, metrics, web, Latchkey};

/// The whole server with configuration from `figment` (see [`crate::config::figment`]).
pub fn rocket(figment: Figment, latchkey: Latchkey) -> Rocket<Build> {
    rocket::custom(figment)
        .attach(latchkey)
        .attach(metrics::RequestMetrics)
        .attach(AccessLog)
        .attach(SiteHeaders)
        // Rocket's default Shield without its `X-Frame-Options`: the page sends a stricter
        // one (DENY) itself, and the API's answers are not pages.
        .attach(Shield::default().disable::<Frame>())
        .attach(AdHoc::on_liftoff("listening", |rocket| {
            Box::pin(async move {
                let config = rocket.config();
                tracing::info!(
                    address = %config.address,
                    port = config.port,
                    workers = config.workers,
                    "latchkey is serving"
                );
            })
        }))
        .attach(AdHoc::on_shutdown("stopping", |_| {
            Box::pin(
                async move { tracing::info!("latchkey is stopping: finishing requests in flight") },
            )
        }))
        .mount("/", web::routes())
        .mount("/", metrics::routes())
        // The API's catchers are registered under `/api` by the fairing; the server is all
        // latchkey, so every other path answers in the same JSON shape too.
        .register("/", api::error::catchers())
}

/// Headers for every response of the standalone server (an application that embeds latchkey
/// sets its own): HSTS when cookies are `Secure` (the site is served over HTTPS). `nosniff`
/// comes from Rocket's Shield.
struct SiteHeaders;

#[rocket::async_trait]
impl Fairing for SiteHeaders {
    fn info(&self) -> Info {
        Info {
            name: "latchkey site headers",
            kind: Kind::Response,
        }
    }

    async fn on_response<'r>(&self, req: &'r Request<'_>, res: &mut Response<'r>) {
        if req
            .rocket()
            .state::<Settings>()
            .is_some_and(|s| s.cookie_secure)
        {
            res.set_header(Header::new("Strict-Transport-Security", "max-age=31536000"));
        }
    }
}

/// One line per request, as `latchkey::access` at `info`: method, path (never the query
/// string, where a pasted token could be), the matched route, status and duration. Nothing
/// from headers or bodies. `RUST_LOG=info,latchkey::access=off` turns it off.
pub struct AccessLog;

#[rocket::async_trait]
impl Fairing for AccessLog {
    fn info(&self) -> Info {
        Info {
            name: "access log",
            kind: Kind::Request | Kind::Response,
        }
    }

    async fn on_request(&self, req: &mut Request<'_>, _: &mut Data<'_>) {
        req.local_cache(|| RequestStart(Instant::now()));
    }

    async fn on_response<'r>(&self, req: &'r Request<'_>, res: &mut Response<'r>) {
        if !tracing::enabled!(target: "latchkey::access", tracing::Level::INFO) {
            return;
        }
        let started = req.local_cache(|| RequestStart(Instant::now())).0;

        tracing::info!(
            target: "latchkey::access",
            method = req.method().as_str(),
            path = req.uri().path().as_str(),
            route = req.route().map_or("-", |r| r.uri.as_str()),
            status = res.status().code,
            duration_ms = (started.elapsed().as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0,
            "request"
        );
    }
}
