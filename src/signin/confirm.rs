//! Confirming who is at the keyboard of a signed-in session before a sensitive change (a new
//! password, deleting the account, setting up a second factor): the current password counted
//! as a sign-in attempt, and a second factor's code under the account's hourly budget.

use chrono::Duration;

use super::{Refused, SignIn};
use crate::auth::password::HashSlot;
use crate::auth::throttle::{self, Budget, ThrottleKey};
use crate::auth::{mfa, CurrentSession};
use crate::db::models::event::record;
use crate::db::models::session::ClientInfo;
use crate::db::models::EventKind;
use crate::domain::UserId;
use crate::validation::MAX_PASSWORD_BYTES;

/// Codes an account may try in an hour when confirming or turning off its second factor, or
/// after a provider's sign-in: a stolen session must not be able to guess its way to turning
/// the factor off.
const CODE_CHECKS_PER_HOUR: i32 = 10;

/// Codes are short; anything longer is not one and is not looked at.
const MAX_CODE_LEN: usize = 64;

/// How recent a session of an account without a password must be to stand in for the
/// password: such an account has just shown the provider who it is.
pub const FRESH_SIGN_IN: Duration = Duration::minutes(10);

/// What a signed-in user gives to confirm a sensitive change (a new password, deleting the
/// account, setting up a second factor): the current password, and for an account that has a
/// second factor, a code from it too.
pub struct Confirmation {
    pub password: Option<String>,
    pub code: Option<String>,
}

impl SignIn {
    /// Checks a [`Confirmation`] of the signed-in user, in a place of the hashing queue that
    /// the caller keeps for any hashing that follows.
    ///
    /// A password account's confirmation is a sign-in attempt for its address: it is taken out
    /// of the login budgets first (refused while the address is backed off or the client's IP
    /// has used its failures), a wrong password counts as a failed sign-in
    /// ([`Refused::WrongPassword`]), and only a complete confirmation ends the streak. So a
    /// stolen session guesses the password no faster than the sign-in form allows. An account
    /// with a second factor must also give a code: the password alone is not enough to delete
    /// it or change how it signs in.
    ///
    /// An account without a password (it signs in with a provider) has no password to give:
    /// its session must instead be at most [`FRESH_SIGN_IN`] old, and with a second factor it
    /// gives a code too (the session may be the one that turned the factor on, which never
    /// passed it).
    pub async fn confirm(
        &self,
        client: &ClientInfo,
        current: &CurrentSession,
        confirmation: Confirmation,
    ) -> Result<HashSlot, Refused> {
        let slot = self.hash_slot()?;
        let Some(hash) = current.user.password_hash() else {
            if self.db.now() - current.session.created_at > FRESH_SIGN_IN {
                return Err(Refused::ReauthenticationRequired);
            }
            self.check_second_factor(client, current, confirmation.code)
                .await?;
            return Ok(slot);
        };
        let hash = hash.to_string();
        let keys = throttle::LoginKeys::new(&current.user.email, client.ip.as_deref());
        let (settings, now) = (self.settings.clone(), self.db.now());
        let (refused, keys) = self
            .db
            .run(move |conn| Ok((throttle::take_attempt(conn, &settings, &keys, now)?, keys)))
            .await?;
        if let Some(seconds) = refused {
            return Err(Refused::Throttled(seconds));
        }
        let password = confirmation.password.unwrap_or_default();
        if password.is_empty()
            || password.len() > MAX_PASSWORD_BYTES
            || !slot.verify(password, Some(hash)).await
        {
            return Err(Refused::WrongPassword);
        }
        self.check_second_factor(client, current, confirmation.code)
            .await?;
        self.end_failure_streak(keys).await;
        Ok(slot)
    }

    /// For an account with a second factor, a code from it, counted against the account's
    /// hourly code budget.
    async fn check_second_factor(
        &self,
        client: &ClientInfo,
        current: &CurrentSession,
        code: Option<String>,
    ) -> Result<(), Refused> {
        if !current.user.mfa_enabled() {
            return Ok(());
        }
        let Some(code) = code.filter(|c| !c.trim().is_empty()) else {
            return Err(Refused::CodeRequired);
        };
        let code = code.trim().to_string();
        let wrong = || Refused::WrongConfirmationCode;
        self.take_code_check(&current.user.id, &code, wrong).await?;
        let (second_factor, user_id) = (self.second_factor.clone(), current.user.id.clone());
        let session_id = current.session.id.clone();
        let client = client.clone();
        let now = self.db.now();
        let accepted = self
            .db
            .transaction(move |conn| {
                let Some(accepted) = second_factor.check_code(conn, &user_id, &code, now)? else {
                    return crate::db::refuse(wrong());
                };
                if accepted == mfa::Accepted::RecoveryCode {
                    let used = EventKind::RecoveryCodeUsed;
                    record(conn, &user_id, used, Some(&session_id), &client, now)?;
                }
                Ok(())
            })
            .await?;
        accepted
    }

    /// Takes one code check out of the account's hourly budget ([`Refused::Throttled`] when it
    /// is spent); a code too long to be one is refused after that, without a look, as
    /// `wrong()` (what the caller answers for a wrong code).
    pub async fn take_code_check(
        &self,
        user_id: &UserId,
        code: &str,
        wrong: impl FnOnce() -> Refused,
    ) -> Result<(), Refused> {
        let budgets = vec![(
            ThrottleKey::user(Budget::CodeCheck, user_id),
            CODE_CHECKS_PER_HOUR,
        )];
        let now = self.db.now();
        let refused = self
            .db
            .run(move |conn| throttle::take_budget(conn, &budgets, Duration::hours(1), now))
            .await?;
        match refused {
            Some(seconds) => Err(Refused::Throttled(seconds)),
            None if code.len() > MAX_CODE_LEN => Err(wrong()),
            None => Ok(()),
        }
    }
}
