//! Who owns an account: the rules that close the pre-hijacked account class (someone makes an
//! account with another person's address before that person does, and keeps a way in after
//! the owner takes it over). Every kind of credential goes through these two rules:
//!
//! 1. While mail is on and nobody has proved the account's mailbox, no way to sign in can be
//!    added to it: no linked provider, no second factor, no first password for an account
//!    made by a provider (and each kind that comes later). The account keeps only what it
//!    was made with.
//! 2. When the mailbox of an account that was unverified is proved by a password reset (the
//!    link reached the owner), every way in that the owner did not set up goes: linked
//!    providers, the second factor, every session; the reset's new password is the one way in.

use chrono::NaiveDateTime;
use diesel::QueryResult;

use crate::db::models::second_factor;
use crate::db::models::{Identity, User};
use crate::db::DbConnection;
use crate::domain::UserId;

/// Rule 1: whether a new way to sign in may be attached to `user` now. `mail_on`: the server
/// can send mail, so the owner of the address can prove it (without mail nobody can, and the
/// rule would only lock every account out of every extra credential).
pub fn may_add_sign_in_method(user: &User, mail_on: bool) -> bool {
    !mail_on || user.email_verified_at.is_some()
}

/// What [`hand_over`] removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Removed {
    /// Linked provider accounts.
    pub identities: usize,
    /// Whether a second factor (on, or an enrollment under way) was removed.
    pub second_factor: bool,
}

/// Rule 2: the account's mailbox has just been proved and the account was unverified: every
/// way in other than the password the caller is setting goes. Sessions are the caller's to
/// revoke (it revokes them all). In the caller's transaction.
pub fn hand_over(
    conn: &mut DbConnection,
    user_id: &UserId,
    now: NaiveDateTime,
) -> QueryResult<Removed> {
    let identities = Identity::unlink_all(conn, user_id)?;
    let second_factor = second_factor::disable(conn, user_id, now)?;
    second_factor::forget(conn, user_id)?;
    Ok(Removed {
        identities,
        second_factor,
    })
}
