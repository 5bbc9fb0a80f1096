//! CORS for browser applications on another origin listed in `allowed_origins`: their
//! preflights are answered, and every API answer to them names them (the fairing adds those
//! headers, see `fairing.rs`). Any other origin gets no CORS headers at all.

use rocket::http::{Header, Status};
use rocket::request::{FromRequest, Outcome, Request};
use rocket::Route;

use crate::api::error::ApiError;
use crate::auth::Authenticator;

pub fn routes() -> Vec<Route> {
    rocket::routes![preflight]
}

/// What the API accepts from another origin (the methods its routes use, the headers its
/// requests need).
pub const ALLOW_METHODS: &str = "GET, POST, PUT, PATCH, DELETE";
pub const ALLOW_HEADERS: &str = "Content-Type, Authorization";
/// How long a browser may cache a preflight's answer (seconds).
pub const MAX_AGE: &str = "600";

/// A preflight from a listed origin.
pub struct ListedOrigin;

#[rocket::async_trait]
impl<'r> FromRequest<'r> for ListedOrigin {
    type Error = ();

    async fn from_request(req: &'r Request<'_>) -> Outcome<Self, ()> {
        let listed = match (req.headers().get_one("Origin"), Authenticator::of(req)) {
            (Some(origin), Ok(auth)) => auth.cross_site.allows_origin(origin),
            _ => false,
        };
        if listed {
            Outcome::Success(ListedOrigin)
        } else {
            Outcome::Forward(Status::NotFound)
        }
    }
}

#[derive(rocket::Responder)]
#[response(status = 204)]
struct Preflight {
    body: (),
    methods: Header<'static>,
    headers: Header<'static>,
    max_age: Header<'static>,
}

#[rocket::options("/<_..>")]
fn preflight(origin: Option<ListedOrigin>) -> Result<Preflight, ApiError> {
    match origin {
        Some(ListedOrigin) => Ok(Preflight {
            body: (),
            methods: Header::new("Access-Control-Allow-Methods", ALLOW_METHODS),
            headers: Header::new("Access-Control-Allow-Headers", ALLOW_HEADERS),
            max_age: Header::new("Access-Control-Max-Age", MAX_AGE),
        }),
        None => Err(ApiError::not_found()),
    }
}
