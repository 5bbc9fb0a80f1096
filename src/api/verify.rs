//! `/api/auth/verify`: forward auth for nginx `auth_request`, Caddy `forward_auth`, Traefik
//! ForwardAuth, or anything that asks "who is this request?". Every method answers the same.
//! Signed in: 200 with `X-Latchkey-User-Id`, `-User-Email`, `-User-Role`, `-Session-Id` and
//! `-User-Email-Verified` (and `Set-Cookie` when the session was extended); the body is empty
//! unless the caller accepts JSON. Not signed in: 401, or a 302 to `login_url` for a browser. The cross-site
//! check applies to the original request, described by the forwarding headers.

use std::io::Cursor;

use rocket::http::{Header, Status};
use rocket::request::{FromRequest, Outcome, Request};
use rocket::response::{self, Responder, Response};
use rocket::Route;

use crate::api::auth::AuthBody;
use crate::api::error::ApiError;
use crate::auth::{AuthError, Authenticator, CurrentSession};
use crate::config::Settings;

pub fn routes() -> Vec<Route> {
    rocket::routes![
        verify_get,
        verify_post,
        verify_put,
        verify_patch,
        verify_delete
    ]
}

/// The answer about the request a proxy forwarded.
pub struct Verdict(Result<CurrentSession, AuthError>);

#[rocket::async_trait]
impl<'r> FromRequest<'r> for Verdict {
    type Error = ();

    async fn from_request(req: &'r Request<'_>) -> Outcome<Self, ()> {
        let result = match Authenticator::of(req) {
            Ok(auth) => auth.authenticate_forwarded(req).await,
            Err(e) => Err(e),
        };
        Outcome::Success(Verdict(result))
    }
}

#[rocket::get("/verify")]
fn verify_get(verdict: Verdict) -> Verdict {
    verdict
}

#[rocket::post("/verify")]
fn verify_post(verdict: Verdict) -> Verdict {
    verdict
}

#[rocket::put("/verify")]
fn verify_put(verdict: Verdict) -> Verdict {
    verdict
}

#[rocket::patch("/verify")]
fn verify_patch(verdict: Verdict) -> Verdict {
    verdict
}

#[rocket::delete("/verify")]
fn verify_delete(verdict: Verdict) -> Verdict {
    verdict
}

fn accepts(req: &Request<'_>, media: &str) -> bool {
    req.headers()
        .get("Accept")
        .any(|accept| accept.to_ascii_lowercase().contains(media))
}

/// A header value for any text: bytes outside printable ASCII are percent-encoded (an email's
/// local part may be Unicode; a header may not).
fn header_safe(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if (0x21..0x7f).contains(&byte) && byte != b'%' {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn encode_component(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The URL the browser asked the proxy for: `X-Original-URL`, else rebuilt from
/// `X-Forwarded-Proto`, `-Host` and `-Uri`.
fn original_url(req: &Request<'_>) -> Option<String> {
    let headers = req.headers();
    if let Some(url) = headers.get_one("X-Original-URL") {
        return Some(url.trim().to_string());
    }
    let host = headers
        .get_one("X-Forwarded-Host")
        .or_else(|| headers.get_one("Host"))?;
    let proto = headers.get_one("X-Forwarded-Proto").unwrap_or("http");
    let uri = headers.get_one("X-Forwarded-Uri").unwrap_or("/");
    Some(format!("{}://{}{}", proto.trim(), host.trim(), uri.trim()))
}

fn login_redirect(req: &Request<'_>, login_url: &str) -> String {
    match original_url(req) {
        Some(url) => {
            let joiner = if login_url.contains('?') { '&' } else { '?' };
            format!("{login_url}{joiner}return_to={}", encode_component(&url))
        }
        None => login_url.to_string(),
    }
}

impl<'r> Responder<'r, 'static> for Verdict {
    fn respond_to(self, req: &'r Request<'_>) -> response::Result<'static> {
        let current = match self.0 {
            Ok(current) => current,
            Err(AuthError::Unauthenticated { stale_cookie }) => {
                let login_url = req
                    .rocket()
                    .state::<Settings>()
                    .and_then(|s| s.login_url.as_deref());
                match login_url {
                    Some(login_url) if accepts(req, "text/html") => {
                        if stale_cookie {
                            if let Some(auth) = req.rocket().state::<Authenticator>() {
                                auth.cookie.clear(req.cookies());
                            }
                        }
                        return Response::build()
                            .status(Status::Found)
                            .header(Header::new("Location", login_redirect(req, login_url)))
                            .ok();
                    }
                    _ => {
                        let error = AuthError::Unauthenticated { stale_cookie };
                        return ApiError::from(error).respond_to(req);
                    }
                }
            }
            Err(error) => return ApiError::from(error).respond_to(req),
        };
        let verified = current.user.email_verified_at.is_some();
        // A session made before `require_verified_email` was turned on: the application behind
        // the proxy gets no unconfirmed user either.
        if !verified
            && req
                .rocket()
                .state::<Settings>()
                .is_some_and(|s| s.require_verified_email)
        {
            return ApiError::email_unverified().respond_to(req);
        }
        let mut response = Response::build();
        response
            .status(Status::Ok)
            .header(Header::new(
                "X-Latchkey-User-Id",
                current.user.id.to_string(),
            ))
            .header(Header::new(
                "X-Latchkey-User-Email",
                header_safe(&current.user.email),
            ))
            .header(Header::new(
                "X-Latchkey-User-Role",
                current.user.role.as_str(),
            ))
            .header(Header::new(
                "X-Latchkey-Session-Id",
                current.session.id.to_string(),
            ))
            .header(Header::new(
                "X-Latchkey-User-Email-Verified",
                if verified { "true" } else { "false" },
            ));
        if accepts(req, "application/json") {
            let body = serde_json::to_string(&AuthBody::new(&current.user, &current.session))
                .unwrap_or_default();
            response
                .header(rocket::http::ContentType::JSON)
                .sized_body(body.len(), Cursor::new(body));
        }
        response.ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings() {
        assert_eq!(header_safe("ann@example.com"), "ann@example.com");
        assert_eq!(header_safe("jörg@x.de"), "j%C3%B6rg@x.de");
        assert_eq!(
            encode_component("https://app.example/a?b=c&d"),
            "https%3A%2F%2Fapp.example%2Fa%3Fb%3Dc%26d"
        );
    }
}
