//! The web page at `/`: one HTML file with its CSS and JavaScript inline, embedded in the
//! binary at compile time. It talks only to the JSON API.

use rocket::http::Header;
use rocket::response::content::RawHtml;
use rocket::{Route, State};

use crate::config::Settings;
use crate::db::models::MailKind;

/// The page's link in a letter: the token in the fragment (`/#verify=…`, `/#reset=…`), which
/// the page reads. Browsers send fragments neither to servers nor in `Referer`, so the token
/// never reaches a log or another site.
pub fn mail_link(public_url: &str, kind: MailKind, token: &str) -> String {
    let action = match kind {
        MailKind::VerifyEmail => "verify",
        MailKind::PasswordReset => "reset",
    };
    format!("{public_url}/#{action}={token}")
}

/// `GET /` and `GET /login`: the page, and `GET /favicon.ico`; to mount at `/`.
pub fn routes() -> Vec<Route> {
    rocket::routes![index, login, favicon]
}

/// The page's icon (browsers ask for it on every first load; a 404 there is noise).
#[rocket::get("/favicon.ico")]
fn favicon() -> (rocket::http::ContentType, &'static [u8]) {
    (
        rocket::http::ContentType::Icon,
        include_bytes!("favicon.ico"),
    )
}

const INDEX: &str = include_str!("index.html");

#[derive(rocket::Responder)]
struct Page {
    html: RawHtml<String>,
    csp: Header<'static>,
    frame: Header<'static>,
    referrer: Header<'static>,
}

/// The page with the origins it may send a browser back to after sign-in (its own, and
/// `allowed_origins`), for `return_to`.
fn page(settings: &Settings) -> Page {
    let mail = if settings.mail.is_some() { "on" } else { "off" };
    let escape = |text: &str| {
        text.replace('&', "&amp;")
            .replace('"', "&quot;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    };
    let origins = settings
        .allowed_origins
        .iter()
        .map(|o| escape(o))
        .collect::<Vec<_>>()
        .join(" ");
    let meta = format!(r#"<meta name="latchkey-allowed-origins" content="{origins}">"#);
    Page {
        html: RawHtml(
            INDEX
                .replacen("<!--allowed-origins-->", &meta, 1)
                .replacen(
                    "<!--mail-->",
                    &format!(r#"<meta name="latchkey-mail" content="{mail}">"#),
                    1,
                ),
        ),
        // Everything is inline in the one file; nothing may load from elsewhere.
        csp: Header::new(
            "Content-Security-Policy",
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
        ),
        frame: Header::new("X-Frame-Options", "DENY"),
        // A reset link's token is in the fragment, which browsers never put in `Referer`;
        // nothing from this page's address goes to another site anyway.
        referrer: Header::new("Referrer-Policy", "no-referrer"),
    }
}

#[rocket::get("/")]
fn index(settings: &State<Settings>) -> Page {
    page(settings)
}

/// The same page at `/login`, for `login_url` when latchkey shares a host with the
/// application behind a proxy (which keeps its own `/`).
#[rocket::get("/login")]
fn login(settings: &State<Settings>) -> Page {
    page(settings)
}
