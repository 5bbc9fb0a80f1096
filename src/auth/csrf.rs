//! The one cross-site check. A browser names the page that sent a request in `Origin` (and
//! `Sec-Fetch-Site`); an unsafe request from another site is refused unless it carries an
//! `Authorization` header, which browsers never add on their own.
//!
//! It does not look at the path: it runs wherever it is asked, which is for every request
//! that reaches latchkey's own API with a body or a credential, and for every unsafe request a
//! guard authenticates by cookie, in any route of the host application. A path spelled
//! `//api/…` or `/api/%61uth/…` reaches the same route and so gets the same check.

use rocket::http::Method;
use rocket::Request;

use crate::auth::AuthError;
use crate::config::Settings;

/// Origins other than the request's own host that may send unsafe requests by cookie.
#[derive(Debug, Clone, Default)]
pub struct CrossSiteCheck {
    allowed_origins: Vec<String>,
    /// `cookie_secure`: the site is served over HTTPS, so a page of this host over plain HTTP
    /// (which anyone on the network path can write) is another site. Loopback hosts excepted:
    /// browsers count `http://localhost` as secure.
    https_only: bool,
}

/// Methods that change nothing and need no check.
pub fn is_safe(method: Method) -> bool {
    matches!(method, Method::Get | Method::Head | Method::Options)
}

impl CrossSiteCheck {
    pub fn from_settings(settings: &Settings) -> CrossSiteCheck {
        CrossSiteCheck {
            allowed_origins: settings.allowed_origins.clone(),
            https_only: settings.cookie_secure,
        }
    }

    /// Whether `origin` (as a browser writes it, `scheme://host[:port]`) is one of
    /// `allowed_origins`.
    pub fn allows_origin(&self, origin: &str) -> bool {
        self.allowed_origins.contains(&normalize_origin(origin))
    }

    pub fn check(&self, req: &Request<'_>) -> Result<(), AuthError> {
        if is_safe(req.method()) {
            return Ok(());
        }
        // Rocket turns `POST` with a form body starting `_method=delete` into DELETE before any
        // guard runs. latchkey's API takes JSON only and never honours that override: a form
        // is what a hostile page can send without a preflight.
        if req.method() != Method::Post && req.content_type().is_some_and(|ct| ct.is_form()) {
            return Err(AuthError::MethodOverride);
        }
        let headers = req.headers();
        if headers.contains("Authorization") {
            return Ok(());
        }
        self.check_origin(
            headers.get_one("Origin"),
            headers.get_one("Sec-Fetch-Site"),
            headers.get_one("Host"),
        )
    }

    /// The check for the request a reverse proxy asks about (forward auth): its method from
    /// `X-Forwarded-Method` or `X-Original-Method`, its host from `X-Forwarded-Host` (else
    /// `Host`), and the `Origin` and `Sec-Fetch-Site` the proxy passed along.
    pub fn check_forwarded(&self, req: &Request<'_>) -> Result<(), AuthError> {
        let headers = req.headers();
        let method = headers
            .get_one("X-Forwarded-Method")
            .or_else(|| headers.get_one("X-Original-Method"))
            .map(|m| m.trim().to_ascii_uppercase());
        let safe = match method.as_deref() {
            Some(m) => matches!(m, "GET" | "HEAD" | "OPTIONS"),
            None => is_safe(req.method()),
        };
        if safe || headers.contains("Authorization") {
            return Ok(());
        }
        let host = headers
            .get_one("X-Forwarded-Host")
            .or_else(|| headers.get_one("Host"));
        self.check_origin(
            headers.get_one("Origin"),
            headers.get_one("Sec-Fetch-Site"),
            host,
        )
    }

    /// The check itself on the three headers that decide it (also used for the request a
    /// reverse proxy asks about).
    pub fn check_origin(
        &self,
        origin: Option<&str>,
        fetch_site: Option<&str>,
        host: Option<&str>,
    ) -> Result<(), AuthError> {
        if fetch_site.is_some_and(|site| site.trim().eq_ignore_ascii_case("cross-site")) {
            return Err(AuthError::CrossSite);
        }
        let Some(origin) = origin else {
            return Ok(());
        };
        let origin = normalize_origin(origin);
        if self.allowed_origins.contains(&origin) {
            return Ok(());
        }
        let host = host.map(|h| h.trim().to_ascii_lowercase());
        match (origin_authority(&origin), host) {
            (Some(authority), Some(host)) if same_authority(&authority, &host) => {
                if self.https_only && origin.starts_with("http://") && !is_loopback(&authority) {
                    return Err(AuthError::CrossSite);
                }
                Ok(())
            }
            _ => Err(AuthError::CrossSite),
        }
    }
}

/// `localhost`, `127.0.0.1` (any 127/8 address) or `[::1]`, with or without a port.
fn is_loopback(authority: &str) -> bool {
    let host = match authority.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => authority.split(':').next().unwrap_or(""),
    };
    host == "localhost"
        || host.ends_with(".localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn normalize_origin(origin: &str) -> String {
    origin.trim().trim_end_matches('/').to_ascii_lowercase()
}

/// `https://example.com:8443` → `example.com:8443`, with the scheme's default port dropped.
/// `null` and anything that is not scheme://authority give `None` (refused).
fn origin_authority(origin: &str) -> Option<String> {
    let (scheme, rest) = origin.split_once("://")?;
    if rest.is_empty() || rest.contains('/') {
        return None;
    }
    let default_port = match scheme {
        "http" => ":80",
        "https" => ":443",
        _ => return None,
    };
    Some(rest.strip_suffix(default_port).unwrap_or(rest).to_string())
}

fn same_authority(origin: &str, host: &str) -> bool {
    let host = host
        .strip_suffix(":80")
        .or_else(|| host.strip_suffix(":443"))
        .unwrap_or(host);
    origin == host
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorities() {
        assert_eq!(
            origin_authority("http://a.example:8000").as_deref(),
            Some("a.example:8000")
        );
        assert_eq!(
            origin_authority("https://a.example:443").as_deref(),
            Some("a.example")
        );
        assert_eq!(origin_authority("null"), None);
        assert_eq!(origin_authority("http://a.example/path"), None);
        assert!(same_authority("a.example", "a.example:80"));
        assert!(!same_authority("evil.example", "a.example"));
        assert!(!same_authority("a.example:8001", "a.example:8000"));
    }

    #[test]
    fn origins() {
        let check = CrossSiteCheck {
            allowed_origins: vec!["https://app.example".into()],
            https_only: false,
        };
        let host = Some("auth.example");
        assert!(check.check_origin(None, None, host).is_ok());
        assert!(check
            .check_origin(Some("https://auth.example"), None, host)
            .is_ok());
        assert!(check
            .check_origin(Some("https://APP.example/"), None, host)
            .is_ok());
        assert_eq!(
            check.check_origin(Some("https://evil.example"), None, host),
            Err(AuthError::CrossSite)
        );
        assert_eq!(
            check.check_origin(None, Some("cross-site"), host),
            Err(AuthError::CrossSite)
        );
        assert_eq!(
            check.check_origin(Some("null"), None, host),
            Err(AuthError::CrossSite)
        );
    }

    #[test]
    fn the_origin_scheme_counts_when_the_site_is_https() {
        let check = CrossSiteCheck {
            allowed_origins: Vec::new(),
            https_only: true,
        };
        let host = Some("auth.example");
        assert!(check
            .check_origin(Some("https://auth.example"), None, host)
            .is_ok());
        // A plain-HTTP page of the same host: written by anyone on the network path.
        assert_eq!(
            check.check_origin(Some("http://auth.example"), None, host),
            Err(AuthError::CrossSite)
        );
        // Loopback is a secure context to browsers.
        for (origin, host) in [
            ("http://127.0.0.1:8000", "127.0.0.1:8000"),
            ("http://localhost:8000", "localhost:8000"),
            ("http://[::1]:8000", "[::1]:8000"),
        ] {
            assert!(
                check.check_origin(Some(origin), None, Some(host)).is_ok(),
                "{origin}"
            );
        }
        let plain = CrossSiteCheck::default();
        assert!(plain
            .check_origin(Some("http://auth.example"), None, host)
            .is_ok());
    }
}
