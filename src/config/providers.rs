//! `oidc_providers`: the OpenID Connect providers people may sign in with.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// One entry of `oidc_providers`, checked.
#[derive(Clone)]
pub struct OidcProviderSettings {
    /// Short and URL-safe (`google`): it is in the redirect URI and in the page's links.
    pub id: String,
    /// What the page's button says ("Sign in with {name}").
    pub name: String,
    /// The issuer; its discovery document is `{issuer}/.well-known/openid-configuration`.
    pub issuer: String,
    pub client_id: String,
    /// `None` for a public client (PKCE alone). Never printed.
    pub client_secret: Option<String>,
}

impl fmt::Debug for OidcProviderSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OidcProviderSettings")
            .field("id", &self.id)
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

/// An `oidc_providers` entry as written.
#[derive(Deserialize, Serialize, Default)]
#[serde(default)]
pub(super) struct RawOidcProvider {
    id: String,
    name: String,
    issuer: String,
    client_id: String,
    client_secret: Option<String>,
}

/// `oidc_providers` checked; they need `public_url` (the providers send people back there).
pub(super) fn oidc_providers(
    raw: Vec<RawOidcProvider>,
    public_url: Option<&str>,
) -> Result<Vec<OidcProviderSettings>, ConfigError> {
    let mut providers: Vec<OidcProviderSettings> = Vec::new();
    for (index, p) in raw.into_iter().enumerate() {
        let error = |field: &str, problem: String| ConfigError {
            key: format!("oidc_providers[{index}].{field}"),
            problem,
        };
        let id = p.id.trim().to_string();
        if id.is_empty()
            || id.len() > 32
            || !id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        {
            return Err(error(
                "id",
                format!("must be 1 to 32 of a-z, 0-9, `-`, `_` (got `{id}`)"),
            ));
        }
        if providers.iter().any(|known| known.id == id) {
            return Err(error("id", format!("`{id}` is listed twice")));
        }
        let name = p.name.trim().to_string();
        if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
            return Err(error(
                "name",
                "is required: what the page's button says (\"Google\")".into(),
            ));
        }
        let issuer = p.issuer.trim().to_string();
        if !issuer_is_usable(&issuer) {
            return Err(error(
                "issuer",
                format!(
                    "must be the provider's https URL, such as https://accounts.google.com \
                     (http only on localhost) (got `{issuer}`)"
                ),
            ));
        }
        let client_id = p.client_id.trim().to_string();
        if client_id.is_empty() {
            return Err(error(
                "client_id",
                "is required: the client id the provider gave you".into(),
            ));
        }
        let client_secret = p.client_secret.filter(|s| !s.is_empty());
        if public_url.is_none() {
            return Err(ConfigError {
                key: "public_url".into(),
                problem: "is required with `oidc_providers`: the providers send people back to \
                          {public_url}/api/auth/oidc/{id}/callback"
                    .into(),
            });
        }
        providers.push(OidcProviderSettings {
            id,
            name,
            issuer,
            client_id,
            client_secret,
        });
    }
    Ok(providers)
}

/// An https URL, or http to this machine (a provider under test, or on the same host).
fn issuer_is_usable(issuer: &str) -> bool {
    let Ok(url) = openidconnect::url::Url::parse(issuer) else {
        return false;
    };
    let loopback = matches!(url.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"));
    (url.scheme() == "https" || (url.scheme() == "http" && loopback))
        && url.host_str().is_some()
        && url.query().is_none()
        && url.fragment().is_none()
}
