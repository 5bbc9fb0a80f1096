//! Typed configuration, extracted once from Rocket's Figment (`Rocket.toml` profiles, `ROCKET_*`
//! variables, plus plain `DATABASE_URL` and `CRON_SECRET`) and validated before anything starts.
//! Both binaries use [`figment`] and [`Settings::from_figment`]; tests build a `Settings` in code.

mod database;
mod mail;
mod providers;
mod sources;

use std::fmt;
use std::time::Duration;

use rocket::figment::Figment;
use serde::de::{DeserializeOwned, Deserializer};
use serde::{Deserialize, Serialize};

pub use database::{Backend, DatabaseTarget};
use mail::mail_settings;
pub use mail::MailSettings;
pub use providers::OidcProviderSettings;
use providers::{oidc_providers, RawOidcProvider};
pub use sources::{
    check_rocket_keys, config_file, default_workers, figment, keep_rocket_log_quiet, unknown_keys,
    with_plain_variables,
};

/// The session cookie's `SameSite` attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SameSite {
    /// `SameSite=Lax` (the default).
    Lax,
    /// `SameSite=Strict`.
    Strict,
}

/// A 6-field cron expression (with seconds), as the worker's scheduler reads one: its own
/// parser and settings (seconds required, day of month and day of week both applying).
fn parse_cron(expression: &str) -> Option<croner::Cron> {
    if expression.split_whitespace().count() != 6 {
        return None;
    }
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Required)
        .dom_and_dow(true)
        .build()
        .parse(expression)
        .ok()
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
    /// `cleanup_schedule`, parsed by the worker's scheduler's own parser (croner, with
    /// seconds, as tokio-cron-scheduler reads it).
    pub cleanup_schedule: croner::Cron,
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
    /// Where "now" comes from: the system clock (tests set an adjustable one; not a key).
    pub clock: crate::clock::Clock,
    /// `mfa_key`: the key TOTP secrets are sealed with before they are stored; `None` stores
    /// them as they are (see `auth::mfa`).
    pub mfa_key: Option<MfaKey>,
    /// `oidc_providers`: the OpenID providers people may sign in with (SPEC §8).
    pub oidc_providers: Vec<OidcProviderSettings>,
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

impl Drop for MfaKey {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
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

/// A value of an enumeration as written, read without regard to case or the space around it;
/// the enumeration's own `Deserialize` refuses anything else, naming the values it takes.
fn any_case<'de, D: Deserializer<'de>, T: DeserializeOwned>(d: D) -> Result<T, D::Error> {
    let text = String::deserialize(d)?;
    let text = text.trim().to_ascii_lowercase();
    T::deserialize(serde::de::value::StrDeserializer::<D::Error>::new(&text))
}

/// The raw shape read from Figment; every field has the contract's default. Its fields are
/// latchkey's keys (the unknown-key warning reads them off its defaults).
#[derive(Deserialize, Serialize)]
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
    #[serde(deserialize_with = "any_case")]
    cookie_same_site: SameSite,
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
    #[serde(deserialize_with = "any_case")]
    log_format: LogFormat,
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
            cookie_same_site: SameSite::Lax,
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
            log_format: LogFormat::Text,
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

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines (coloured only on a terminal).
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

impl LogFormat {
    /// The format `figment` asks for, read before anything else so that even the
    /// configuration's own errors and warnings are written in it. A bad value is reported
    /// later by [`Settings::from_figment`]; until then the format is text.
    pub fn from_figment(figment: &Figment) -> LogFormat {
        figment
            .find_value("log_format")
            .ok()
            .and_then(|value| any_case::<_, LogFormat>(&value).ok())
            .unwrap_or(LogFormat::Text)
    }
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

/// `database_url`, `database_schema`, `pg_statement_cache`, `pool_size` (by backend when not
/// set), `workers` and `pool_timeout_ms`.
fn database_settings(raw: &Raw) -> Result<(DatabaseTarget, u32, Duration), ConfigError> {
    let mut database = DatabaseTarget::parse(&raw.database_url).map_err(|problem| ConfigError {
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
    Ok((database, pool_size, pool_timeout))
}

/// `cookie_name` and `cookie_secure`: secure everywhere but the debug profile, and the
/// `__Host-` prefix only on a secure cookie.
fn cookie_settings(
    name: Option<String>,
    secure: Option<bool>,
    debug_profile: bool,
) -> Result<(String, bool), ConfigError> {
    let cookie_secure = secure.unwrap_or(!debug_profile);
    // The `__Host-` prefix only works with `Secure`; without it browsers drop the cookie.
    let cookie_name = match name {
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
    Ok((cookie_name, cookie_secure))
}

/// An absolute http(s) URL with a host.
fn is_http_url(text: &str) -> bool {
    url::Url::parse(text).is_ok_and(|url| {
        matches!(url.scheme(), "http" | "https") && url.host_str().is_some_and(|h| !h.is_empty())
    })
}

/// `login_url`: an http(s) URL or a path on this site.
fn login_url(login_url: Option<String>) -> Result<Option<String>, ConfigError> {
    let login_url = login_url
        .map(|u| u.trim().to_string())
        .filter(|u| !u.is_empty());
    if let Some(url) = &login_url {
        let path = url.starts_with('/') && !url.starts_with("//");
        // A backslash reads as `/` to browsers: `/\evil.example` is another site.
        let plain = !url
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '\\');
        if !(plain && (path || is_http_url(url))) {
            return Err(ConfigError {
                key: "login_url".into(),
                problem: format!(
                    "must be an http(s) URL or a path starting with `/` (got `{url}`)"
                ),
            });
        }
    }
    Ok(login_url)
}

/// `public_url`: latchkey's own http(s) base, without a trailing slash.
fn public_url(public_url: Option<String>) -> Result<Option<String>, ConfigError> {
    let public_url = public_url
        .map(|u| u.trim().trim_end_matches('/').to_string())
        .filter(|u| !u.is_empty());
    if let Some(url) = &public_url {
        if !is_http_url(url) || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(ConfigError {
                key: "public_url".into(),
                problem: format!(
                    "must be an http(s) URL such as https://auth.example.com (got `{url}`)"
                ),
            });
        }
    }
    Ok(public_url)
}

impl Settings {
    /// Extracts and validates the configuration from a Figment (see [`figment`]).
    pub fn from_figment(figment: &Figment) -> Result<Settings, ConfigError> {
        let raw: Raw = figment.extract().map_err(ConfigError::from_figment)?;
        Settings::from_raw(raw, figment.profile() == "debug")
    }

    fn from_raw(raw: Raw, debug_profile: bool) -> Result<Settings, ConfigError> {
        let (database, pool_size, pool_timeout) = database_settings(&raw)?;
        let (cookie_name, cookie_secure) =
            cookie_settings(raw.cookie_name, raw.cookie_secure, debug_profile)?;
        let cookie_same_site = raw.cookie_same_site;
        let idle = seconds("session_idle_timeout", raw.session_idle_timeout)?;
        let absolute = seconds("session_absolute_timeout", raw.session_absolute_timeout)?;
        let cleanup_schedule =
            parse_cron(raw.cleanup_schedule.trim()).ok_or_else(|| ConfigError {
                key: "cleanup_schedule".into(),
                problem: format!(
                    "must be a 6-field cron expression with seconds, e.g. `0 0 * * * *` (got `{}`)",
                    raw.cleanup_schedule.trim()
                ),
            })?;
        let cron_secret = raw.cron_secret.filter(|s| !s.is_empty());
        if let Some(secret) = &cron_secret {
            if secret.len() < 16 {
                return Err(ConfigError {
                    key: "CRON_SECRET".into(),
                    problem: "is too short (use at least 16 characters)".into(),
                });
            }
        }
        let login_url = login_url(raw.login_url)?;
        let public_url = public_url(raw.public_url)?;
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
            log_format: raw.log_format,
            login_queue_max: positive("login_queue_max", raw.login_queue_max)?.min(1_000_000)
                as usize,
            pg_statement_cache: raw.pg_statement_cache,
            mail,
            public_url,
            password_reset_ttl: seconds("password_reset_ttl", raw.password_reset_ttl)?,
            email_verification_ttl: seconds("email_verification_ttl", raw.email_verification_ttl)?,
            require_verified_email: raw.require_verified_email,
            clock: crate::clock::Clock::system(),
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
