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
    /// `postgres://…` or `postgresql://…`: the URL as given, and `database_schema` when it is
    /// not `public` (every table and migration of latchkey lives there).
    Postgres { url: String, schema: Option<String> },
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
            None => Ok(Self::Sqlite(PathBuf::from(url))),
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
    /// How many async workers may run a read themselves at once (see `Db::read_inline`): one,
    /// the session lookup's single lane (`auth::lookup`), or none with a single worker, which
    /// must never block.
    pub inline_reads: usize,
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
    /// True when the selected profile is `release`.
    pub release: bool,
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
    cleanup_schedule: String,
    cleanup_batch_size: i64,
    event_retention: i64,
    cron_secret: Option<String>,
    login_url: Option<String>,
    database_schema: String,
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
            cleanup_schedule: "0 0 * * * *".into(),
            cleanup_batch_size: 10_000,
            event_retention: 90 * 86_400,
            cron_secret: None,
            login_url: None,
            database_schema: "public".into(),
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
        // Rocket's own per-request lines would print query strings (a token pasted into a
        // wrong URL, say); latchkey logs what matters itself. `ROCKET_LOG_LEVEL` still wins.
        .merge(Serialized::default("log_level", "critical"))
        .merge(Toml::file(Env::var_or("ROCKET_CONFIG", "Rocket.toml")).nested())
        .merge(Env::prefixed("ROCKET_").ignore(&["PROFILE"]).global());
    with_plain_variables(&rocket_sources).select(profile)
}

/// The application's Figment with the plain variables `DATABASE_URL` and `CRON_SECRET` on top
/// (what [`crate::Latchkey::fairing`] reads inside a host application).
pub fn with_plain_variables(figment: &Figment) -> Figment {
    figment
        .clone()
        .merge(Env::raw().only(&["DATABASE_URL", "CRON_SECRET"]).global())
}

/// Rocket's async workers: three per core rather than Rocket's one, because the worker running
/// the session lookup inline (`Db::read_inline`) waits for the database meanwhile. (Measured on
/// 2 cores with PostgreSQL local, /me at c=64: 4 workers ~20k per second, 6 workers ~25k.)
pub fn default_workers() -> usize {
    3 * std::thread::available_parallelism().map_or(1, |n| n.get())
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

impl Settings {
    /// Extracts and validates the configuration from a Figment (see [`figment`]).
    pub fn from_figment(figment: &Figment) -> Result<Settings, ConfigError> {
        let raw: Raw = figment.extract().map_err(|e| {
            let e = e.into_iter().next().expect("figment errors are non-empty");
            ConfigError {
                key: e.path.join("."),
                problem: format!("is invalid: {}", e.kind),
            }
        })?;
        let release = figment.profile() == "release";
        Settings::from_raw(raw, release)
    }

    fn from_raw(raw: Raw, release: bool) -> Result<Settings, ConfigError> {
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
        if let DatabaseTarget::Postgres { schema: target, .. } = &mut database {
            *target = (schema != "public").then(|| schema.to_string());
        }
        let pool_size = match raw.pool_size {
            Some(n) => positive("pool_size", n)?.min(1024) as u32,
            None => match database.backend() {
                Backend::Postgres => 16,
                Backend::Sqlite => 4,
            },
        };
        let workers = match raw.workers {
            Some(n) => positive("workers", n)?.min(1024) as usize,
            None => default_workers(),
        };
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
        let cookie_secure = raw.cookie_secure.unwrap_or(release);
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
            if !(absolute || path) || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(ConfigError {
                    key: "login_url".into(),
                    problem: format!(
                        "must be an http(s) URL or a path starting with `/` (got `{url}`)"
                    ),
                });
            }
        }
        Ok(Settings {
            login_url,
            database,
            pool_size,
            pool_timeout,
            inline_reads: usize::from(workers > 1),
            session_idle_timeout: idle,
            session_absolute_timeout: absolute,
            session_touch_interval: seconds("session_touch_interval", raw.session_touch_interval)?,
            cookie_name,
            cookie_secure,
            cookie_same_site,
            allowed_origins: raw
                .allowed_origins
                .into_iter()
                .map(|o| o.trim().trim_end_matches('/').to_ascii_lowercase())
                .collect(),
            login_max_failures: positive("login_max_failures", raw.login_max_failures)?
                .min(1_000_000) as i32,
            login_backoff_base: seconds("login_backoff_base", raw.login_backoff_base)?,
            login_backoff_max: seconds("login_backoff_max", raw.login_backoff_max)?,
            ip_max_failures: positive("ip_max_failures", raw.ip_max_failures)?.min(1_000_000)
                as i32,
            ip_failure_window: seconds("ip_failure_window", raw.ip_failure_window)?,
            cleanup_schedule,
            cleanup_batch_size: positive("cleanup_batch_size", raw.cleanup_batch_size)?,
            event_retention: seconds("event_retention", raw.event_retention)?,
            cron_secret,
            release,
        })
    }

    /// The contract's defaults for a database, as a debug-profile server would see them.
    pub fn for_database(database_url: &str) -> Result<Settings, ConfigError> {
        Settings::from_raw(
            Raw {
                database_url: database_url.into(),
                ..Raw::default()
            },
            false,
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
        let debug = Settings::from_raw(Raw::default(), false).unwrap();
        assert_eq!(
            (debug.cookie_name.as_str(), debug.cookie_secure),
            ("session", false)
        );
        let release = Settings::from_raw(Raw::default(), true).unwrap();
        assert_eq!(
            (release.cookie_name.as_str(), release.cookie_secure),
            ("__Host-session", true)
        );
        let insecure = Raw {
            cookie_secure: Some(false),
            ..Raw::default()
        };
        assert_eq!(
            Settings::from_raw(insecure, true).unwrap().cookie_name,
            "session"
        );
        assert_eq!(
            Settings::for_database("postgres://h/db").unwrap().pool_size,
            16
        );
        assert_eq!(Settings::for_database("x.db").unwrap().pool_size, 4);
    }
}
