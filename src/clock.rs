//! The application's clock: the one source of "now" (UTC, microsecond precision, which both
//! databases store exactly). Queries get times bound from here, never the database's `now()`.

use chrono::{NaiveDateTime, SubsecRound, Utc};

pub fn now() -> NaiveDateTime {
    Utc::now().naive_utc().trunc_subsecs(6)
}

/// RFC 3339 in UTC with a `Z`, as every timestamp in the API is written.
pub fn rfc3339(t: NaiveDateTime) -> String {
    t.and_utc()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}
