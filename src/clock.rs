//! The application's clock: the one source of "now" (UTC, microsecond precision, which both
//! databases store exactly). Queries get times bound from here, never the database's `now()`.

use std::fmt;

use chrono::{NaiveDateTime, SubsecRound, Utc};
use serde::{Serialize, Serializer};

/// Now, in UTC, to the microsecond.
pub fn now() -> NaiveDateTime {
    Utc::now().naive_utc().trunc_subsecs(6)
}

/// RFC 3339 in UTC with a `Z`, as every timestamp in the API is written.
pub fn rfc3339(t: NaiveDateTime) -> String {
    Rfc3339(t).to_string()
}

/// A timestamp that serializes as RFC 3339 (`2026-11-27T12:00:00Z`) straight into the output.
#[derive(Debug, Clone, Copy)]
pub struct Rfc3339(pub NaiveDateTime);

impl fmt::Display for Rfc3339 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.format("%Y-%m-%dT%H:%M:%SZ"))
    }
}

impl Serialize for Rfc3339 {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}
