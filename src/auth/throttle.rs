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
use diesel::QueryResult;
use sha2::{Digest, Sha256};

use crate::config::Settings;
use crate::db::models::throttle::Throttle;
use crate::db::{refuse, transaction, DbConnection};
use crate::domain::UserId;

/// How long an email's failure streak is remembered without a success.
pub fn email_streak_window(settings: &Settings) -> Duration {
    Duration::days(1).max(settings.login_backoff_max)
}

/// Counters older than this are of no further use and the cleanup removes them.
pub fn retention(settings: &Settings) -> Duration {
    email_streak_window(settings).max(settings.ip_failure_window)
}

/// What a counter counts. Its key is the budget's prefix and whose budget it is (a hashed
/// address, a client network, an account); the prefixes are stored and must not change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Budget {
    /// Sign-in failures of an address (the backoff).
    LoginEmail,
    /// Sign-in failures of a client.
    LoginIp,
    /// Registrations of a client (`ip_max_registrations`).
    Register,
    /// Provider sign-ins a client starts.
    OidcStart,
    /// Password resets asked for an address.
    ResetEmail,
    /// Password resets a client asks for.
    ResetIp,
    /// Verification mails an account asks for again.
    Resend,
    /// Second-factor codes checked for an account.
    CodeCheck,
    /// Wrong `CRON_SECRET` tries of a client.
    CronIp,
}

impl Budget {
    fn prefix(self) -> &'static str {
        match self {
            Budget::LoginEmail => "email",
            Budget::LoginIp => "ip",
            Budget::Register => "register-ip",
            Budget::OidcStart => "oidc-start",
            Budget::ResetEmail => "reset-email",
            Budget::ResetIp => "reset-ip",
            Budget::Resend => "resend",
            Budget::CodeCheck => "mfa-user",
            Budget::CronIp => "cron-ip",
        }
    }
}

/// The key of one counter in `login_throttles`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThrottleKey(String);

impl ThrottleKey {
    /// `budget` for a client address. An IPv6 client is counted by its /64: one subscriber's
    /// network, whose every one of 2^64 addresses the client may use in turn. An IPv4 address
    /// (and an IPv4-mapped IPv6 one) counts whole.
    pub fn ip(budget: Budget, ip: &str) -> ThrottleKey {
        use std::net::IpAddr;
        let purpose = budget.prefix();
        ThrottleKey(match ip.parse::<IpAddr>() {
            Ok(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
                Some(v4) => format!("{purpose}:{v4}"),
                None => {
                    let s = v6.segments();
                    format!("{purpose}:{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
                }
            },
            Ok(IpAddr::V4(v4)) => format!("{purpose}:{v4}"),
            Err(_) => format!("{purpose}:{ip}"),
        })
    }

    /// `budget` for an address: SHA-256 in hex, so the table holds no addresses.
    pub fn email(budget: Budget, normalized_email: &str) -> ThrottleKey {
        let hashed: String = Sha256::digest(normalized_email.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        ThrottleKey(format!("{}:{hashed}", budget.prefix()))
    }

    /// `budget` for an account.
    pub fn user(budget: Budget, user_id: &UserId) -> ThrottleKey {
        ThrottleKey(format!("{}:{user_id}", budget.prefix()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

pub struct LoginKeys {
    email: ThrottleKey,
    ip: Option<ThrottleKey>,
}

impl LoginKeys {
    pub fn new(normalized_email: &str, ip: Option<&str>) -> LoginKeys {
        LoginKeys {
            email: ThrottleKey::email(Budget::LoginEmail, normalized_email),
            ip: ip.map(|ip| ThrottleKey::ip(Budget::LoginIp, ip)),
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
    let taken = transaction(conn, |conn| {
        // Always email first, then IP: every transaction locks in the same order.
        let email_cutoff = now - email_streak_window(settings);
        let key = keys.email.as_str();
        if let Err(wait) = Throttle::take(conn, key, now, email_cutoff, |row| {
            email_refusal(settings, row, now)
        })? {
            return refuse(wait);
        }
        if let Some(key) = &keys.ip {
            let ip_cutoff = now - settings.ip_failure_window;
            let key = key.as_str();
            if let Err(wait) = Throttle::take(conn, key, now, ip_cutoff, |row| {
                ip_refusal(settings, row, now)
            })? {
                return refuse(wait);
            }
        }
        Ok(())
    })?;
    Ok(taken.err().map(|wait| wait.max(1)))
}

/// A budget of `max` requests per `window` for each `(key, max)` (the mail endpoints: resets
/// per address and per IP, resends per account), counted in the same table as the login
/// counters and shared by every instance. `Some(seconds)` means refused (429), nothing counted.
pub fn take_budget(
    conn: &mut DbConnection,
    budgets: &[(ThrottleKey, i32)],
    window: Duration,
    now: NaiveDateTime,
) -> QueryResult<Option<i64>> {
    let taken = transaction(conn, |conn| {
        for (key, max) in budgets {
            let max = *max;
            if let Err(wait) = Throttle::take(conn, key.as_str(), now, now - window, |row| {
                let until = row.window_start + window;
                (row.failures >= max && until > now).then(|| seconds_until(until, now))
            })? {
                return refuse(wait);
            }
        }
        Ok(())
    })?;
    Ok(taken.err().map(|wait| wait.max(1)))
}

/// Whether `key`'s budget of `max` per `window` is spent, without counting anything:
/// `Some(seconds)` to wait. For budgets that count only failures, checked before the attempt.
pub fn spent(
    conn: &mut DbConnection,
    key: &ThrottleKey,
    max: i32,
    window: Duration,
    now: NaiveDateTime,
) -> QueryResult<Option<i64>> {
    Ok(Throttle::find(conn, key.as_str())?.and_then(|row| {
        let until = row.window_start + window;
        (row.failures >= max && until > now).then(|| seconds_until(until, now))
    }))
}

/// Ends an address's failed-login streak (a password reset proved the owner).
pub fn forget_failures(
    conn: &mut DbConnection,
    normalized_email: &str,
    now: NaiveDateTime,
) -> QueryResult<()> {
    Throttle::clear(
        conn,
        LoginKeys::new(normalized_email, None).email.as_str(),
        now,
    )
    .map(drop)
}

/// A successful login ends the email's streak and gives the IP its attempt back (the IP's
/// window runs its course).
pub fn record_success(
    conn: &mut DbConnection,
    keys: &LoginKeys,
    now: NaiveDateTime,
) -> QueryResult<()> {
    Throttle::clear(conn, keys.email.as_str(), now)?;
    if let Some(key) = &keys.ip {
        Throttle::give_back(conn, key.as_str())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_clients_count_by_their_64() {
        assert_eq!(
            ThrottleKey::ip(Budget::LoginIp, "2001:db8:1:2:aaaa::1"),
            ThrottleKey::ip(Budget::LoginIp, "2001:db8:1:2:ffff:1:2:3")
        );
        assert_ne!(
            ThrottleKey::ip(Budget::LoginIp, "2001:db8:1:2::1"),
            ThrottleKey::ip(Budget::LoginIp, "2001:db8:1:3::1")
        );
        assert_eq!(
            ThrottleKey::ip(Budget::LoginIp, "::ffff:192.0.2.7").as_str(),
            "ip:192.0.2.7"
        );
        assert_eq!(
            ThrottleKey::ip(Budget::LoginIp, "192.0.2.7").as_str(),
            "ip:192.0.2.7"
        );
        assert_ne!(
            ThrottleKey::ip(Budget::LoginIp, "192.0.2.7"),
            ThrottleKey::ip(Budget::LoginIp, "192.0.2.8")
        );
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
