//! `identities`: a user's accounts at OpenID providers, and `oidc_logins`: provider sign-ins
//! under way (their `state` hashed, deleted by the callback that uses them).

use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::db::schema::{identities, oidc_logins};
use crate::db::DbConnection;
use crate::domain::{SessionId, UserId};
use crate::token::TokenHash;

/// One account at a provider, linked to one user.
#[derive(Queryable, Selectable, Clone, Debug)]
#[diesel(table_name = identities)]
pub struct Identity {
    pub id: String,
    #[diesel(deserialize_as = String)]
    pub user_id: UserId,
    /// The configured provider id it was linked through.
    pub provider: String,
    pub issuer: String,
    pub subject: String,
    pub created_at: NaiveDateTime,
}

impl Identity {
    /// The user an account at a provider is linked to.
    pub fn find(
        conn: &mut DbConnection,
        issuer: &str,
        subject: &str,
    ) -> QueryResult<Option<Identity>> {
        identities::table
            .filter(identities::issuer.eq(issuer))
            .filter(identities::subject.eq(subject))
            .select(Identity::as_select())
            .first(conn)
            .optional()
    }

    /// The user's linked accounts, oldest first.
    pub fn of_user(conn: &mut DbConnection, user_id: &UserId) -> QueryResult<Vec<Identity>> {
        identities::table
            .filter(identities::user_id.eq(user_id.as_str()))
            .order((identities::created_at.asc(), identities::id.asc()))
            .select(Identity::as_select())
            .load(conn)
    }

    /// Links an account. Fails with a unique violation when it is linked already (to anyone).
    pub fn link(
        conn: &mut DbConnection,
        user_id: &UserId,
        provider: &str,
        issuer: &str,
        subject: &str,
        now: NaiveDateTime,
    ) -> QueryResult<()> {
        diesel::insert_into(identities::table)
            .values((
                identities::id.eq(super::new_id()),
                identities::user_id.eq(user_id.as_str()),
                identities::provider.eq(provider),
                identities::issuer.eq(issuer),
                identities::subject.eq(subject),
                identities::created_at.eq(now),
            ))
            .execute(conn)
            .map(drop)
    }

    /// Unlinks every account linked to the user; returns how many there were.
    pub fn unlink_all(conn: &mut DbConnection, user_id: &UserId) -> QueryResult<usize> {
        diesel::delete(identities::table.filter(identities::user_id.eq(user_id.as_str())))
            .execute(conn)
    }

    /// Unlinks one of the user's accounts; false when the user has no such link.
    pub fn unlink(conn: &mut DbConnection, user_id: &UserId, id: &str) -> QueryResult<bool> {
        diesel::delete(
            identities::table
                .filter(identities::id.eq(id))
                .filter(identities::user_id.eq(user_id.as_str())),
        )
        .execute(conn)
        .map(|n| n > 0)
    }
}

/// A provider sign-in under way, as the callback reads it back.
/// Fields in the order of [`OidcLogin::take`]'s `RETURNING`.
#[derive(Queryable, Clone)]
pub struct OidcLogin {
    pub provider: String,
    pub nonce: String,
    pub pkce_verifier: String,
    /// A path on this origin.
    pub return_to: String,
    /// The session that started a link (`start?link=1`); `None` for a sign-in.
    pub link_session_id: Option<String>,
    /// Set once the provider has signed in a user whose account asks for a second factor.
    pub mfa_user_id: Option<String>,
    pub expires_at: NaiveDateTime,
}

/// A new sign-in under way.
pub struct NewOidcLogin<'a> {
    pub state: &'a TokenHash,
    pub provider: &'a str,
    pub nonce: &'a str,
    pub pkce_verifier: &'a str,
    pub return_to: &'a str,
    pub link_session_id: Option<&'a SessionId>,
    pub mfa_user_id: Option<&'a UserId>,
}

impl OidcLogin {
    pub fn insert(
        conn: &mut DbConnection,
        new: &NewOidcLogin<'_>,
        now: NaiveDateTime,
        lifetime: chrono::Duration,
    ) -> QueryResult<()> {
        diesel::insert_into(oidc_logins::table)
            .values((
                oidc_logins::state_hash.eq(new.state.as_bytes()),
                oidc_logins::provider.eq(new.provider),
                oidc_logins::nonce.eq(new.nonce),
                oidc_logins::pkce_verifier.eq(new.pkce_verifier),
                oidc_logins::return_to.eq(new.return_to),
                oidc_logins::link_session_id.eq(new.link_session_id.map(|s| s.as_str())),
                oidc_logins::mfa_user_id.eq(new.mfa_user_id.map(|u| u.as_str())),
                oidc_logins::created_at.eq(now),
                oidc_logins::expires_at.eq(now + lifetime),
            ))
            .execute(conn)
            .map(drop)
    }

    /// Uses a sign-in: deletes it and returns it when unexpired. One statement, so two
    /// callbacks with the same `state` cannot both go on.
    pub fn take(
        conn: &mut DbConnection,
        state: &TokenHash,
        now: NaiveDateTime,
    ) -> QueryResult<Option<OidcLogin>> {
        let taken: Option<OidcLogin> =
            diesel::delete(oidc_logins::table.filter(oidc_logins::state_hash.eq(state.as_bytes())))
                .returning((
                    oidc_logins::provider,
                    oidc_logins::nonce,
                    oidc_logins::pkce_verifier,
                    oidc_logins::return_to,
                    oidc_logins::link_session_id,
                    oidc_logins::mfa_user_id,
                    oidc_logins::expires_at,
                ))
                .get_result(conn)
                .optional()?;
        Ok(taken.filter(|login| login.expires_at > now))
    }

    /// A sign-in waiting for its second factor's code: its user, unexpired. Read only (a
    /// wrong code leaves it waiting); [`OidcLogin::take`] uses it.
    pub fn find_waiting(
        conn: &mut DbConnection,
        state: &TokenHash,
        now: NaiveDateTime,
    ) -> QueryResult<Option<UserId>> {
        let found: Option<Option<String>> = oidc_logins::table
            .find(state.as_bytes())
            .filter(oidc_logins::expires_at.gt(now))
            .select(oidc_logins::mfa_user_id)
            .first(conn)
            .optional()?;
        Ok(found.flatten().map(UserId::from))
    }

    /// Removes expired ones (the cleanup).
    pub fn delete_expired(conn: &mut DbConnection, now: NaiveDateTime) -> QueryResult<usize> {
        diesel::delete(oidc_logins::table.filter(oidc_logins::expires_at.le(now))).execute(conn)
    }
}
