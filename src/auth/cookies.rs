//! The one place that knows the session cookie: its name and attributes come from the settings,
//! its `Max-Age` from the session's remaining life.

use chrono::NaiveDateTime;
use rocket::http::{Cookie, CookieJar, SameSite as CookieSameSite};
use rocket::time::{Duration, OffsetDateTime};

use crate::auth::token::SessionToken;
use crate::config::{SameSite, Settings};
use crate::db::models::Session;

fn same_site(settings: &Settings) -> CookieSameSite {
    match settings.cookie_same_site {
        SameSite::Lax => CookieSameSite::Lax,
        SameSite::Strict => CookieSameSite::Strict,
    }
}

/// Sends the session cookie, valid for exactly as long as the session is.
pub fn set_session(
    jar: &CookieJar<'_>,
    settings: &Settings,
    token: &SessionToken,
    session: &Session,
    now: NaiveDateTime,
) {
    let cookie = Cookie::build((settings.cookie_name.clone(), token.expose()))
        .http_only(true)
        .path("/")
        .secure(settings.cookie_secure)
        .same_site(same_site(settings))
        .max_age(Duration::seconds(session.remaining(now).num_seconds()));
    jar.add(cookie);
}

/// Tells the browser to drop the session cookie (same attributes, so it matches).
pub fn clear_session(jar: &CookieJar<'_>, settings: &Settings) {
    let cookie = Cookie::build((settings.cookie_name.clone(), ""))
        .http_only(true)
        .path("/")
        .secure(settings.cookie_secure)
        .same_site(same_site(settings))
        .max_age(Duration::ZERO)
        .expires(OffsetDateTime::UNIX_EPOCH);
    jar.add(cookie);
}

/// The raw session cookie value, if the request has one.
pub fn session_cookie(jar: &CookieJar<'_>, settings: &Settings) -> Option<String> {
    jar.get(&settings.cookie_name)
        .map(|c| c.value().to_string())
}
