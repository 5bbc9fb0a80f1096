//! The password's ways in: registering (an account and, unless its address must be verified
//! first, its first session) and signing in with an address and a password (and the second
//! factor's code when the account has one).

use chrono::NaiveDateTime;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel::Connection;

use super::{create_account, open_session, Opened, Refused, SignIn};
use crate::auth::throttle::{self, Budget, ThrottleKey};
use crate::db::models::event::record;
use crate::db::models::session::ClientInfo;
use crate::db::models::{EventKind, MailKind, Session, User};
use crate::db::{refuse, DbError};
use crate::mail::Mailer;
use crate::metrics::LoginOutcome;
use crate::token::{Token, TokenHash};
use crate::validation::{
    check_fields, email_problem, may_be_stored, name_problem, normalize_email, password_problem,
    MAX_PASSWORD_BYTES,
};

/// What a registration gives.
pub struct Registration {
    pub email: String,
    pub name: String,
    pub password: String,
}

/// What a password sign-in gives: the address, the password, and for an account with a
/// second factor a TOTP or recovery code.
pub struct PasswordSignIn {
    pub email: String,
    pub password: String,
    pub code: Option<String>,
}

/// Why the sign-in transaction gave no session.
enum Stopped {
    /// The account went, its password changed, or its second factor was turned on, while its
    /// password was checked.
    Changed,
    /// The second factor's code was wrong, replayed or used up.
    WrongCode,
}

impl SignIn {
    /// Takes a registration out of the client's budget (`ip_max_registrations` per
    /// `ip_failure_window`, an IPv6 client by its /64). Every attempt that gets this far
    /// counts, a taken address too, so that one client can neither try addresses at full
    /// speed nor fill the hashing queue.
    async fn take_registration(&self, client: &ClientInfo) -> Result<(), Refused> {
        let Some(ip) = &client.ip else {
            return Ok(());
        };
        let budgets = vec![(
            ThrottleKey::ip(Budget::Register, ip),
            self.settings.ip_max_registrations,
        )];
        let (window, now) = (self.settings.ip_failure_window, self.db.now());
        let refused = self
            .db
            .run(move |conn| throttle::take_budget(conn, &budgets, window, now))
            .await?;
        match refused {
            Some(seconds) => Err(Refused::Throttled(seconds)),
            None => Ok(()),
        }
    }

    /// A new account, and its session unless `require_verified_email` keeps it waiting for
    /// the address to be confirmed; the verification letter goes after the commit. `replace`
    /// is a session the browser already had (revoked: fixation defence).
    pub async fn register(
        &self,
        client: ClientInfo,
        given: Registration,
        replace: Option<TokenHash>,
        mailer: &Mailer,
    ) -> Result<(User, Option<(Session, Token)>), Refused> {
        let Registration {
            email,
            name,
            password,
        } = given;
        let email = normalize_email(&email);
        let name = name.trim().to_string();
        check_fields(&[
            ("email", email_problem(&email)),
            ("name", name_problem(&name)),
            ("password", password_problem(&password)),
        ])?;
        // The hashing queue first (a request shed with 503 has not used up a registration).
        let slot = self.hash_slot()?;
        self.take_registration(&client).await?;
        let lookup = email.clone();
        if self
            .db
            .run(move |c| User::find_by_email(c, &lookup))
            .await?
            .is_some()
        {
            return Err(Refused::EmailTaken);
        }
        // With `require_verified_email` nobody signs in before the address is confirmed, the
        // registrant included: the account is made, and its session waits for the mail's link.
        let signs_in = !self.settings.require_verified_email;
        let password_hash = slot.hash(password).await;
        drop(slot);
        let (policy, now) = (self.policy, self.db.now());
        let preparer = mailer.clone();
        let created = self
            .db
            .run(move |conn| {
                conn.transaction(|conn| {
                    let given = (email.as_str(), name.as_str());
                    let user = create_account(conn, given, Some(&password_hash), None, now)?;
                    let replaced = match &replace {
                        Some(hash) => Session::revoke_by_token(conn, hash)?.is_some(),
                        None => false,
                    };
                    let opened = if signs_in {
                        Some(Session::create(conn, &policy, &user.id, &client, now)?)
                    } else {
                        None
                    };
                    let session_id = opened.as_ref().map(|(session, _)| &session.id);
                    let kind = EventKind::Registered;
                    record(conn, &user.id, kind, session_id, &client, now)?;
                    let letter = preparer.prepare(conn, &user, MailKind::VerifyEmail, now)?;
                    Ok((user, opened, letter, replaced))
                })
            })
            .await;
        let (user, opened, letter, replaced) = match created {
            Err(DbError::Query(DieselError::DatabaseError(
                DatabaseErrorKind::UniqueViolation,
                _,
            ))) => return Err(Refused::EmailTaken),
            other => other?,
        };
        // Mail goes after the commit, and after the answer: the outbox sends it.
        if let Some(letter) = letter {
            mailer.send(letter);
        }
        if opened.is_some() {
            self.counters.sessions_created.inc();
        }
        if replaced {
            self.counters.sessions_revoked.inc();
        }
        Ok((user, opened))
    }

    /// A failed sign-in: the attempt already counts as a failure. Its event is written after
    /// the answer, so that a known account's failure takes no longer than an unknown one's,
    /// through the bounded background writes (`Db::run_detached`): a flood of failures cannot
    /// queue up writes without limit (past the bound an event is dropped, with a warning).
    fn failed(&self, user: Option<User>, client: ClientInfo, now: NaiveDateTime) {
        if let Some(user) = user {
            let started = self.db.run_detached("failed sign-in event", move |conn| {
                record(conn, &user.id, EventKind::LoginFailed, None, &client, now)
            });
            if !started {
                tracing::warn!("too many background writes: a failed sign-in was not recorded");
            }
        }
        self.counters.login(LoginOutcome::Failure);
    }

    /// Checks an address and password under the login throttle, then the account's rules and
    /// its second factor, and opens a session. `replace` is a session the client already had
    /// (fixation defence: it is revoked).
    pub async fn with_password(
        &self,
        client: ClientInfo,
        given: PasswordSignIn,
        replace: Option<TokenHash>,
    ) -> Result<Opened, Refused> {
        let PasswordSignIn {
            email,
            password,
            code,
        } = given;
        let email = normalize_email(&email);
        check_fields(&[
            (
                "email",
                email.is_empty().then_some("Enter your email address."),
            ),
            (
                "password",
                password.is_empty().then_some("Enter your password."),
            ),
            (
                "password",
                (password.len() > MAX_PASSWORD_BYTES)
                    .then_some("Password must be at most 1024 bytes."),
            ),
        ])?;
        // Before the throttle: a request shed here has not used up an attempt.
        let slot = self.hash_slot()?;
        let keys = throttle::LoginKeys::new(&email, client.ip.as_deref());
        let settings = self.settings.clone();
        let now = self.db.now();
        // A string that cannot be a stored address is not looked up (and cannot reach SQL).
        let lookup = may_be_stored(&email).then(|| email.clone());
        // The attempt is taken out of the budgets before its password is checked, whether or
        // not the account exists: both paths write the same and cost the same.
        let (refused, user, keys) = self
            .db
            .run(move |conn| {
                let refused = throttle::take_attempt(conn, &settings, &keys, now)?;
                let user = match (&refused, lookup) {
                    (None, Some(email)) => User::find_by_email(conn, &email)?,
                    _ => None,
                };
                Ok((refused, user, keys))
            })
            .await?;
        if let Some(seconds) = refused {
            self.counters.login(LoginOutcome::Throttled);
            return Err(Refused::Throttled(seconds));
        }
        let known_hash = user
            .as_ref()
            .and_then(|u| u.password_hash().map(str::to_owned));
        let verified = slot.verify(password, known_hash).await;
        drop(slot);
        let now = self.db.now();
        let user = match user {
            Some(user) if verified => user,
            user => {
                self.failed(user, client, now);
                return Err(Refused::InvalidCredentials);
            }
        };
        if let Err(refused) = self.admits(&user) {
            // The password was right (a wrong one is refused first): the failure streak ends
            // as for a sign-in, but no session is made.
            self.end_failure_streak(keys).await;
            return Err(refused);
        }
        // The second factor. Asking for it keeps the attempt counted as a failure: a right
        // password alone never ends the streak, so the codes cannot be guessed between resets.
        let code = code.filter(|c| !c.trim().is_empty());
        if user.mfa_enabled() && code.is_none() {
            self.counters.login(LoginOutcome::MfaRequired);
            return Err(Refused::MfaRequired);
        }
        let (policy, second_factor) = (self.policy, self.second_factor.clone());
        let checked = user.credentials();
        let user_id = user.id.clone();
        let opened_for = client.clone();
        let opened = self
            .db
            .transaction(move |conn| {
                // Writes first: on SQLite this takes the write lock for the whole transaction.
                throttle::record_success(conn, &keys, now)?;
                // The account as it is now, locked until this commits. A deletion, a password
                // change or a second factor turned on that committed since the password was
                // checked fails this sign-in; one that comes later waits for it and then
                // removes the new session with the rest.
                if User::lock_credentials(conn, &user_id)?.as_ref() != Some(&checked) {
                    return refuse(Stopped::Changed);
                }
                let accepted = match (&checked.1, &code) {
                    (Some(_), Some(code)) => {
                        match second_factor.check_code(conn, &user_id, code, now)? {
                            Some(accepted) => Some(accepted),
                            None => return refuse(Stopped::WrongCode),
                        }
                    }
                    _ => None,
                };
                let replace = replace.as_ref();
                let client = &opened_for;
                Ok(open_session(
                    conn, &policy, &user_id, client, replace, accepted, now,
                )?)
            })
            .await;
        match opened {
            Ok(Ok((session, token, replaced))) => {
                self.count_opened(replaced);
                Ok(Opened {
                    user,
                    session,
                    token,
                })
            }
            Ok(Err(Stopped::WrongCode)) => {
                self.failed(Some(user), client, now);
                Err(Refused::WrongCode)
            }
            // The account went, or its credentials changed, while this sign-in was checked.
            Ok(Err(Stopped::Changed))
            | Err(DbError::Query(DieselError::DatabaseError(
                DatabaseErrorKind::ForeignKeyViolation,
                _,
            ))) => {
                self.counters.login(LoginOutcome::Failure);
                Err(Refused::InvalidCredentials)
            }
            Err(e) => Err(e.into()),
        }
    }
}
