//! `mail_tokens`: the links latchkey mails (address verification, password reset). Like
//! session tokens, only the SHA-256 is stored; a row is single use (deleted by the query that
//! accepts it), a newer one of a kind replaces the user's older one, and a password change or
//! the account's deletion removes them all.

use chrono::{Duration, NaiveDateTime};
use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};

use crate::db::schema::mail_tokens;
use crate::db::DbConnection;
use crate::domain::UserId;
use crate::token::TokenHash;

/// What a mailed link is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MailKind {
    /// Shows the address is the user's.
    VerifyEmail,
    /// Lets the user set a new password.
    PasswordReset,
}

impl MailKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MailKind::VerifyEmail => "verify_email",
            MailKind::PasswordReset => "password_reset",
        }
    }
}

pub struct MailToken;

impl MailToken {
    /// Stores a new token of `kind` for the user, replacing any earlier one of that kind. Two
    /// at once for one account: the unique index on (user, kind) makes the later insert fail,
    /// and it runs again, so exactly one link stays live.
    pub fn replace(
        conn: &mut DbConnection,
        user_id: &UserId,
        kind: MailKind,
        hash: &TokenHash,
        now: NaiveDateTime,
        lifetime: Duration,
    ) -> QueryResult<()> {
        let mut attempt = || {
            conn.transaction(|conn| {
                diesel::delete(
                    mail_tokens::table
                        .filter(mail_tokens::user_id.eq(user_id.as_str()))
                        .filter(mail_tokens::kind.eq(kind.as_str())),
                )
                .execute(conn)?;
                diesel::insert_into(mail_tokens::table)
                    .values((
                        mail_tokens::token_hash.eq(hash.as_bytes()),
                        mail_tokens::user_id.eq(user_id.as_str()),
                        mail_tokens::kind.eq(kind.as_str()),
                        mail_tokens::created_at.eq(now),
                        mail_tokens::expires_at.eq(now + lifetime),
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

    /// The user of a token of `kind` that is there and unexpired (a cheap check before the
    /// expensive work, and the account whose row a use of the link locks first;
    /// [`MailToken::take`] is what accepts it).
    pub fn owner(
        conn: &mut DbConnection,
        kind: MailKind,
        hash: &TokenHash,
        now: NaiveDateTime,
    ) -> QueryResult<Option<UserId>> {
        let owner: Option<String> = mail_tokens::table
            .filter(mail_tokens::token_hash.eq(hash.as_bytes()))
            .filter(mail_tokens::kind.eq(kind.as_str()))
            .filter(mail_tokens::expires_at.gt(now))
            .select(mail_tokens::user_id)
            .first(conn)
            .optional()?;
        Ok(owner.map(UserId::from))
    }

    /// Uses a token: deletes it and returns its user when it was of `kind` and unexpired.
    /// One statement, so two requests with the same link cannot both succeed.
    pub fn take(
        conn: &mut DbConnection,
        kind: MailKind,
        hash: &TokenHash,
        now: NaiveDateTime,
    ) -> QueryResult<Option<UserId>> {
        let taken: Option<(String, NaiveDateTime)> = diesel::delete(
            mail_tokens::table
                .filter(mail_tokens::token_hash.eq(hash.as_bytes()))
                .filter(mail_tokens::kind.eq(kind.as_str())),
        )
        .returning((mail_tokens::user_id, mail_tokens::expires_at))
        .get_result(conn)
        .optional()?;
        Ok(taken
            .filter(|(_, expires_at)| *expires_at > now)
            .map(|(user_id, _)| UserId::from(user_id)))
    }

    /// Voids every token of the user (a password change).
    pub fn void_all(conn: &mut DbConnection, user_id: &UserId) -> QueryResult<usize> {
        diesel::delete(mail_tokens::table.filter(mail_tokens::user_id.eq(user_id.as_str())))
            .execute(conn)
    }

    /// Removes expired tokens (the cleanup).
    pub fn delete_expired(conn: &mut DbConnection, now: NaiveDateTime) -> QueryResult<usize> {
        diesel::delete(mail_tokens::table.filter(mail_tokens::expires_at.le(now))).execute(conn)
    }
}
