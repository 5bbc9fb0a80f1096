//! Login throttling, shared by every instance through `login_throttles`:
//! - per email: after `login_max_failures` consecutive failures, back off for
//!   `login_backoff_base`, doubling per further failure up to `login_backoff_max`. A streak is
//!   forgotten a day after it started (or on a successful login).
//! - per client IP: `ip_max_failures` failures within `ip_failure_window` (a fixed window
//!   starting at the first failure) lock that IP out until the window ends.
//!
//! Keys hash the email, so the table holds no addresses in the clear.

use chrono::{Duration, NaiveDateTime};
use diesel::QueryResult;
use sha2::{Digest, Sha256};

use crate::config::Settings;
use crate::db::models::throttle::Throttle;
use crate::db::DbConnection;

/// How long an email's failure streak is remembered without a success.
pub fn email_streak_window(settings: &Settings) -> Duration {
    Duration::days(1).max(settings.login_backoff_max)
}

/// Counters older than this are of no further use and the cleanup removes them.
pub fn retention(settings: &Settings) -> Duration {
    email_streak_window(settings).max(settings.ip_failure_window)
}

pub struct LoginKeys {
    email: String,
    ip: Option<String>,
}

impl LoginKeys {
    pub fn new(normalized_email: &str, ip: Option<&str>) -> LoginKeys {
        let digest = Sha256::digest(normalized_email.as_bytes());
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        LoginKeys {
            email: format!("email:{hex}"),
            ip: ip.map(|ip| format!("ip:{ip}")),
        }
    }
}

fn email_backoff(settings: &Settings, failures: i32) -> Duration {
    let doublings = (failures - settings.login_max_failures).clamp(0, 30) as u32;
    let seconds = settings
        .login_backoff_base
        .num_seconds()
        .saturating_mul(1i64 << doublings);
    Duration::seconds(seconds).min(settings.login_backoff_max)
}

fn seconds_until(until: NaiveDateTime, now: NaiveDateTime) -> i64 {
    let millis = (until - now).num_milliseconds();
    (millis + 999) / 1000
}

/// `Some(seconds)` when this attempt must be refused with 429 and `Retry-After: seconds`.
pub fn locked_for(
    conn: &mut DbConnection,
    settings: &Settings,
    keys: &LoginKeys,
    now: NaiveDateTime,
) -> QueryResult<Option<i64>> {
    let mut wait = 0;
    if let Some(row) = Throttle::find(conn, &keys.email)? {
        let live = row.window_start > now - email_streak_window(settings);
        if live && row.failures >= settings.login_max_failures {
            let until = row.last_failure_at + email_backoff(settings, row.failures);
            if until > now {
                wait = wait.max(seconds_until(until, now));
            }
        }
    }
    if let Some(key) = &keys.ip {
        if let Some(row) = Throttle::find(conn, key)? {
            let until = row.window_start + settings.ip_failure_window;
            if until > now && row.failures >= settings.ip_max_failures {
                wait = wait.max(seconds_until(until, now));
            }
        }
    }
    Ok((wait > 0).then_some(wait))
}

pub fn record_failure(
    conn: &mut DbConnection,
    settings: &Settings,
    keys: &LoginKeys,
    now: NaiveDateTime,
) -> QueryResult<()> {
    Throttle::record_failure(conn, &keys.email, now, now - email_streak_window(settings))?;
    if let Some(key) = &keys.ip {
        Throttle::record_failure(conn, key, now, now - settings.ip_failure_window)?;
    }
    Ok(())
}

/// A successful login ends the email's streak (the IP's window runs its course).
pub fn record_success(conn: &mut DbConnection, keys: &LoginKeys) -> QueryResult<()> {
    Throttle::clear(conn, &keys.email).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let settings = Settings::for_database("x.db").unwrap();
        let secs = |n| email_backoff(&settings, n).num_seconds();
        assert_eq!((secs(5), secs(6), secs(7)), (30, 60, 120));
        assert_eq!(secs(10), 900);
        assert_eq!(secs(1000), 900);
    }
}
