//! `totp_factors` and `recovery_codes`: an account's second factor. Whether it is required at
//! sign-in is `users.mfa_enabled_at`; these tables hold what checks a code. The TOTP secret
//! arrives here already sealed (`auth::mfa`), recovery codes as keyed hashes: this layer never
//! sees a usable secret.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};

use crate::db::schema::{recovery_codes, totp_factors, users};
use crate::db::DbConnection;
use crate::domain::UserId;

/// An account's TOTP secret (sealed) and the last time step a code was accepted for.
#[derive(Queryable, Selectable, Clone)]
#[diesel(table_name = totp_factors)]
pub struct TotpFactor {
    pub user_id: String,
    /// As `auth::mfa` stored it; opened only there.
    pub secret: String,
    /// The RFC 6238 counter of the last accepted code; a code for this step or an earlier one
    /// is refused.
    pub last_step: Option<i64>,
    pub created_at: NaiveDateTime,
}

impl TotpFactor {
    pub fn find(conn: &mut DbConnection, user_id: &UserId) -> QueryResult<Option<TotpFactor>> {
        totp_factors::table
            .find(user_id.as_str())
            .select(TotpFactor::as_select())
            .first(conn)
            .optional()
    }

    /// Starts an enrollment: stores `sealed` as the user's secret, replacing any earlier
    /// enrollment that was never confirmed. Two at once for one account: the later insert
    /// meets the primary key and runs again, so the last one wins.
    pub fn begin(
        conn: &mut DbConnection,
        user_id: &UserId,
        sealed: &str,
        now: NaiveDateTime,
    ) -> QueryResult<()> {
        let mut attempt = || {
            conn.transaction(|conn| {
                diesel::delete(totp_factors::table.find(user_id.as_str())).execute(conn)?;
                diesel::insert_into(totp_factors::table)
                    .values((
                        totp_factors::user_id.eq(user_id.as_str()),
                        totp_factors::secret.eq(sealed),
                        totp_factors::last_step.eq(None::<i64>),
                        totp_factors::created_at.eq(now),
                    ))
                    .execute(conn)
                    .map(drop)
            })
        };
        match attempt() {
            Err(DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _)) => attempt(),
            other => other,
        }
    }

    /// Accepts a code for `step` if no code for this step or a later one was accepted before.
    /// One conditional update, so two requests with one code cannot both pass.
    pub fn use_step(conn: &mut DbConnection, user_id: &UserId, step: i64) -> QueryResult<bool> {
        let changed = diesel::update(
            totp_factors::table.find(user_id.as_str()).filter(
                totp_factors::last_step
                    .is_null()
                    .or(totp_factors::last_step.lt(step)),
            ),
        )
        .set(totp_factors::last_step.eq(Some(step)))
        .execute(conn)?;
        Ok(changed == 1)
    }
}

/// One-time recovery codes, stored as keyed hashes.
pub struct RecoveryCode;

impl RecoveryCode {
    /// Replaces the user's codes with these hashes.
    pub fn replace_all(
        conn: &mut DbConnection,
        user_id: &UserId,
        hashes: &[[u8; 32]],
    ) -> QueryResult<()> {
        diesel::delete(recovery_codes::table.filter(recovery_codes::user_id.eq(user_id.as_str())))
            .execute(conn)?;
        for hash in hashes {
            diesel::insert_into(recovery_codes::table)
                .values((
                    recovery_codes::code_hash.eq(&hash[..]),
                    recovery_codes::user_id.eq(user_id.as_str()),
                    recovery_codes::used_at.eq(None::<NaiveDateTime>),
                ))
                .execute(conn)?;
        }
        Ok(())
    }

    /// Spends a code: true when it was the user's and unused. One conditional update, so a code
    /// works once however many requests carry it.
    pub fn spend(
        conn: &mut DbConnection,
        user_id: &UserId,
        hash: &[u8; 32],
        now: NaiveDateTime,
    ) -> QueryResult<bool> {
        let changed = diesel::update(
            recovery_codes::table
                .filter(recovery_codes::code_hash.eq(&hash[..]))
                .filter(recovery_codes::user_id.eq(user_id.as_str()))
                .filter(recovery_codes::used_at.is_null()),
        )
        .set(recovery_codes::used_at.eq(Some(now)))
        .execute(conn)?;
        Ok(changed == 1)
    }
}

/// Turns the second factor on: sign-in asks for a code from now. False when it was already on
/// or the account is gone (nothing changed). Its first statement writes the user's row, so it
/// holds the row (and on SQLite the write lock) for the rest of the caller's transaction.
pub fn enable(conn: &mut DbConnection, user_id: &UserId, now: NaiveDateTime) -> QueryResult<bool> {
    let changed = diesel::update(
        users::table
            .find(user_id.as_str())
            .filter(users::mfa_enabled_at.is_null()),
    )
    .set((
        users::mfa_enabled_at.eq(Some(now)),
        users::updated_at.eq(now),
    ))
    .execute(conn)?;
    Ok(changed == 1)
}

/// Turns the second factor off (the factor's rows stay until [`forget`]). False when it was
/// not on. Holds the user's row like [`enable`].
pub fn disable(conn: &mut DbConnection, user_id: &UserId, now: NaiveDateTime) -> QueryResult<bool> {
    let changed = diesel::update(
        users::table
            .find(user_id.as_str())
            .filter(users::mfa_enabled_at.is_not_null()),
    )
    .set((
        users::mfa_enabled_at.eq(None::<NaiveDateTime>),
        users::updated_at.eq(now),
    ))
    .execute(conn)?;
    Ok(changed == 1)
}

/// Holds the user's row for an enrollment: true when the second factor is off (an
/// enrollment may start), false when it is on or the account is gone.
pub fn claim_for_enrollment(
    conn: &mut DbConnection,
    user_id: &UserId,
    now: NaiveDateTime,
) -> QueryResult<bool> {
    let changed = diesel::update(
        users::table
            .find(user_id.as_str())
            .filter(users::mfa_enabled_at.is_null()),
    )
    .set(users::updated_at.eq(now))
    .execute(conn)?;
    Ok(changed == 1)
}

/// Deletes the user's TOTP secret and recovery codes.
pub fn forget(conn: &mut DbConnection, user_id: &UserId) -> QueryResult<()> {
    diesel::delete(totp_factors::table.find(user_id.as_str())).execute(conn)?;
    diesel::delete(recovery_codes::table.filter(recovery_codes::user_id.eq(user_id.as_str())))
        .execute(conn)?;
    Ok(())
}
