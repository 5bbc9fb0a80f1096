//! Where the configuration comes from (Rocket's Figment, with latchkey's changes) and how its
//! problems are told: one line per error, in words; a warning per key nobody knows.

use std::path::PathBuf;

use rocket::figment::providers::{Env, Format, Serialized, Toml};
use rocket::figment::value::Value;
use rocket::figment::{Figment, Profile};

use super::{ConfigError, Raw};

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
/// blocking pool), so more of them are no faster (bench/RESULTS.md has the runs); fewer
/// threads use less memory.
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

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
                let known: Vec<String> = known.iter().map(|k| format!("`{k}`")).collect();
                let choices = match known.as_slice() {
                    [one, other] => format!("{one} or {other}"),
                    _ => format!("one of {}", known.join(", ")),
                };
                format!("{source} must be {choices} (got `{actual}`)")
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
    let keys_of = |value: Result<Value, _>| match value {
        Ok(Value::Dict(_, dict)) => dict.into_keys().collect::<Vec<_>>(),
        _ => Vec::new(),
    };
    // Rocket's keys and latchkey's, each read off its own defaults: no list to keep in step.
    let rocket_keys = keys_of(Value::serialize(rocket::Config::default()));
    let latchkey_keys = keys_of(Value::serialize(Raw::default()));
    let known: Vec<&str> = rocket_keys
        .iter()
        .chain(&latchkey_keys)
        .map(String::as_str)
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
