//! The sign-in service: every way into an account ends here. A registration, a password, a
//! provider, the second factor after a provider (and next a passkey, an email code, a legacy
//! session) each call it to check the credential under its throttle, apply the account's rules
//! (a verified address when required, the second factor), open the session and record the
//! event. Confirming a signed-in user before a sensitive change is here too (`SignIn::confirm`), and
//! every change of how an account signs in revokes through one place ([`CredentialChange`]).
//!
//! Routes stay thin: they read the request, call this service, and write its answer (a cookie,
//! a token, a page). The service answers with [`Refused`], which the API renders.

mod confirm;
mod credentials;
mod password;
pub mod provider;

use std::sync::Arc;

use chrono::NaiveDateTime;

use crate::auth::mfa::{self, SecondFactor};
use crate::auth::password::{HashQueue, HashSlot};
use crate::auth::throttle;
use crate::config::Settings;
use crate::db::models::event::record;
use crate::db::models::session::ClientInfo;
use crate::db::models::{EventKind, NewUser, Role, Session, SessionPolicy, User};
use crate::db::{Db, DbConnection, DbError};
use crate::domain::UserId;
use crate::metrics::{LoginOutcome, Metrics, SignInCounters};
use crate::token::{Token, TokenHash};
use crate::validation::Invalid;

pub use confirm::Confirmation;
pub use credentials::CredentialChange;
pub use password::{PasswordSignIn, Registration};

/// Why a way in, or a confirmation, gave no session. Each reason has one answer in the API.
#[derive(Debug)]
pub enum Refused {
    /// Fields that are not valid (422).
    Invalid(Invalid),
    /// The hashing queue is full (503, retry in a second).
    Overloaded,
    /// The throttle: retry after this many seconds (429).
    Throttled(i64),
    /// Signing in: the address or the password is wrong, or the account changed while it was
    /// checked (401 `invalid_credentials`).
    InvalidCredentials,
    /// Signing in: the second factor's code is wrong, replayed or used up (401
    /// `invalid_credentials`).
    WrongCode,
    /// Signing in: the password was right; the account asks for its second factor (401).
    MfaRequired,
    /// The credential was right and the address is not verified (`require_verified_email`).
    EmailUnverified,
    /// Registering an address that has an account (409).
    EmailTaken,
    /// Confirming: the current password is wrong (403 `invalid_credentials`).
    WrongPassword,
    /// Confirming: the account has a second factor and no code came (403 `mfa_required`).
    CodeRequired,
    /// Confirming: the code is wrong, replayed or used up (403 `invalid_credentials`).
    WrongConfirmationCode,
    /// Confirming, for an account without a password: the session is older than
    /// `confirm::FRESH_SIGN_IN` (403 `reauthentication_required`).
    ReauthenticationRequired,
    /// The provider sign-in waiting for its second factor is over (expired, used, or never
    /// there): 401 `invalid_token`.
    SignInOver,
    /// The database could not answer.
    Db(DbError),
}

impl From<DbError> for Refused {
    fn from(e: DbError) -> Refused {
        Refused::Db(e)
    }
}

impl From<Invalid> for Refused {
    fn from(e: Invalid) -> Refused {
        Refused::Invalid(e)
    }
}

/// A session opened by a way in: the account, the session and its token (for the cookie or
/// the body; never stored).
pub struct Opened {
    pub user: User,
    pub session: Session,
    pub token: Token,
}

/// The service, managed once by the fairing.
pub struct SignIn {
    db: Db,
    settings: Arc<Settings>,
    policy: SessionPolicy,
    hashes: HashQueue,
    second_factor: SecondFactor,
    counters: SignInCounters,
}

impl SignIn {
    pub fn new(db: Db, settings: &Settings, metrics: &Metrics) -> SignIn {
        SignIn {
            db,
            settings: Arc::new(settings.clone()),
            policy: SessionPolicy::from_settings(settings),
            hashes: HashQueue::new(settings.login_queue_max),
            second_factor: SecondFactor::new(
                settings.mfa_key.clone(),
                settings.public_url.as_deref(),
            ),
            counters: metrics.sign_in_counters(),
        }
    }

    /// TOTP and recovery codes (`mfa_key`).
    pub fn second_factor(&self) -> &SecondFactor {
        &self.second_factor
    }

    /// A place in the password-hashing queue (`login_queue_max`), or [`Refused::Overloaded`]
    /// at once when it is full.
    pub fn hash_slot(&self) -> Result<HashSlot, Refused> {
        self.hashes.admit().map_err(|_| Refused::Overloaded)
    }

    /// Counts sessions a route ended (logout, a credential change).
    pub fn count_revoked(&self, revoked: usize) {
        self.counters.sessions_revoked.inc_by(revoked as u64);
    }

    /// The rules every way in applies to the account it reached, after its credential was
    /// right: with `require_verified_email`, no session before the address is verified.
    fn admits(&self, user: &User) -> Result<(), Refused> {
        if self.settings.require_verified_email && user.email_verified_at.is_none() {
            self.counters.login(LoginOutcome::Unverified);
            return Err(Refused::EmailUnverified);
        }
        Ok(())
    }

    /// Ends the failure streak of a sign-in attempt whose password was right (a failure to
    /// write is logged: the attempt itself has succeeded).
    async fn end_failure_streak(&self, keys: throttle::LoginKeys) {
        let now = self.db.now();
        let ended = self
            .db
            .run(move |conn| throttle::record_success(conn, &keys, now))
            .await;
        if let Err(error) = ended {
            tracing::warn!(%error, "could not end a failure streak");
        }
    }

    /// Counts a session a way in opened (and the one it replaced).
    fn count_opened(&self, replaced: bool) {
        self.counters.login(LoginOutcome::Success);
        self.counters.sessions_created.inc();
        if replaced {
            self.counters.sessions_revoked.inc();
        }
    }
}

/// A new account (role `user`), as every way that makes one makes it. In the caller's
/// transaction.
pub(crate) fn create_account(
    conn: &mut DbConnection,
    (email, name): (&str, &str),
    password_hash: Option<&str>,
    email_verified_at: Option<NaiveDateTime>,
    now: NaiveDateTime,
) -> diesel::QueryResult<User> {
    User::insert(
        conn,
        &NewUser {
            id: &UserId::generate(),
            email,
            name,
            password_hash,
            role: Role::User,
            created_at: now,
            updated_at: now,
            email_verified_at,
        },
    )
}

/// A new session for a user who has just shown who they are, as every way in makes it: the
/// session the browser's cookie named revoked first (fixation defence), event `login`, and
/// `recovery_code_used` when the second factor was one. Returns the session, its token, and
/// whether a session was revoked. In the caller's transaction.
pub(crate) fn open_session(
    conn: &mut DbConnection,
    policy: &SessionPolicy,
    user_id: &UserId,
    client: &ClientInfo,
    replace: Option<&TokenHash>,
    accepted: Option<mfa::Accepted>,
    now: NaiveDateTime,
) -> diesel::QueryResult<(Session, Token, bool)> {
    let revoked = match replace {
        Some(hash) => Session::revoke_by_token(conn, hash)?.is_some(),
        None => false,
    };
    let (session, token) = Session::create(conn, policy, user_id, client, now)?;
    let id = Some(&session.id);
    record(conn, user_id, EventKind::Login, id, client, now)?;
    if accepted == Some(mfa::Accepted::RecoveryCode) {
        record(conn, user_id, EventKind::RecoveryCodeUsed, id, client, now)?;
    }
    Ok((session, token, revoked))
}
