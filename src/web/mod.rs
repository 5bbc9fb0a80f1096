//! The web page at `/`: one HTML file with its CSS and JavaScript inline, embedded in the
//! binary at compile time. It talks only to the JSON API.

use rocket::http::Header;
use rocket::response::content::RawHtml;
use rocket::Route;

/// `GET /`: the page, to mount at `/`.
pub fn routes() -> Vec<Route> {
    rocket::routes![index]
}

const INDEX: &str = include_str!("index.html");

#[derive(rocket::Responder)]
struct Page {
    html: RawHtml<&'static str>,
    csp: Header<'static>,
    frame: Header<'static>,
}

#[rocket::get("/")]
fn index() -> Page {
    Page {
        html: RawHtml(INDEX),
        // Everything is inline in the one file; nothing may load from elsewhere.
        csp: Header::new(
            "Content-Security-Policy",
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
        ),
        frame: Header::new("X-Frame-Options", "DENY"),
    }
}
