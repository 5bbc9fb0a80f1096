//! Typed configuration, extracted once from Rocket's Figment (`Rocket.toml` profiles, `ROCKET_*`
//! variables, plus plain `DATABASE_URL` and `CRON_SECRET`) and validated before anything starts.
//! Both binaries use [`figment`] and [`Settings::from_figment`]; tests build a `Settings` in code.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use rocket::figment::providers::{Env, Format, Serialized, Toml};
use rocket::figment::{Figment, Profile};
use serde::Deserialize;

/// Where the data lives. The scheme of `database_url` picks the backend, and nothing else does.
#[derive(Clone, PartialEq, Eq)]
pub enum DatabaseTarget {
    /// `postgres://…` or `postgresql://…`: the URL as given, `database_schema` when it is
    /// not `public` (every table and migration of latchkey lives there), and whether Diesel
    /// may keep prepared statements (`pg_statement_cache`; not behind a transaction pooler).
    Postgres {
        url: String,
        schema: Option<String>,
        statement_cache: bool,
    },
    /// `sqlite://PATH` or a plain path.
    Sqlite(PathBuf),
}

impl DatabaseTarget {
    /// Picks the backend from the scheme; an unknown scheme is an error naming it.
    pub fn parse(url: &str) -> Result<Self, String> {
        let url = url.trim();
        if url.is_empty() {
            return Err("is empty".into());
        }
        match scheme_of(url) {
            Some("postgres") | Some("postgresql") => {
                let rest = &url[url.find("://").map(|i| i + 3).unwrap_or(0)..];
                if rest.is_empty() || rest.starts_with('/') && rest.len() == 1 {
                    return Err("names no PostgreSQL host or database".into());
                }
                Ok(Self::Postgres {
                    url: url.to_string(),
                    schema: None,
                    statement_cache: true,
                })
            }
            Some("sqlite") => {
                let path = &url["sqlite://".len()..];
                if path.is_empty() {
                    return Err("names no SQLite file (use sqlite://PATH)".into());
                }
                Ok(Self::Sqlite(PathBuf::from(path)))
            }
            Some(other) => Err(format!(
                "has unknown scheme `{other}` (use postgres://, postgresql:// or sqlite://)"
            )),
            // A libpq connection string (`host=db user=app password=…`) is not a file name:
            // taken as one it would become a SQLite file named after it, password and all.
            // The value is not repeated, for the same reason.
            None if url.contains('=') && url.contains(char::is_whitespace) => Err(
                "looks like a libpq `key=value` string, which latchkey does not read: \
                 write it as a URL, postgres://user:password@host:port/database"
                    .into(),
            ),
            None => Ok(Self::Sqlite(PathBuf::from(url))),
        }
    }

    /// Where the data is, for the boot log: the absolute SQLite path (it resolves from the
    /// working directory), or the PostgreSQL URL without its password.
    pub fn describe(&self) -> String {
        match self {
            Self::Sqlite(path) => {
                let absolute = std::path::absolute(path).unwrap_or_else(|_| path.clone());
                format!("sqlite {}", absolute.display())
            }
            Self::Postgres { url, schema, .. } => {
                let shown = without_password(url);
                match schema {
                    Some(schema) => format!("postgres {shown} (schema {schema})"),
                    None => format!("postgres {shown}"),
                }
            }
        }
    }

    /// Which backend this target is.
    pub fn backend(&self) -> Backend {
        match self {
            Self::Postgres { .. } => Backend::Postgres,
            Self::Sqlite(_) => Backend::Sqlite,
        }
    }
}

/// Never print a PostgreSQL URL: it may carry a password.
impl fmt::Debug for DatabaseTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Postgres { schema, .. } => write!(f, "Postgres(<url>, schema {schema:?})"),
            Self::Sqlite(path) => write!(f, "Sqlite({})", path.display()),
        }
    }
}

/// `postgres://ann:secret@host/db?password=x` → `postgres://ann:***@host/db?password=***`.
fn without_password(url: &str) -> String {
    let Some(start) = url.find("://").map(|i| i + 3) else {
        return url.to_string();
    };
    let end = url[start..].find('/').map_or(url.len(), |i| start + i);
    let mut shown = url.to_string();
    if let Some(at) = url[start..end].rfind('@') {
        if let Some(colon) = url[start..start + at].find(':') {
            shown = format!("{}***{}", &url[..start + colon + 1], &url[start + at..]);
        }
    }
    if let Some(query) = shown.find('?') {
        let params: Vec<String> = shown[query + 1..]
            .split('&')
            .map(|param| match param.split_once('=') {
                Some((name, _)) if name.eq_ignore_ascii_case("password") => format!("{name}=***"),
                _ => param.to_string(),
            })
            .collect();
        shown = format!("{}?{}", &shown[..query], params.join("&"));
    }
    shown
}

fn scheme_of(url: &str) -> Option<&str> {
    let end = url.find("://")?;
    let scheme = &url[..end];
    let valid = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    valid.then_some(scheme)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
/// The database backend.
pub enum Backend {
    /// PostgreSQL.
    Postgres,
    /// SQLite.
    Sqlite,
}

impl Backend {
    /// `postgres` or `sqlite`, as the API reports it.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Postgres => "postgres",
            Backend::Sqlite => "sqlite",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
/// The session cookie's `SameSite` attribute.
pub enum SameSite {
    /// `SameSite=Lax` (the default).
    Lax,
    /// `SameSite=Strict`.
    Strict,
}

/// The validated configuration. Durations are whole seconds in the sources, typed here.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `database_url`: where the data lives.
    pub database: DatabaseTarget,
    /// `pool_size`: r2d2 connections.
    pub pool_size: u32,
    /// `pool_timeout_ms`: how long a request waits for a connection before 503.
    pub pool_timeout: Duration,
    /// `session_idle_timeout`.
    pub session_idle_timeout: chrono::Duration,
    /// `session_absolute_timeout`.
    pub session_absolute_timeout: chrono::Duration,
    /// `session_touch_interval`.
    pub session_touch_interval: chrono::Duration,
    /// `cookie_name`.
    pub cookie_name: String,
    /// `cookie_secure` (also turns on HSTS).
    pub cookie_secure: bool,
    /// `cookie_same_site`.
    pub cookie_same_site: SameSite,
    /// `allowed_origins`, normalised (lowercase, no trailing slash).
    pub allowed_origins: Vec<String>,
    /// `login_max_failures`.
    pub login_max_failures: i32,
    /// `login_backoff_base`.
    pub login_backoff_base: chrono::Duration,
    /// `login_backoff_max`.
    pub login_backoff_max: chrono::Duration,
    /// `ip_max_failures`.
    pub ip_max_failures: i32,
    /// `ip_failure_window`.
    pub ip_failure_window: chrono::Duration,
    /// `ip_max_registrations`: registrations per client IP (an IPv6 /64) per
    /// `ip_failure_window`.
    pub ip_max_registrations: i32,
    /// `cleanup_schedule` (checked by the worker's cron parser).
    pub cleanup_schedule: String,
    /// `cleanup_batch_size`.
    pub cleanup_batch_size: i64,
    /// `event_retention`.
    pub event_retention: chrono::Duration,
    /// `CRON_SECRET`.
    pub cron_secret: Option<String>,
    /// `login_url`: where `/api/auth/verify` sends browsers that are not signed in.
    pub login_url: Option<String>,
    /// True in the `debug` profile (Rocket's profile for debug builds, or
    /// `ROCKET_PROFILE=debug`): the local-development defaults (a cookie without `Secure`,
    /// named `session`). Every other profile, whatever its name, gets the secure defaults.
    pub debug_profile: bool,
    /// `log_format`: `text` (the default) or `json`, one object per line.
    pub log_format: LogFormat,
    /// `login_queue_max`: password hashes that may wait or run at once; beyond it, requests
    /// that need one get 503 at once.
    pub login_queue_max: usize,
    /// `pg_statement_cache`: PostgreSQL prepared-statement cache (off for a transaction
    /// pooler such as PgBouncer).
    pub pg_statement_cache: bool,
    /// `public_url`: latchkey's own public base URL, without a trailing slash.
    pub public_url: Option<String>,
    /// `smtp_url`, `mail_from` (with `public_url`): `None` turns mail off.
    pub mail: Option<MailSettings>,
    /// `password_reset_ttl`: lifetime of a password reset link.
    pub password_reset_ttl: chrono::Duration,
    /// `email_verification_ttl`: lifetime of an address verification link.
    pub email_verification_ttl: chrono::Duration,
    /// `require_verified_email`: refuse sign-in (403) until the address is verified.
    pub require_verified_email: bool,
    /// `mfa_key`: the key TOTP secrets are sealed with before they are stored; `None` stores
    /// them as they are (see `auth::mfa`).
    pub mfa_key: Option<MfaKey>,
    /// `oidc_providers`: the OpenID providers people may sign in with (SPEC §8).
    pub oidc_providers: Vec<OidcProviderSettings>,
}

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
    /// `{public_url}/api/auth/oidc/{id}/callback`, registered at the provider.
    pub redirect_url: String,
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
#[derive(Deserialize, Default)]
#[serde(default)]
struct RawOidcProvider {
    id: String,
    name: String,
    issuer: String,
    client_id: String,
    client_secret: Option<String>,
}

/// `oidc_providers` checked, with `public_url` (the redirect URIs are built from it).
fn oidc_providers(
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
        let Some(public_url) = public_url else {
            return Err(ConfigError {
                key: "public_url".into(),
                problem: "is required with `oidc_providers`: the providers send people back to \
                          {public_url}/api/auth/oidc/{id}/callback"
                    .into(),
            });
        };
        providers.push(OidcProviderSettings {
            redirect_url: format!("{public_url}/api/auth/oidc/{id}/callback"),
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

/// `mfa_key`: 32 bytes, written in base64 (`openssl rand -base64 32`). Never printed.
#[derive(Clone)]
pub struct MfaKey([u8; 32]);

impl MfaKey {
    /// The key from its base64 text (standard or URL-safe alphabet, padding optional).
    pub fn parse(text: &str) -> Option<MfaKey> {
        use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
        use base64::Engine;
        let text = text.trim().trim_end_matches('=');
        let bytes = STANDARD_NO_PAD
            .decode(text)
            .or_else(|_| URL_SAFE_NO_PAD.decode(text))
            .ok()?;
        bytes.try_into().ok().map(MfaKey)
    }

    pub(crate) fn bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for MfaKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MfaKey(***)")
    }
}

/// One configuration problem: the key and what is wrong with it, printed as one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The key, as written in `Rocket.toml`.
    pub key: String,
    /// What is wrong with its value.
    pub problem: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid configuration: `{}` {}", self.key, self.problem)
    }
}

impl std::error::Error for ConfigError {}

/// The raw shape read from Figment; every field has the contract's default.
#[derive(Deserialize)]
#[serde(default)]
struct Raw {
    database_url: String,
    pool_size: Option<i64>,
    workers: Option<i64>,
    pool_timeout_ms: i64,
    session_idle_timeout: i64,
    session_absolute_timeout: i64,
    session_touch_interval: i64,
    cookie_name: Option<String>,
    cookie_secure: Option<bool>,
    cookie_same_site: String,
    allowed_origins: Vec<String>,
    login_max_failures: i64,
    login_backoff_base: i64,
    login_backoff_max: i64,
    ip_max_failures: i64,
    ip_failure_window: i64,
    ip_max_registrations: i64,
    cleanup_schedule: String,
    cleanup_batch_size: i64,
    event_retention: i64,
    cron_secret: Option<String>,
    login_url: Option<String>,
    database_schema: String,
    log_format: String,
    login_queue_max: i64,
    pg_statement_cache: bool,
    smtp_url: Option<String>,
    mail_from: Option<String>,
    public_url: Option<String>,
    password_reset_ttl: i64,
    email_verification_ttl: i64,
    require_verified_email: bool,
    mfa_key: Option<String>,
    oidc_providers: Vec<RawOidcProvider>,
}

impl Default for Raw {
    fn default() -> Self {
        Raw {
            database_url: "sqlite://latchkey.db".into(),
            pool_size: None,
            workers: None,
            pool_timeout_ms: 2000,
            session_idle_timeout: 7 * 86_400,
            session_absolute_timeout: 30 * 86_400,
            session_touch_interval: 60,
            cookie_name: None,
            cookie_secure: None,
            cookie_same_site: "lax".into(),
            allowed_origins: Vec::new(),
            login_max_failures: 5,
            login_backoff_base: 30,
            login_backoff_max: 15 * 60,
            ip_max_failures: 30,
            ip_failure_window: 10 * 60,
            ip_max_registrations: 20,
            cleanup_schedule: "0 0 * * * *".into(),
            cleanup_batch_size: 10_000,
            event_retention: 90 * 86_400,
            cron_secret: None,
            login_url: None,
            database_schema: "public".into(),
            log_format: "text".into(),
            login_queue_max: 256,
            pg_statement_cache: true,
            smtp_url: None,
            mail_from: None,
            public_url: None,
            password_reset_ttl: 3600,
            email_verification_ttl: 2 * 86_400,
            require_verified_email: false,
            mfa_key: None,
            oidc_providers: Vec::new(),
        }
    }
}

/// Rocket's own sources, with two changes: the client IP comes from the socket unless an
/// `ip_header` is configured explicitly (Rocket would trust `X-Real-IP` by default, which any
/// client can forge), and plain `DATABASE_URL` / `CRON_SECRET` variables win over everything.
pub fn figment() -> Figment {
    let profile = Profile::from_env_or("ROCKET_PROFILE", rocket::Config::DEFAULT_PROFILE);
    let rocket_sources = Figment::from(rocket::Config::default())
        .merge(Serialized::default("ip_header", false))
        .merge(Serialized::default("workers", default_workers()))
        // One log stream: latchkey's. Rocket's own lines (on stdout, between ours) would also
        // print query strings (a token pasted into a wrong URL, say); latchkey logs each
        // request and every failure itself. `ROCKET_LOG_LEVEL` still wins, for debugging.
        .merge(Serialized::default("log_level", "off"))
        .merge(Toml::file(Env::var_or("ROCKET_CONFIG", "Rocket.toml")).nested())
        .merge(Env::prefixed("ROCKET_").ignore(&["PROFILE"]).global());
    with_plain_variables(&rocket_sources).select(profile)
}

/// Rocket's own log at `normal` prints every request's URI with its query string (an OpenID
/// code and state, a token pasted into a wrong URL) and at `debug` every header (session
/// cookies, bearer tokens). No log level of latchkey's server may print a secret, so a
/// configured `normal` or `debug` is turned off (as by default: latchkey logs requests and
/// boot failures itself, on the one stream), with the
/// warning returned; latchkey's own log (`RUST_LOG`) has every request without its secrets.
pub fn keep_rocket_log_quiet(
    figment: Figment,
    config: &rocket::Config,
) -> (Figment, Option<String>) {
    use rocket::config::LogLevel;
    match config.log_level {
        LogLevel::Normal | LogLevel::Debug => (
            figment.merge(Serialized::global("log_level", "off")),
            Some(format!(
                "`log_level = \"{}\"` would make Rocket print query strings and headers \
                 (session tokens, OpenID codes); Rocket's own log stays off. Use \
                 RUST_LOG=debug for latchkey's log, which never prints a secret",
                config.log_level
            )),
        ),
        LogLevel::Critical | LogLevel::Off => (figment, None),
    }
}

/// The application's Figment with the plain variables `DATABASE_URL` and `CRON_SECRET` on top
/// (what [`crate::Latchkey::fairing`] reads inside a host application).
pub fn with_plain_variables(figment: &Figment) -> Figment {
    figment
        .clone()
        .merge(Env::raw().only(&["DATABASE_URL", "CRON_SECRET"]).global())
}

/// Rocket's async workers: one per core, Rocket's own default. None of them ever waits for the
/// database (the session lookup has its own thread, `auth::lookup`; other queries run on the
/// blocking pool). Measured on 2 cores with PostgreSQL local, /me at c=16 and c=64: 2, 3, 4
/// and 6 workers all within the run-to-run noise (13–15k and 19–23k per second); fewer
/// threads use less memory.
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn positive(key: &str, value: i64) -> Result<i64, ConfigError> {
    if value > 0 {
        Ok(value)
    } else {
        Err(ConfigError {
            key: key.into(),
            problem: format!("must be a positive whole number (got {value})"),
        })
    }
}

fn seconds(key: &str, value: i64) -> Result<chrono::Duration, ConfigError> {
    let value = positive(key, value)?;
    // Ten years is far beyond any sane timeout and keeps date arithmetic from overflowing.
    if value > 10 * 365 * 86_400 {
        return Err(ConfigError {
            key: key.into(),
            problem: format!("is too large ({value} seconds; at most ten years)"),
        });
    }
    Ok(chrono::Duration::seconds(value))
}

/// Where and how mail goes (`smtp_url`, `mail_from`, `public_url`); see `crate::mail`.
#[derive(Clone)]
pub struct MailSettings {
    /// The SMTP server, as lettre reads it: `smtp://host:port`, `smtps://user:pass@host:465`,
    /// `smtp://user:pass@host:587?tls=required`. May carry a password: never printed.
    pub smtp_url: String,
    /// The From address.
    pub from: lettre::message::Mailbox,
    /// latchkey's public base URL, without a trailing slash.
    pub public_url: String,
}

impl fmt::Debug for MailSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MailSettings")
            .field("from", &self.from.to_string())
            .field("public_url", &self.public_url)
            .finish_non_exhaustive()
    }
}

/// `smtp_url`, `mail_from` and `public_url` checked together: all or none of the first two,
/// and `public_url` with them (the links need it).
fn mail_settings(
    smtp_url: Option<String>,
    mail_from: Option<String>,
    public_url: Option<&str>,
) -> Result<Option<MailSettings>, ConfigError> {
    let error = |key: &str, problem: String| ConfigError {
        key: key.into(),
        problem,
    };
    let smtp_url = smtp_url
        .map(|u| u.trim().to_string())
        .filter(|u| !u.is_empty());
    let Some(smtp_url) = smtp_url else {
        return Ok(None);
    };
    use lettre::{AsyncSmtpTransport, Tokio1Executor};
    if let Err(e) = AsyncSmtpTransport::<Tokio1Executor>::from_url(&smtp_url) {
        // lettre's message names the part it could not use, not the password.
        return Err(error(
            "smtp_url",
            format!("is not a usable SMTP URL ({e}); use smtp://host:port, smtps://user:pass@host:465 or smtp://user:pass@host:587?tls=required"),
        ));
    }
    let Some(from) = mail_from.filter(|f| !f.trim().is_empty()) else {
        return Err(error(
            "mail_from",
            "is required with `smtp_url` (e.g. \"latchkey <auth@example.com>\")".into(),
        ));
    };
    let from = from.trim().parse().map_err(|_| {
        error(
            "mail_from",
            format!("must be an address like `auth@example.com` or `Name <auth@example.com>` (got `{from}`)"),
        )
    })?;
    let Some(public_url) = public_url else {
        return Err(error(
            "public_url",
            "is required with `smtp_url`: the links in mails point there".into(),
        ));
    };
    Ok(Some(MailSettings {
        smtp_url,
        from,
        public_url: public_url.to_string(),
    }))
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines (coloured only on a terminal).
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

impl LogFormat {
    fn parse(value: &str) -> Result<LogFormat, ConfigError> {
        match value.trim().to_ascii_lowercase().as_str() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(ConfigError {
                key: "log_format".into(),
                problem: format!("must be `text` or `json` (got `{other}`)"),
            }),
        }
    }

    /// The format `figment` asks for, read before anything else so that even the
    /// configuration's own errors and warnings are written in it. A bad value is reported
    /// later by [`Settings::from_figment`]; until then the format is text.
    pub fn from_figment(figment: &Figment) -> LogFormat {
        figment
            .extract_inner::<String>("log_format")
            .ok()
            .and_then(|value| LogFormat::parse(&value).ok())
            .unwrap_or(LogFormat::Text)
    }
}

/// latchkey's own keys (the fields of the raw configuration), for the unknown-key warning.
pub const LATCHKEY_KEYS: &[&str] = &[
    "database_url",
    "pool_size",
    "pool_timeout_ms",
    "session_idle_timeout",
    "session_absolute_timeout",
    "session_touch_interval",
    "cookie_name",
    "cookie_secure",
    "cookie_same_site",
    "allowed_origins",
    "login_max_failures",
    "login_backoff_base",
    "login_backoff_max",
    "ip_max_failures",
    "ip_failure_window",
    "ip_max_registrations",
    "cleanup_schedule",
    "cleanup_batch_size",
    "event_retention",
    "cron_secret",
    "login_url",
    "database_schema",
    "log_format",
    "login_queue_max",
    "pg_statement_cache",
    "smtp_url",
    "mail_from",
    "public_url",
    "password_reset_ttl",
    "email_verification_ttl",
    "require_verified_email",
    "mfa_key",
    "oidc_providers",
];

/// Rocket's keys that its default configuration does not list (optional features, and the
/// variable that names the file).
const ROCKET_OPTIONAL_KEYS: &[&str] = &["tls", "mtls", "secret_key", "databases", "config"];

impl ConfigError {
    /// One of Figment's errors as one line: the key, where its value came from (the
    /// environment variable or file), and what it should be, in words rather than Rust types.
    pub fn from_figment(error: rocket::figment::Error) -> ConfigError {
        let error = error
            .into_iter()
            .next()
            .expect("figment errors are non-empty");
        let key = error.path.join(".");
        let file = error.metadata.as_ref().and_then(|m| match &m.source {
            Some(rocket::figment::Source::File(path)) => Some(path.display().to_string()),
            _ => None,
        });
        let source = match (&error.metadata, &file) {
            (Some(metadata), file) if !error.path.is_empty() => {
                let profile = error.profile.clone().unwrap_or_default();
                let name = metadata.interpolate(&profile, &error.path);
                match file {
                    Some(file) => format!(" (in {file}, `{name}`)"),
                    // Figment names the variable without its prefix ("PORT").
                    None if metadata.name.contains("`ROCKET_`") => {
                        format!(" (from ROCKET_{})", name.replace('.', "_"))
                    }
                    None if metadata.name.contains("environment") => format!(" (from {name})"),
                    None => String::new(),
                }
            }
            _ => String::new(),
        };
        use rocket::figment::error::Kind;
        let problem = match &error.kind {
            Kind::InvalidType(actual, expected) | Kind::InvalidValue(actual, expected) => {
                format!(
                    "{source} must be {}; got {actual}",
                    expected_in_words(&key, expected)
                )
            }
            Kind::UnknownVariant(actual, known) => {
                format!(
                    "{source} must be one of {}; got `{actual}`",
                    known.join(", ")
                )
            }
            Kind::Message(message) => {
                let message: Vec<&str> = message.split_whitespace().collect();
                let message = message.join(" ");
                if key.is_empty() {
                    // A file that is not valid TOML, for one: say which and where, on one line.
                    return ConfigError {
                        key: file.unwrap_or_else(|| "Rocket.toml".into()),
                        problem: format!("cannot be read: {}", message.trim_start_matches("TOML ")),
                    };
                }
                match key.as_str() {
                    "address" | "port" => {
                        format!(
                            "{source} must be {} ({message})",
                            expected_in_words(&key, "")
                        )
                    }
                    _ => format!("{source}: {message}"),
                }
            }
            other => format!("{source}: {other}"),
        };
        ConfigError {
            key,
            problem: problem.trim_start().to_string(),
        }
    }
}

/// serde's expectation ("u16", "a boolean", "i64") in the words of docs/configuration.md.
fn expected_in_words(key: &str, expected: &str) -> String {
    let expected = expected.trim_start_matches("expected ");
    if key == "port" {
        return "a port number from 0 to 65535".into();
    }
    if key == "address" {
        return "an IP address (e.g. 127.0.0.1)".into();
    }
    let integer = [
        "u8", "u16", "u32", "u64", "u128", "usize", "i8", "i16", "i32", "i64", "i128", "isize",
    ];
    if integer.contains(&expected) || expected.contains("integer") {
        if expected.starts_with('u') {
            return "a whole number, 0 or more".into();
        }
        return "a whole number".into();
    }
    match expected {
        "a boolean" | "bool" => "true or false".into(),
        "f32" | "f64" | "a float" => "a number".into(),
        "a string" | "string" => "a string".into(),
        "a sequence" => "a list".into(),
        _ if expected.starts_with("struct") || expected.contains("map") => "a table".into(),
        _ => expected.to_string(),
    }
}

/// Rocket's own keys (`port`, `workers`, `address`, …) checked the way Rocket will read them,
/// but failing with one line instead of a panic.
pub fn check_rocket_keys(figment: &Figment) -> Result<rocket::Config, ConfigError> {
    rocket::Config::try_from(figment).map_err(ConfigError::from_figment)
}

/// One warning per key in `Rocket.toml` or a `ROCKET_*` variable that neither Rocket nor
/// latchkey knows, naming the nearest known key when one is close.
pub fn unknown_keys(figment: &Figment) -> Vec<String> {
    let rocket_keys = Figment::from(rocket::Config::default())
        .extract::<rocket::figment::value::Dict>()
        .map(|dict| dict.into_keys().collect::<Vec<_>>())
        .unwrap_or_default();
    let known: Vec<&str> = rocket_keys
        .iter()
        .map(String::as_str)
        .chain(LATCHKEY_KEYS.iter().copied())
        .chain(ROCKET_OPTIONAL_KEYS.iter().copied())
        .collect();
    let Ok(dict) = figment.extract::<rocket::figment::value::Dict>() else {
        return Vec::new();
    };
    let mut warnings = Vec::new();
    for key in dict.keys() {
        if known.contains(&key.as_str()) {
            continue;
        }
        let place = match figment.find_metadata(key) {
            Some(metadata) => match &metadata.source {
                Some(rocket::figment::Source::File(path)) => format!(" in {}", path.display()),
                _ if metadata.name.contains("`ROCKET_`") => {
                    format!(" (from ROCKET_{})", key.to_ascii_uppercase())
                }
                _ => String::new(),
            },
            None => String::new(),
        };
        let nearest = known
            .iter()
            .map(|k| (strsim::levenshtein(k, key), *k))
            .min()
            .filter(|(distance, _)| *distance <= 3)
            .map(|(_, k)| format!(" (did you mean `{k}`?)"))
            .unwrap_or_default();
        warnings.push(format!(
            "unknown configuration key `{key}`{place} is ignored{nearest}"
        ));
    }
    warnings
}

/// Where the configuration file was found, if one was: Rocket looks for `Rocket.toml` (or
/// `ROCKET_CONFIG`) in the working directory and then in each parent directory.
pub fn config_file(figment: &Figment) -> Option<PathBuf> {
    figment
        .metadata()
        .find_map(|metadata| match &metadata.source {
            Some(rocket::figment::Source::File(path)) => Some(path.clone()),
            _ => None,
        })
}

/// One entry of `allowed_origins`, normalised (lowercase, no trailing slash): an origin as a
/// browser sends it, `http(s)://host[:port]`. `null` (sent by sandboxed frames and `file:`
/// pages, which any site can make), `*`, paths and other schemes are refused.
fn allowed_origin(text: &str) -> Result<String, ConfigError> {
    let parsed = url::Url::parse(text.trim()).ok();
    let origin = parsed.filter(|url| {
        matches!(url.scheme(), "http" | "https")
            && url.host_str().is_some_and(|h| !h.is_empty())
            && url.username().is_empty()
            && url.password().is_none()
            && url.path() == "/"
            && url.query().is_none()
            && url.fragment().is_none()
    });
    // As browsers write it: a default port left out, an international host in ASCII.
    if let Some(url) = origin {
        Ok(url.origin().ascii_serialization())
    } else {
        Err(ConfigError {
            key: "allowed_origins".into(),
            problem: format!(
                "each entry must be an origin such as https://app.example.com (scheme, host \
                 and port only; not `null` or `*`), got `{}`",
                text.trim()
            ),
        })
    }
}

impl Settings {
    /// Extracts and validates the configuration from a Figment (see [`figment`]).
    pub fn from_figment(figment: &Figment) -> Result<Settings, ConfigError> {
        let raw: Raw = figment.extract().map_err(ConfigError::from_figment)?;
        Settings::from_raw(raw, figment.profile() == "debug")
    }

    fn from_raw(raw: Raw, debug_profile: bool) -> Result<Settings, ConfigError> {
        let mut database =
            DatabaseTarget::parse(&raw.database_url).map_err(|problem| ConfigError {
                key: "database_url".into(),
                problem,
            })?;
        let schema = raw.database_schema.trim();
        let valid_schema = schema
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
            && schema.len() <= 63
            && schema
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            && !schema.starts_with("pg_");
        if !valid_schema {
            return Err(ConfigError {
                key: "database_schema".into(),
                problem: format!(
                    "must be a lowercase SQL name (letters, digits, `_`; not `pg_…`), got `{schema}`"
                ),
            });
        }
        if let DatabaseTarget::Postgres {
            schema: target,
            statement_cache,
            ..
        } = &mut database
        {
            *target = (schema != "public").then(|| schema.to_string());
            *statement_cache = raw.pg_statement_cache;
            if target.is_some() && !*statement_cache {
                // The schema is chosen per connection with `SET search_path`, which a
                // transaction pooler would apply to whichever server connection ran it.
                return Err(ConfigError {
                    key: "database_schema".into(),
                    problem: "needs a session of its own, which `pg_statement_cache = false` \
                              (a transaction pooler) does not give: set the role's search_path \
                              instead (ALTER ROLE … SET search_path = …) and leave this `public`"
                        .into(),
                });
            }
        }
        let pool_size = match raw.pool_size {
            Some(n) => positive("pool_size", n)?.min(1024) as u32,
            None => match database.backend() {
                Backend::Postgres => 16,
                Backend::Sqlite => 4,
            },
        };
        // Checked here too, so that a bad value is one clear line (Rocket reads the number).
        if let Some(n) = raw.workers {
            positive("workers", n)?;
        }
        let pool_timeout =
            Duration::from_millis(positive("pool_timeout_ms", raw.pool_timeout_ms)? as u64);
        let cookie_same_site = match raw.cookie_same_site.to_ascii_lowercase().as_str() {
            "lax" => SameSite::Lax,
            "strict" => SameSite::Strict,
            other => {
                return Err(ConfigError {
                    key: "cookie_same_site".into(),
                    problem: format!("must be `lax` or `strict` (got `{other}`)"),
                })
            }
        };
        let cookie_secure = raw.cookie_secure.unwrap_or(!debug_profile);
        // The `__Host-` prefix only works with `Secure`; without it browsers drop the cookie.
        let cookie_name = match raw.cookie_name {
            Some(name) => name,
            None if cookie_secure => "__Host-session".into(),
            None => "session".into(),
        };
        let valid_cookie_name = !cookie_name.is_empty()
            && cookie_name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if !valid_cookie_name {
            return Err(ConfigError {
                key: "cookie_name".into(),
                problem: format!("is not a valid cookie name (got `{cookie_name}`)"),
            });
        }
        // Browsers match the prefixes without regard to case.
        let lower = cookie_name.to_ascii_lowercase();
        if (lower.starts_with("__host-") || lower.starts_with("__secure-")) && !cookie_secure {
            return Err(ConfigError {
                key: "cookie_name".into(),
                problem:
                    "uses a `__Host-` or `__Secure-` prefix, which requires `cookie_secure = true`"
                        .into(),
            });
        }
        let idle = seconds("session_idle_timeout", raw.session_idle_timeout)?;
        let absolute = seconds("session_absolute_timeout", raw.session_absolute_timeout)?;
        let cleanup_schedule = raw.cleanup_schedule.trim().to_string();
        if cleanup_schedule.split_whitespace().count() != 6
            || tokio_cron_scheduler::Job::new(cleanup_schedule.as_str(), |_, _| {}).is_err()
        {
            return Err(ConfigError {
                key: "cleanup_schedule".into(),
                problem: format!(
                    "must be a 6-field cron expression with seconds, e.g. `0 0 * * * *` (got `{cleanup_schedule}`)"
                ),
            });
        }
        let cron_secret = raw.cron_secret.filter(|s| !s.is_empty());
        if let Some(secret) = &cron_secret {
            if secret.len() < 16 {
                return Err(ConfigError {
                    key: "CRON_SECRET".into(),
                    problem: "is too short (use at least 16 characters)".into(),
                });
            }
        }
        let login_url = raw
            .login_url
            .map(|u| u.trim().to_string())
            .filter(|u| !u.is_empty());
        if let Some(url) = &login_url {
            let absolute = url.starts_with("https://") || url.starts_with("http://");
            let path = url.starts_with('/') && !url.starts_with("//");
            // A backslash reads as `/` to browsers: `/\evil.example` is another site.
            if !(absolute || path)
                || url
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control() || c == '\\')
            {
                return Err(ConfigError {
                    key: "login_url".into(),
                    problem: format!(
                        "must be an http(s) URL or a path starting with `/` (got `{url}`)"
                    ),
                });
            }
        }
        let public_url = raw
            .public_url
            .map(|u| u.trim().trim_end_matches('/').to_string())
            .filter(|u| !u.is_empty());
        if let Some(url) = &public_url {
            let scheme = url.starts_with("https://") || url.starts_with("http://");
            let rest = url.split_once("://").map_or("", |(_, rest)| rest);
            if !scheme
                || rest.is_empty()
                || url.chars().any(|c| c.is_whitespace() || c.is_control())
            {
                return Err(ConfigError {
                    key: "public_url".into(),
                    problem: format!(
                        "must be an http(s) URL such as https://auth.example.com (got `{url}`)"
                    ),
                });
            }
        }
        let mail = mail_settings(raw.smtp_url, raw.mail_from, public_url.as_deref())?;
        if raw.require_verified_email && mail.is_none() {
            return Err(ConfigError {
                key: "require_verified_email".into(),
                problem: "needs `smtp_url` (with `mail_from` and `public_url`): without mail \
                          no address can be verified and nobody could sign in"
                    .into(),
            });
        }
        let mfa_key = match raw.mfa_key.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(text) => Some(MfaKey::parse(text).ok_or_else(|| {
                ConfigError {
                    key: "mfa_key".into(),
                    problem: "must be 32 bytes written in base64 (make one with \
                          `openssl rand -base64 32`)"
                        .into(),
                }
            })?),
        };
        let oidc_providers = oidc_providers(raw.oidc_providers, public_url.as_deref())?;
        Ok(Settings {
            oidc_providers,
            mfa_key,
            login_url,
            database,
            pool_size,
            pool_timeout,
            session_idle_timeout: idle,
            session_absolute_timeout: absolute,
            session_touch_interval: seconds("session_touch_interval", raw.session_touch_interval)?,
            cookie_name,
            cookie_secure,
            cookie_same_site,
            allowed_origins: raw
                .allowed_origins
                .into_iter()
                .map(|o| allowed_origin(&o))
                .collect::<Result<_, _>>()?,
            login_max_failures: positive("login_max_failures", raw.login_max_failures)?
                .min(1_000_000) as i32,
            login_backoff_base: seconds("login_backoff_base", raw.login_backoff_base)?,
            login_backoff_max: seconds("login_backoff_max", raw.login_backoff_max)?,
            ip_max_failures: positive("ip_max_failures", raw.ip_max_failures)?.min(1_000_000)
                as i32,
            ip_failure_window: seconds("ip_failure_window", raw.ip_failure_window)?,
            ip_max_registrations: positive("ip_max_registrations", raw.ip_max_registrations)?
                .min(1_000_000) as i32,
            cleanup_schedule,
            cleanup_batch_size: positive("cleanup_batch_size", raw.cleanup_batch_size)?,
            event_retention: seconds("event_retention", raw.event_retention)?,
            cron_secret,
            debug_profile,
            log_format: LogFormat::parse(&raw.log_format)?,
            login_queue_max: positive("login_queue_max", raw.login_queue_max)?.min(1_000_000)
                as usize,
            pg_statement_cache: raw.pg_statement_cache,
            mail,
            public_url,
            password_reset_ttl: seconds("password_reset_ttl", raw.password_reset_ttl)?,
            email_verification_ttl: seconds("email_verification_ttl", raw.email_verification_ttl)?,
            require_verified_email: raw.require_verified_email,
        })
    }

    /// The contract's defaults for a database, as a debug-profile server would see them.
    pub fn for_database(database_url: &str) -> Result<Settings, ConfigError> {
        Settings::from_raw(
            Raw {
                database_url: database_url.into(),
                ..Raw::default()
            },
            true,
        )
    }

    /// The configured backend.
    pub fn backend(&self) -> Backend {
        self.database.backend()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scheme_picks_backend() {
        assert!(matches!(
            DatabaseTarget::parse("postgres://u@h/db"),
            Ok(DatabaseTarget::Postgres { .. })
        ));
        assert!(matches!(
            DatabaseTarget::parse("postgresql://u@h/db"),
            Ok(DatabaseTarget::Postgres { .. })
        ));
        assert_eq!(
            DatabaseTarget::parse("sqlite://data/x.db"),
            Ok(DatabaseTarget::Sqlite("data/x.db".into()))
        );
        assert_eq!(
            DatabaseTarget::parse("/var/lib/x.db"),
            Ok(DatabaseTarget::Sqlite("/var/lib/x.db".into()))
        );
        assert!(DatabaseTarget::parse("mysql://h/db")
            .unwrap_err()
            .contains("mysql"));
        assert!(DatabaseTarget::parse("sqlite://").is_err());
        assert!(DatabaseTarget::parse("").is_err());
    }

    #[test]
    fn dangerous_values_are_refused() {
        // `null` is the Origin of sandboxed frames and file: pages, which anyone can make.
        for origin in [
            "null",
            "*",
            "",
            "https://app.example/path",
            "ftp://app.example",
            "app.example",
        ] {
            let raw = Raw {
                allowed_origins: vec![origin.to_string()],
                ..Raw::default()
            };
            let err = Settings::from_raw(raw, true).unwrap_err();
            assert_eq!(err.key, "allowed_origins", "{origin}");
        }
        let raw = Raw {
            allowed_origins: vec![
                "HTTPS://App.Example:443/".into(),
                "http://127.0.0.1:3000".into(),
            ],
            ..Raw::default()
        };
        assert_eq!(
            Settings::from_raw(raw, true).unwrap().allowed_origins,
            ["https://app.example", "http://127.0.0.1:3000"]
        );
        // A backslash reads as a slash to browsers: `/\evil.example` is another site.
        for url in ["/\\evil.example", "/a\\b", "//evil.example"] {
            let raw = Raw {
                login_url: Some(url.into()),
                ..Raw::default()
            };
            assert_eq!(
                Settings::from_raw(raw, true).unwrap_err().key,
                "login_url",
                "{url}"
            );
        }
        // A libpq connection string is not a SQLite file name, and its password is not echoed.
        let raw = Raw {
            database_url: "host=db.internal user=app password=hunter2 dbname=app".into(),
            ..Raw::default()
        };
        let err = Settings::from_raw(raw, true).unwrap_err();
        assert_eq!(err.key, "database_url");
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    #[test]
    fn zero_and_negative_durations_are_refused() {
        for (key, raw) in [
            (
                "session_idle_timeout",
                Raw {
                    session_idle_timeout: 0,
                    ..Raw::default()
                },
            ),
            (
                "session_absolute_timeout",
                Raw {
                    session_absolute_timeout: -5,
                    ..Raw::default()
                },
            ),
            (
                "pool_timeout_ms",
                Raw {
                    pool_timeout_ms: 0,
                    ..Raw::default()
                },
            ),
        ] {
            let err = Settings::from_raw(raw, false).unwrap_err();
            assert_eq!(err.key, key);
        }
    }

    #[test]
    fn profile_picks_cookie_defaults() {
        let debug = Settings::from_raw(Raw::default(), true).unwrap();
        assert_eq!(
            (debug.cookie_name.as_str(), debug.cookie_secure),
            ("session", false)
        );
        let release = Settings::from_raw(Raw::default(), false).unwrap();
        assert_eq!(
            (release.cookie_name.as_str(), release.cookie_secure),
            ("__Host-session", true)
        );
        let insecure = Raw {
            cookie_secure: Some(false),
            ..Raw::default()
        };
        assert_eq!(
            Settings::from_raw(insecure, false).unwrap().cookie_name,
            "session"
        );
        assert_eq!(
            Settings::for_database("postgres://h/db").unwrap().pool_size,
            16
        );
        assert_eq!(Settings::for_database("x.db").unwrap().pool_size, 4);
    }

    #[test]
    fn described_urls_hide_passwords() {
        assert_eq!(
            without_password("postgres://ann:s3cret@db:5432/app?sslmode=require&password=x"),
            "postgres://ann:***@db:5432/app?sslmode=require&password=***"
        );
        assert_eq!(
            without_password("postgres://ann@h1,h2/app"),
            "postgres://ann@h1,h2/app"
        );
    }

    #[test]
    fn only_the_debug_profile_is_insecure_by_default() {
        for (profile, secure) in [
            ("debug", false),
            ("release", true),
            ("production", true),
            ("staging", true),
        ] {
            let figment = Figment::new().select(profile);
            let settings = Settings::from_figment(&figment).unwrap();
            assert_eq!(settings.cookie_secure, secure, "{profile}");
        }
    }

    #[test]
    fn type_errors_read_as_what_is_expected() {
        let figment = Figment::new().merge(("pool_size", "lots"));
        let err = Settings::from_figment(&figment).unwrap_err();
        assert_eq!(err.key, "pool_size");
        assert!(err.problem.contains("a whole number"), "{}", err.problem);
        assert!(!err.problem.contains("i64"), "{}", err.problem);
        let figment = Figment::from(rocket::Config::default()).merge(("port", "abc"));
        let err = check_rocket_keys(&figment).unwrap_err();
        assert_eq!(err.key, "port");
        assert!(err.problem.contains("0 to 65535"), "{}", err.problem);
    }

    #[test]
    fn unknown_keys_are_named_with_the_nearest_known_one() {
        let figment = Figment::from(rocket::Config::default())
            .merge(("sesion_idle_timeout", 5))
            .merge(("port", 9000));
        let warnings = unknown_keys(&figment);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].contains("`sesion_idle_timeout`")
                && warnings[0].contains("`session_idle_timeout`"),
            "{warnings:?}"
        );
    }
}
