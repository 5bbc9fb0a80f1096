//! OpenID Connect providers (SPEC §8): discovery, the authorization request (PKCE S256,
//! `state`, `nonce`), the code exchange and the ID token's validation, with the
//! `openidconnect` crate. HTTP to the providers goes through one `ureq` agent (native TLS, no
//! redirects followed, short timeouts) and is blocking: callers run it off the async workers.
//!
//! A provider's discovery document and keys are fetched at boot by a background thread (a
//! provider that is down then does not stop latchkey from starting), kept, fetched again when
//! a sign-in finds them missing, and fetched again when an ID token is signed by a key id they
//! do not have (the provider rotated its keys).

use std::fmt;
use std::io::Read as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use openidconnect::core::{
    CoreAuthenticationFlow, CoreClient, CoreIdTokenClaims, CoreProviderMetadata,
};
use openidconnect::{
    AuthorizationCode, ClaimsVerificationError, ClientId, ClientSecret, CsrfToken,
    EndpointMaybeSet, EndpointNotSet, EndpointSet, HttpRequest, HttpResponse, IssuerUrl, Nonce,
    PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, RequestTokenError, Scope,
    SignatureVerificationError, TokenResponse as _,
};

use crate::config::{OidcProviderSettings, Settings};

/// The client type `from_provider_metadata` makes: authorization URL set, token and userinfo
/// URLs as the discovery document gave them.
type Client = CoreClient<
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// The largest answer read from a provider (discovery documents and key sets are small).
const MAX_RESPONSE_BYTES: u64 = 1 << 20;

/// Provider calls (each blocks a thread for up to the agent's timeouts) that may be under
/// way at once, for all providers together. Beyond it a sign-in fails at once as
/// `provider_unavailable`: a provider that is down must not take the threads the database
/// and password hashing need.
const MAX_PROVIDER_CALLS: usize = 8;

/// Every configured provider (managed state; empty when none are configured).
#[derive(Clone)]
pub struct OidcProviders {
    providers: Vec<Arc<Provider>>,
    calls: Arc<tokio::sync::Semaphore>,
}

impl Default for OidcProviders {
    fn default() -> Self {
        OidcProviders {
            providers: Vec::new(),
            calls: Arc::new(tokio::sync::Semaphore::new(MAX_PROVIDER_CALLS)),
        }
    }
}

impl OidcProviders {
    /// The configured providers, with their discovery started in the background.
    pub fn start(settings: &Settings, redirect_url: impl Fn(&str) -> String) -> OidcProviders {
        let providers: Vec<Arc<Provider>> = settings
            .oidc_providers
            .iter()
            .map(|p| Arc::new(Provider::new(p.clone(), redirect_url(&p.id))))
            .collect();
        for provider in &providers {
            let provider = provider.clone();
            std::thread::Builder::new()
                .name(format!("oidc-discovery-{}", provider.settings.id))
                .spawn(move || provider.discover_until_found())
                .expect("spawn a discovery thread");
        }
        OidcProviders {
            providers,
            ..OidcProviders::default()
        }
    }

    /// Runs `call` (blocking HTTP to `provider`) on the blocking pool, if fewer than
    /// [`MAX_PROVIDER_CALLS`] are under way; otherwise fails at once.
    pub async fn call<T, F>(&self, provider: Arc<Provider>, call: F) -> Result<T, OidcFailure>
    where
        F: FnOnce(&Provider) -> Result<T, OidcFailure> + Send + 'static,
        T: Send + 'static,
    {
        let Ok(permit) = self.calls.clone().try_acquire_owned() else {
            return Err(OidcFailure::Unavailable(
                "too many provider calls under way".into(),
            ));
        };
        let task = move || {
            let _permit = permit;
            call(&provider)
        };
        rocket::tokio::task::spawn_blocking(task)
            .await
            .unwrap_or_else(|_| Err(OidcFailure::Unavailable("the provider call failed".into())))
    }

    pub fn get(&self, id: &str) -> Option<Arc<Provider>> {
        self.providers.iter().find(|p| p.settings.id == id).cloned()
    }

    pub fn all(&self) -> impl Iterator<Item = &OidcProviderSettings> {
        self.providers.iter().map(|p| &p.settings)
    }
}

/// Why a provider sign-in could not go on. Each is one error code on the page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OidcFailure {
    /// The provider could not be reached, or answered with something unusable.
    Unavailable(String),
    /// The provider refused the code, or its ID token did not pass validation.
    Rejected(String),
}

impl fmt::Display for OidcFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OidcFailure::Unavailable(why) => write!(f, "provider unavailable: {why}"),
            OidcFailure::Rejected(why) => write!(f, "rejected: {why}"),
        }
    }
}

/// What the browser is sent to the provider with, and what the callback needs back.
pub struct Authorization {
    pub url: String,
    pub nonce: String,
    pub pkce_verifier: String,
}

/// What a validated ID token says about the person.
#[derive(Debug, Clone)]
pub struct VerifiedIdentity {
    pub issuer: String,
    pub subject: String,
    pub email: Option<String>,
    /// The provider's `email_verified` claim (absent counts as false).
    pub email_verified: bool,
    pub name: Option<String>,
}

pub struct Provider {
    pub settings: OidcProviderSettings,
    /// Where the provider sends people back (the API's callback route for this provider).
    redirect_url: String,
    client: RwLock<Option<Arc<Client>>>,
    /// A discovery is under way: another caller does not start a second one (it fails at
    /// once), so a provider that is down costs one waiting thread, not one per sign-in.
    discovering: AtomicBool,
    http: ureq::Agent,
}

impl Provider {
    fn new(settings: OidcProviderSettings, redirect_url: String) -> Provider {
        let mut http = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(5))
            .timeout(Duration::from_secs(10))
            // A provider's endpoints answer directly; following redirects would let one
            // send latchkey's requests anywhere.
            .redirects(0);
        if let Ok(tls) = native_tls::TlsConnector::new() {
            http = http.tls_connector(Arc::new(tls));
        }
        Provider {
            settings,
            redirect_url,
            client: RwLock::new(None),
            discovering: AtomicBool::new(false),
            http: http.build(),
        }
    }

    /// Fetches the discovery document (and key set) until it works: at once, then after
    /// 1, 2, 4 … 60 seconds. Runs on its own thread from boot.
    fn discover_until_found(&self) {
        let mut wait = Duration::from_secs(1);
        loop {
            match self.discover() {
                Ok(_) => {
                    tracing::info!(provider = %self.settings.id, "OpenID provider discovered");
                    return;
                }
                Err(error) => tracing::warn!(
                    provider = %self.settings.id,
                    issuer = %self.settings.issuer,
                    %error,
                    retry_in_s = wait.as_secs(),
                    "OpenID provider discovery failed; sign-in with it fails until it works"
                ),
            }
            std::thread::sleep(wait);
            wait = (wait * 2).min(Duration::from_secs(60));
        }
    }

    /// Fetches the discovery document and the key set now, and keeps the client they make;
    /// fails at once while another discovery of this provider is under way.
    fn discover(&self) -> Result<Arc<Client>, OidcFailure> {
        if self
            .discovering
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return Err(OidcFailure::Unavailable(
                "a discovery of this provider is under way".into(),
            ));
        }
        let discovered = self.discover_now();
        self.discovering.store(false, Ordering::Release);
        discovered
    }

    fn discover_now(&self) -> Result<Arc<Client>, OidcFailure> {
        let issuer = IssuerUrl::new(self.settings.issuer.clone())
            .map_err(|e| OidcFailure::Unavailable(format!("issuer URL: {e}")))?;
        let http = |request: HttpRequest| send(&self.http, request);
        let metadata = CoreProviderMetadata::discover(&issuer, &http)
            .map_err(|e| OidcFailure::Unavailable(error_chain(&e)))?;
        let redirect = RedirectUrl::new(self.redirect_url.clone())
            .map_err(|e| OidcFailure::Unavailable(format!("redirect URL: {e}")))?;
        let client = Client::from_provider_metadata(
            metadata,
            ClientId::new(self.settings.client_id.clone()),
            self.settings.client_secret.clone().map(ClientSecret::new),
        )
        .set_redirect_uri(redirect);
        let client = Arc::new(client);
        *self.client.write().unwrap_or_else(|e| e.into_inner()) = Some(client.clone());
        Ok(client)
    }

    /// The client the last discovery made, if one has succeeded.
    fn kept(&self) -> Option<Arc<Client>> {
        self.client
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The kept client, or a new discovery when there is none yet.
    fn client(&self) -> Result<Arc<Client>, OidcFailure> {
        if let Some(client) = self.kept() {
            return Ok(client);
        }
        let discovered = self.discover();
        if discovered.is_ok() || !self.discovering.load(Ordering::Acquire) {
            return discovered;
        }
        // Another discovery is under way (the boot thread's, or another sign-in's): wait a
        // little for its client rather than fail a sign-in that came a moment too early.
        for _ in 0..20 {
            std::thread::sleep(Duration::from_millis(100));
            if let Some(client) = self.kept() {
                return Ok(client);
            }
            if !self.discovering.load(Ordering::Acquire) {
                break;
            }
        }
        discovered
    }

    /// Where to send the browser: the authorization request with PKCE (S256), this `state`,
    /// a random `nonce`, and scopes `openid email profile`. Blocking (it may discover).
    pub fn authorize(&self, state: String) -> Result<Authorization, OidcFailure> {
        let client = self.client()?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let (url, _state, nonce) = client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                move || CsrfToken::new(state),
                Nonce::new_random,
            )
            .add_scope(Scope::new("email".into()))
            .add_scope(Scope::new("profile".into()))
            .set_pkce_challenge(challenge)
            .url();
        Ok(Authorization {
            url: url.to_string(),
            nonce: nonce.secret().clone(),
            pkce_verifier: verifier.secret().clone(),
        })
    }

    /// Exchanges the code (with the PKCE verifier) and validates the ID token in full:
    /// signature from the provider's keys, `iss`, `aud`, `exp`, and `nonce`. Blocking.
    pub fn finish(
        &self,
        code: &str,
        pkce_verifier: &str,
        nonce: &str,
    ) -> Result<VerifiedIdentity, OidcFailure> {
        let client = self.client()?;
        let http = |request: HttpRequest| send(&self.http, request);
        let response = client
            .exchange_code(AuthorizationCode::new(code.to_string()))
            .map_err(|e| OidcFailure::Unavailable(e.to_string()))?
            .set_pkce_verifier(PkceCodeVerifier::new(pkce_verifier.to_string()))
            .request(&http)
            .map_err(|e| match e {
                RequestTokenError::ServerResponse(answer) => {
                    OidcFailure::Rejected(format!("token endpoint: {answer}"))
                }
                other => {
                    OidcFailure::Unavailable(format!("token endpoint: {}", error_chain(&other)))
                }
            })?;
        let id_token = response
            .id_token()
            .ok_or_else(|| OidcFailure::Rejected("the token answer has no ID token".into()))?
            .clone();
        let nonce = Nonce::new(nonce.to_string());
        let verified = |client: &Client| -> Result<VerifiedIdentity, ClaimsVerificationError> {
            let claims = id_token.claims(&client.id_token_verifier(), &nonce)?;
            Ok(identity_of(claims))
        };
        match verified(&client) {
            Ok(identity) => Ok(identity),
            // A key id the kept set does not have: the provider may have rotated its keys.
            Err(ClaimsVerificationError::SignatureVerification(
                SignatureVerificationError::NoMatchingKey,
            )) => {
                let refreshed = self.discover()?;
                verified(&refreshed).map_err(|e| OidcFailure::Rejected(format!("ID token: {e}")))
            }
            Err(e) => Err(OidcFailure::Rejected(format!("ID token: {e}"))),
        }
    }
}

fn identity_of(claims: &CoreIdTokenClaims) -> VerifiedIdentity {
    VerifiedIdentity {
        issuer: claims.issuer().as_str().to_string(),
        subject: claims.subject().as_str().to_string(),
        email: claims.email().map(|e| e.as_str().to_string()),
        email_verified: claims.email_verified().unwrap_or(false),
        name: claims
            .name()
            .and_then(|n| n.get(None))
            .map(|n| n.as_str().to_string()),
    }
}

/// An error and its sources on one line.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut line = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        line.push_str(": ");
        line.push_str(&cause.to_string());
        source = cause.source();
    }
    line
}

/// An HTTP failure talking to a provider (the connection, not an error status: those are
/// answers, and `openidconnect` reads them).
#[derive(Debug)]
pub struct HttpError(String);

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for HttpError {}

/// One request to a provider, as `openidconnect` asks for it.
fn send(agent: &ureq::Agent, request: HttpRequest) -> Result<HttpResponse, HttpError> {
    let mut call = agent.request(request.method().as_str(), &request.uri().to_string());
    for (name, value) in request.headers() {
        let value = value
            .to_str()
            .map_err(|_| HttpError(format!("header {name} is not text")))?;
        call = call.set(name.as_str(), value);
    }
    let answer = if request.body().is_empty() {
        call.call()
    } else {
        call.send_bytes(request.body())
    };
    let answer = match answer {
        Ok(answer) | Err(ureq::Error::Status(_, answer)) => answer,
        Err(ureq::Error::Transport(e)) => return Err(HttpError(e.to_string())),
    };
    let mut response = openidconnect::http::Response::builder().status(answer.status());
    for name in answer.headers_names() {
        if let Some(value) = answer.header(&name) {
            response = response.header(name.as_str(), value);
        }
    }
    let mut body = Vec::new();
    answer
        .into_reader()
        .take(MAX_RESPONSE_BYTES)
        .read_to_end(&mut body)
        .map_err(|e| HttpError(format!("reading the answer: {e}")))?;
    response
        .body(body)
        .map_err(|e| HttpError(format!("the answer: {e}")))
}
