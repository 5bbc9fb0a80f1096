//! Login throttling, shared by every instance through `login_throttles`:
//! - per email: after `login_max_failures` consecutive failures, back off for
//!   `login_backoff_base`, doubling per further failure up to `login_backoff_max`. A streak is
//!   forgotten a day after it started (or on a successful login).
//! - per client IP: `ip_max_failures` failures within `ip_failure_window` (a fixed window
//!   starting at the first failure) lock that IP out until the window ends.
//!
//! Keys hash the email, so the table holds no addresses in the clear.
//!
//! An attempt is taken out of both budgets (email and IP) before its password is checked, in
//! one transaction that holds the counters' row locks: attempts that arrive together take
//! turns, on every instance, and no more than the budget are ever checked. A success gives the
//! IP's attempt back and ends the email's streak; a failure keeps both.

use chrono::{Duration, NaiveDateTime};
use diesel::result::Error as DieselError;
use diesel::{Connection, QueryResult};
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
        LoginKeys {
            email: format!("email:{}", hashed(normalized_email)),
            ip: ip.map(|ip| ip_key("ip", ip)),
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

fn email_refusal(settings: &Settings, row: &Throttle, now: NaiveDateTime) -> Option<i64> {
    if row.failures < settings.login_max_failures {
        return None;
    }
    let until = row.last_failure_at + email_backoff(settings, row.failures);
    (until > now).then(|| seconds_until(until, now))
}

fn ip_refusal(settings: &Settings, row: &Throttle, now: NaiveDateTime) -> Option<i64> {
    let until = row.window_start + settings.ip_failure_window;
    (until > now && row.failures >= settings.ip_max_failures).then(|| seconds_until(until, now))
}

/// Takes this attempt out of the email's and the IP's budgets, or refuses it:
/// `Some(seconds)` means answer 429 with `Retry-After: seconds` (nothing was counted). Opens
/// its own transaction, so the locks last only until the attempt is counted.
pub fn take_attempt(
    conn: &mut DbConnection,
    settings: &Settings,
    keys: &LoginKeys,
    now: NaiveDateTime,
) -> QueryResult<Option<i64>> {
    let taken = conn.transaction(|conn| {
        // Always email first, then IP: every transaction locks in the same order.
        let email_cutoff = now - email_streak_window(settings);
        Throttle::take(conn, &keys.email, now, email_cutoff, |row| {
            email_refusal(settings, row, now)
        })?
        .map_err(Taken::Refused)?;
        if let Some(key) = &keys.ip {
            let ip_cutoff = now - settings.ip_failure_window;
            Throttle::take(conn, key, now, ip_cutoff, |row| {
                ip_refusal(settings, row, now)
            })?
            .map_err(Taken::Refused)?;
        }
        Ok(())
    });
    taken.refusal()
}

/// Why the counting transaction ended without counting: a refusal rolls it back, like an error.
enum Taken {
    Refused(i64),
    Db(DieselError),
}

trait Refusal {
    /// `Some(seconds)` for a refusal, `None` when the attempt was counted.
    fn refusal(self) -> QueryResult<Option<i64>>;
}

impl Refusal for Result<(), Taken> {
    fn refusal(self) -> QueryResult<Option<i64>> {
        match self {
            Ok(()) => Ok(None),
            Err(Taken::Refused(wait)) => Ok(Some(wait.max(1))),
            Err(Taken::Db(e)) => Err(e),
        }
    }
}

impl From<DieselError> for Taken {
    fn from(e: DieselError) -> Taken {
        Taken::Db(e)
    }
}

/// A budget of `max` requests per `window` for each `(key, max)` (the mail endpoints: resets
/// per address and per IP, resends per account), counted in the same table as the login
/// counters and shared by every instance. `Some(seconds)` means refused (429), nothing counted.
pub fn take_budget(
    conn: &mut DbConnection,
    budgets: &[(String, i32)],
    window: Duration,
    now: NaiveDateTime,
) -> QueryResult<Option<i64>> {
    let taken = conn.transaction(|conn| {
        for (key, max) in budgets {
            let max = *max;
            Throttle::take(conn, key, now, now - window, |row| {
                let until = row.window_start + window;
                (row.failures >= max && until > now).then(|| seconds_until(until, now))
            })?
            .map_err(Taken::Refused)?;
        }
        Ok(())
    });
    taken.refusal()
}

/// Whether `key`'s budget of `max` per `window` is spent, without counting anything:
/// `Some(seconds)` to wait. For budgets that count only failures, checked before the attempt.
pub fn spent(
    conn: &mut DbConnection,
    key: &str,
    max: i32,
    window: Duration,
    now: NaiveDateTime,
) -> QueryResult<Option<i64>> {
    Ok(Throttle::find(conn, key)?.and_then(|row| {
        let until = row.window_start + window;
        (row.failures >= max && until > now).then(|| seconds_until(until, now))
    }))
}

/// The key of `purpose`'s budget for a client address. An IPv6 client is counted by its /64:
/// one subscriber's network, whose every one of 2^64 addresses the client may use in turn.
/// An IPv4 address (and an IPv4-mapped IPv6 one) counts whole.
pub fn ip_key(purpose: &str, ip: &str) -> String {
    use std::net::IpAddr;
    match ip.parse::<IpAddr>() {
        Ok(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => format!("{purpose}:{v4}"),
            None => {
                let s = v6.segments();
                format!("{purpose}:{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
        Ok(IpAddr::V4(v4)) => format!("{purpose}:{v4}"),
        Err(_) => format!("{purpose}:{ip}"),
    }
}

/// The key of `purpose`'s budget for an address (hashed, like the login keys).
pub fn email_key(purpose: &str, normalized_email: &str) -> String {
    format!("{purpose}-email:{}", hashed(normalized_email))
}

/// An address as the counters' keys hold it: SHA-256 in hex, never the address itself.
fn hashed(normalized_email: &str) -> String {
    Sha256::digest(normalized_email.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Ends an address's failed-login streak (a password reset proved the owner).
pub fn forget_failures(
    conn: &mut DbConnection,
    normalized_email: &str,
    now: NaiveDateTime,
) -> QueryResult<()> {
    Throttle::clear(conn, &LoginKeys::new(normalized_email, None).email, now).map(drop)
}

/// A successful login ends the email's streak and gives the IP its attempt back (the IP's
/// window runs its course).
pub fn record_success(
    conn: &mut DbConnection,
    keys: &LoginKeys,
    now: NaiveDateTime,
) -> QueryResult<()> {
    Throttle::clear(conn, &keys.email, now)?;
    if let Some(key) = &keys.ip {
        Throttle::give_back(conn, key)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_clients_count_by_their_64() {
        assert_eq!(
            ip_key("ip", "2001:db8:1:2:aaaa::1"),
            ip_key("ip", "2001:db8:1:2:ffff:1:2:3")
        );
        assert_ne!(
            ip_key("ip", "2001:db8:1:2::1"),
            ip_key("ip", "2001:db8:1:3::1")
        );
        assert_eq!(ip_key("ip", "::ffff:192.0.2.7"), "ip:192.0.2.7");
        assert_eq!(ip_key("ip", "192.0.2.7"), "ip:192.0.2.7");
        assert_ne!(ip_key("ip", "192.0.2.7"), ip_key("ip", "192.0.2.8"));
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let settings = Settings::for_database("x.db").unwrap();
        let secs = |n| email_backoff(&settings, n).num_seconds();
        assert_eq!((secs(5), secs(6), secs(7)), (30, 60, 120));
        assert_eq!(secs(10), 900);
        assert_eq!(secs(1000), 900);
    }
}
