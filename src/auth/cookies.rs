//! The one place that knows the session cookie: its name and attributes come from the
//! configuration, its `Max-Age` from the session's remaining life.

use chrono::NaiveDateTime;
use rocket::http::{Cookie, CookieJar, SameSite as CookieSameSite};
use rocket::time::{Duration, OffsetDateTime};

use crate::config::{SameSite, Settings};
use crate::db::models::Session;
use crate::token::Token;

/// How long a provider sign-in may take, from the start to the callback (or to the second
/// factor's code after it).
pub const FLOW_COOKIE_SECONDS: i64 = 600;

/// The session cookie's name and attributes.
#[derive(Debug, Clone)]
pub struct SessionCookie {
    name: String,
    secure: bool,
    same_site: SameSite,
}

impl SessionCookie {
    pub fn from_settings(settings: &Settings) -> SessionCookie {
        SessionCookie {
            name: settings.cookie_name.clone(),
            secure: settings.cookie_secure,
            same_site: settings.cookie_same_site,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn build(&self, value: String) -> Cookie<'static> {
        Cookie::build((self.name.clone(), value))
            .http_only(true)
            .path("/")
            .secure(self.secure)
            .same_site(match self.same_site {
                SameSite::Lax => CookieSameSite::Lax,
                SameSite::Strict => CookieSameSite::Strict,
            })
            .build()
    }

    /// Sends the session cookie, valid for exactly as long as the session is.
    pub fn set(&self, jar: &CookieJar<'_>, token: &Token, session: &Session, now: NaiveDateTime) {
        let mut cookie = self.build(token.expose());
        cookie.set_max_age(Duration::seconds(session.remaining(now).num_seconds()));
        jar.add(cookie);
    }

    /// A cookie that tells the browser to drop the session cookie (same attributes, so it
    /// matches).
    pub fn removal(&self) -> Cookie<'static> {
        let mut cookie = self.build(String::new());
        cookie.set_max_age(Duration::ZERO);
        cookie.set_expires(OffsetDateTime::UNIX_EPOCH);
        cookie
    }

    pub fn clear(&self, jar: &CookieJar<'_>) {
        jar.add(self.removal());
    }

    /// The cookie that binds a provider sign-in to the browser that started it (its value is
    /// the `state` sent to the provider): HttpOnly, ten minutes, and always `SameSite=Lax`,
    /// because it must come back with the provider's redirect, a cross-site navigation. Named
    /// after the session cookie (`{name}_oidc`), so a `__Host-` prefix carries over.
    pub fn set_flow(&self, jar: &CookieJar<'_>, state: &str) {
        let mut cookie = self.build(state.to_string());
        cookie.set_name(self.flow_name());
        cookie.set_same_site(CookieSameSite::Lax);
        cookie.set_max_age(Duration::seconds(FLOW_COOKIE_SECONDS));
        jar.add(cookie);
    }

    /// The flow cookie's value, if the request has one.
    pub fn read_flow(&self, jar: &CookieJar<'_>) -> Option<String> {
        jar.get(&self.flow_name()).map(|c| c.value().to_string())
    }

    /// Drops the flow cookie (a callback uses it once).
    pub fn clear_flow(&self, jar: &CookieJar<'_>) {
        let mut cookie = self.removal();
        cookie.set_name(self.flow_name());
        cookie.set_same_site(CookieSameSite::Lax);
        jar.add(cookie);
    }

    fn flow_name(&self) -> String {
        format!("{}_oidc", self.name)
    }

    /// The raw session cookie value, if the request has one.
    pub fn read(&self, jar: &CookieJar<'_>) -> Option<String> {
        jar.get(&self.name).map(|c| c.value().to_string())
    }
}
