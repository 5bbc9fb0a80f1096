//! The `latchkey` server: Rocket with the [`Latchkey`] fairing, plus the opt-in pieces an
//! application may also mount (the page at `/`, `/metrics` and request metrics), the JSON
//! error shape for every path, and the site-wide headers. The binary and the tests both build
//! it here; there is no other way the server is assembled.

use rocket::fairing::{AdHoc, Fairing, Info, Kind};
use rocket::figment::Figment;
use rocket::http::Header;
use rocket::{Build, Request, Response, Rocket};

use crate::config::Settings;
use crate::{api, metrics, web, Latchkey};

/// The whole server with configuration from `figment` (see [`crate::config::figment`]).
pub fn rocket(figment: Figment, latchkey: Latchkey) -> Rocket<Build> {
    rocket::custom(figment)
        .attach(latchkey)
        .attach(metrics::RequestMetrics)
        .attach(SiteHeaders)
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
        .mount("/", web::routes())
        .mount("/", metrics::routes())
        // The API's catchers are registered under `/api` by the fairing; the server is all
        // latchkey, so every other path answers in the same JSON shape too.
        .register("/", api::error::catchers())
}

/// Headers for every response of the standalone server (an application that embeds latchkey
/// sets its own): `nosniff`, and HSTS when cookies are `Secure` (the site is served over
/// HTTPS).
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
        res.set_header(Header::new("X-Content-Type-Options", "nosniff"));
        if req
            .rocket()
            .state::<Settings>()
            .is_some_and(|s| s.cookie_secure)
        {
            res.set_header(Header::new("Strict-Transport-Security", "max-age=31536000"));
        }
    }
}
