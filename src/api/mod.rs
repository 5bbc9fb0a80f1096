//! The HTTP API: routes per area, the error type and catchers, the JSON body guard, and the
//! headers every API response carries.

pub mod admin;
pub mod auth;
pub mod error;
pub mod json;
pub mod ops;
pub mod sessions;
pub mod views;

use rocket::fairing::{Fairing, Info, Kind};
use rocket::http::Header;
use rocket::{Request, Response};

/// `Cache-Control: no-store` on every API response (they carry session data or errors about
/// it), and HSTS when cookies are marked `Secure` (the site is served over HTTPS).
pub struct ApiHeaders {
    pub hsts: bool,
}

#[rocket::async_trait]
impl Fairing for ApiHeaders {
    fn info(&self) -> Info {
        Info {
            name: "API response headers",
            kind: Kind::Response,
        }
    }

    async fn on_response<'r>(&self, req: &'r Request<'_>, res: &mut Response<'r>) {
        if req.uri().path().starts_with("/api/") {
            res.set_header(Header::new("Cache-Control", "no-store"));
        }
        res.set_header(Header::new("X-Content-Type-Options", "nosniff"));
        if self.hsts {
            res.set_header(Header::new("Strict-Transport-Security", "max-age=31536000"));
        }
    }
}
