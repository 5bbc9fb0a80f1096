//! `JsonBody<T>`: the one way request bodies are read. Cross-site check first, then
//! `application/json` (415), at most 16 KiB (413), valid JSON of the right shape (400).

use rocket::data::{self, Data, FromData, ToByteUnit};
use rocket::request::Request;
use rocket::response::content::RawJson;
use rocket::tokio::io::AsyncReadExt;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::api::error::ApiError;
use crate::auth::Authenticator;

/// The contract's limit for request bodies.
pub const BODY_LIMIT_BYTES: usize = 16 * 1024;
/// How much of an oversized body is read and discarded before answering 413.
const DRAIN_LIMIT_KIB: u64 = 1024;

pub struct JsonBody<T>(pub T);

async fn read<T: DeserializeOwned>(req: &Request<'_>, data: Data<'_>) -> Result<T, ApiError> {
    Authenticator::of(req)?.cross_site.check(req)?;
    if !req.content_type().is_some_and(|ct| ct.is_json()) {
        return Err(ApiError::unsupported_media_type());
    }
    // Read up to the limit, then drain (without keeping) up to DRAIN_LIMIT more: a server that
    // answers 413 and closes with unread data makes the client's TCP stack reset the
    // connection, and the client may never see the answer.
    let mut stream = data.open(DRAIN_LIMIT_KIB.kibibytes());
    let mut body = Vec::new();
    let mut chunk = [0u8; 8192];
    let mut too_large = false;
    loop {
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|_| ApiError::bad_request("The request body could not be read."))?;
        if n == 0 {
            break;
        }
        if body.len() + n > BODY_LIMIT_BYTES {
            too_large = true;
        } else if !too_large {
            body.extend_from_slice(&chunk[..n]);
        }
    }
    if too_large {
        return Err(ApiError::payload_too_large());
    }
    // JSON is UTF-8 throughout. serde_json checks only the strings it keeps, so without this a
    // field the route ignores could carry any bytes.
    let body = std::str::from_utf8(&body)
        .map_err(|_| ApiError::bad_request("The request body is not valid JSON (not UTF-8)."))?;
    serde_json::from_str(body).map_err(|e| {
        use serde_json::error::Category;
        match e.classify() {
            Category::Data => ApiError::bad_request(format!(
                "The JSON body has the wrong shape: {}.",
                shape_problem(&e)
            )),
            _ => ApiError::bad_request("The request body is not valid JSON."),
        }
    })
}

/// serde's description of a shape error without Rust's names for our types (`expected struct
/// LoginBody` says nothing to a client and tells an attacker what we are written in).
fn shape_problem(e: &serde_json::Error) -> String {
    let text = e.to_string();
    let text = text.split(" at line ").next().unwrap_or(&text);
    match text.find("expected struct ") {
        Some(at) => format!("{}expected a JSON object", &text[..at]),
        None => text.to_string(),
    }
}

#[rocket::async_trait]
impl<'r, T: DeserializeOwned> FromData<'r> for JsonBody<T> {
    type Error = ();

    async fn from_data(req: &'r Request<'_>, data: Data<'r>) -> data::Outcome<'r, Self> {
        match read(req, data).await {
            Ok(value) => data::Outcome::Success(JsonBody(value)),
            Err(error) => data::Outcome::Error((error.remember(req), ())),
        }
    }
}

/// A response body serialized inside the handler, so that views may borrow from its locals
/// instead of copying every field.
pub fn render<T: Serialize>(value: &T) -> Result<RawJson<String>, ApiError> {
    serde_json::to_string(value).map(RawJson).map_err(|e| {
        tracing::error!(error = %e, "response serialization failed");
        ApiError::internal()
    })
}
