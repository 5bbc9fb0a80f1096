//! The application's clock: the one source of "now" (UTC, microsecond precision, which both
//! databases store exactly). Queries get times bound from here, never the database's `now()`.
//! The service reads it through its [`Clock`] (carried by `Db`), which tests can move forward
//! to test expiry exactly instead of sleeping.

use std::fmt;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use chrono::{NaiveDateTime, SubsecRound, Utc};
use serde::{Serialize, Serializer};

/// The system's now, in UTC, to the microsecond (for tools and tests; the service asks its
/// [`Clock`]).
pub fn system_now() -> NaiveDateTime {
    Utc::now().naive_utc().trunc_subsecs(6)
}

/// Where the service's "now" comes from: the system clock, or (for tests) the system clock
/// moved forward by what [`Clock::advance`] added, or a stopped clock that only `advance`
/// moves. Clones share the same offset.
#[derive(Clone, Default)]
pub struct Clock {
    /// Microseconds added; `None` for the system clock itself.
    offset: Option<Arc<AtomicI64>>,
    /// A stopped clock's start; `None` when the clock runs with the system's.
    stopped_at: Option<NaiveDateTime>,
}

impl Clock {
    /// The system clock.
    pub fn system() -> Clock {
        Clock::default()
    }

    /// A clock that runs with the system's and can be moved forward (tests).
    pub fn adjustable() -> Clock {
        Clock {
            offset: Some(Arc::new(AtomicI64::new(0))),
            stopped_at: None,
        }
    }

    /// A clock stopped at the system's time now, that only [`Clock::advance`] moves (tests
    /// of exact times).
    pub fn stopped() -> Clock {
        Clock {
            stopped_at: Some(system_now()),
            ..Clock::adjustable()
        }
    }

    /// Now, in UTC, to the microsecond.
    pub fn now(&self) -> NaiveDateTime {
        let now = self.stopped_at.unwrap_or_else(system_now);
        match &self.offset {
            Some(offset) => now + chrono::Duration::microseconds(offset.load(Ordering::Acquire)),
            None => now,
        }
    }

    /// Moves an adjustable clock forward by `by`; the system clock cannot be moved (panics:
    /// only tests call this).
    pub fn advance(&self, by: chrono::Duration) {
        let offset = self
            .offset
            .as_ref()
            .expect("only an adjustable clock can be moved");
        let micros = by.num_microseconds().expect("a duration a test can use");
        offset.fetch_add(micros, Ordering::AcqRel);
    }
}

impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.offset {
            None => f.write_str("Clock::system"),
            Some(offset) => write!(
                f,
                "Clock::adjustable(+{}us)",
                offset.load(Ordering::Acquire)
            ),
        }
    }
}

/// RFC 3339 in UTC with a `Z`, as every timestamp in the API is written.
pub fn rfc3339(t: NaiveDateTime) -> String {
    Rfc3339(t).to_string()
}

/// A timestamp that serializes as RFC 3339 (`2026-11-27T12:00:00Z`) straight into the output.
#[derive(Debug, Clone, Copy)]
pub struct Rfc3339(pub NaiveDateTime);

impl fmt::Display for Rfc3339 {
    /// Written field by field: chrono's `format` would parse a format string on every call,
    /// and every answer about a session writes several of these.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use chrono::{Datelike, Timelike};
        let (date, time) = (self.0.date(), self.0.time());
        let year = date.year();
        if !(0..=9999).contains(&year) {
            // Outside four digits (never a real session time): chrono's own spelling.
            return write!(f, "{}", self.0.format("%Y-%m-%dT%H:%M:%SZ"));
        }
        let digits = |n: u32| [b'0' + (n / 10) as u8, b'0' + (n % 10) as u8];
        let (y, mo, d) = (year as u32, date.month(), date.day());
        let (h, mi, s) = (time.hour(), time.minute(), time.second());
        let mut out = [0u8; 20];
        out[..4].copy_from_slice(&[
            b'0' + (y / 1000) as u8,
            b'0' + (y / 100 % 10) as u8,
            b'0' + (y / 10 % 10) as u8,
            b'0' + (y % 10) as u8,
        ]);
        out[4] = b'-';
        out[5..7].copy_from_slice(&digits(mo));
        out[7] = b'-';
        out[8..10].copy_from_slice(&digits(d));
        out[10] = b'T';
        out[11..13].copy_from_slice(&digits(h));
        out[13] = b':';
        out[14..16].copy_from_slice(&digits(mi));
        out[16] = b':';
        // A leap second (second 59 with a nanosecond past 1e9) prints as 60, as chrono does.
        let s = if time.nanosecond() >= 1_000_000_000 {
            60
        } else {
            s
        };
        out[17..19].copy_from_slice(&digits(s));
        out[19] = b'Z';
        f.write_str(std::str::from_utf8(&out).expect("ASCII digits"))
    }
}

impl Serialize for Rfc3339 {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_matches_chrono() {
        let times = [
            "2026-11-27T12:00:00",
            "1999-01-09T03:04:05.999999",
            "0001-02-03T00:00:59",
            "9999-12-31T23:59:59.5",
        ];
        for text in times {
            let t: NaiveDateTime = text.parse().unwrap();
            assert_eq!(
                Rfc3339(t).to_string(),
                t.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
                "{text}"
            );
        }
        let far = NaiveDateTime::MAX;
        assert_eq!(
            Rfc3339(far).to_string(),
            far.format("%Y-%m-%dT%H:%M:%SZ").to_string()
        );
    }
}
