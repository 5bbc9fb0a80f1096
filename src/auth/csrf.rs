//! Cross-site request protection for unsafe methods under `/api/`: a browser names the page
//! that sent a request in `Origin` (and `Sec-Fetch-Site`); a request from another site is
//! refused unless it carries an `Authorization` header, which browsers never add on their own.

use rocket::http::Method;
use rocket::Request;

use crate::api::error::ApiError;
use crate::config::Settings;

pub fn check(req: &Request<'_>, settings: &Settings) -> Result<(), ApiError> {
    if matches!(req.method(), Method::Get | Method::Head | Method::Options) {
        return Ok(());
    }
    if !req.uri().path().starts_with("/api/") {
        return Ok(());
    }
    let headers = req.headers();
    if headers.contains("Authorization") {
        return Ok(());
    }
    if headers
        .get_one("Sec-Fetch-Site")
        .is_some_and(|site| site.eq_ignore_ascii_case("cross-site"))
    {
        return Err(ApiError::csrf_rejected());
    }
    let Some(origin) = headers.get_one("Origin") else {
        return Ok(());
    };
    let origin = origin.trim().trim_end_matches('/').to_ascii_lowercase();
    if settings.allowed_origins.contains(&origin) {
        return Ok(());
    }
    let host = headers
        .get_one("Host")
        .map(|h| h.trim().to_ascii_lowercase());
    match (origin_authority(&origin), host) {
        (Some(authority), Some(host)) if same_authority(&authority, &host) => Ok(()),
        _ => Err(ApiError::csrf_rejected()),
    }
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
}
