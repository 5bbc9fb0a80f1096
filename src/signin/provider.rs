//! The end of a provider's sign-in (SPEC §8), once the provider has vouched for an identity:
//! the account it signs in as (linked, found by a verified address, or made), the account's
//! rules, and a session, a wait for the second factor, or a link to the signed-in user. Each
//! in one transaction: a failure leaves nothing behind. The flow before (the redirect, the
//! state, the provider's answer) is the route's, in `api::oidc`.

use chrono::NaiveDateTime;
use diesel::result::{DatabaseErrorKind, Error as DieselError};

use super::{create_account, open_session, Opened, Refused, SignIn};
use crate::auth::cookies::FLOW_COOKIE_SECONDS;
use crate::auth::oidc::VerifiedIdentity;
use crate::auth::ownership;
use crate::db::models::event::record;
use crate::db::models::identity::NewOidcLogin;
use crate::db::models::session::ClientInfo;
use crate::db::models::{EventKind, Identity, OidcLogin, Session, SessionPolicy, User};
use crate::db::{refuse, transaction, Abort, DbConnection, DbError};
use crate::domain::{SessionId, UserId};
use crate::metrics::LoginOutcome;
use crate::token::{Token, TokenHash};
use crate::validation::{email_problem, name_problem, normalize_email, MAX_NAME_CHARS};

/// Why a provider sign-in went back to the page: the `oidc_error` code the page explains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// No provider has that id.
    UnknownProvider,
    /// The provider could not be reached, or answered with something unusable.
    ProviderUnavailable,
    /// The person said no at the provider (or it sent an error back).
    Denied,
    /// The callback's `state` is not the one this browser started with.
    StateMismatch,
    /// The sign-in is over: too old, or its callback was used already.
    Expired,
    /// The provider refused the code or its ID token failed validation.
    TokenRejected,
    /// The provider gave no email address, and there is no account linked to this identity.
    NoEmail,
    /// An account has this address, and linking needs both sides to have verified it.
    LinkRequired,
    /// The address is not verified and this server requires verified addresses.
    EmailUnverified,
    /// Linking: the account's own address is not proved yet, and mail could prove it
    /// (`auth::ownership`).
    VerifyFirst,
    /// Linking: this provider account is linked to another user already.
    IdentityTaken,
    /// Linking needs a signed-in session (and it must still be there at the callback).
    SignInRequired,
    /// Something changed at the same moment (another sign-in made the account); try again.
    Conflict,
    /// This client started too many provider sign-ins lately.
    Throttled,
    /// The database could not answer.
    Database,
}

impl Failure {
    pub fn code(self) -> &'static str {
        match self {
            Failure::UnknownProvider => "unknown_provider",
            Failure::ProviderUnavailable => "provider_unavailable",
            Failure::Denied => "denied",
            Failure::StateMismatch => "state_mismatch",
            Failure::Expired => "expired",
            Failure::TokenRejected => "token_rejected",
            Failure::NoEmail => "no_email",
            Failure::LinkRequired => "link_required",
            Failure::EmailUnverified => "email_unverified",
            Failure::VerifyFirst => "verify_first",
            Failure::IdentityTaken => "identity_taken",
            Failure::SignInRequired => "signin_required",
            Failure::Conflict => "conflict",
            Failure::Throttled => "too_many_attempts",
            Failure::Database => "unavailable",
        }
    }
}

impl From<DbError> for Failure {
    fn from(error: DbError) -> Failure {
        match error {
            // Another sign-in made the account, or the account was deleted, at the same moment.
            DbError::Query(DieselError::DatabaseError(
                DatabaseErrorKind::UniqueViolation | DatabaseErrorKind::ForeignKeyViolation,
                _,
            )) => Failure::Conflict,
            error => {
                tracing::warn!(%error, "database error in a provider sign-in");
                Failure::Database
            }
        }
    }
}

/// What the end of a provider's sign-in did.
pub enum Signed {
    /// A session (and whether it replaced the browser's old one).
    In(Session, Token, bool),
    /// The account asks for its second factor: the page asks for the code, with this flow.
    NeedsCode(Token),
    /// The provider account was linked to the signed-in user.
    Linked,
}

/// How long a sign-in may take between the start and the callback (and the code step).
pub fn flow_lifetime() -> chrono::Duration {
    chrono::Duration::seconds(FLOW_COOKIE_SECONDS)
}

/// What the callback verified and the sign-in it ends.
pub struct ProviderSignIn {
    /// The configured id of the provider.
    pub provider: String,
    /// The identity, as the provider's ID token vouched for it.
    pub identity: VerifiedIdentity,
    /// Where the sign-in was going.
    pub return_to: String,
    /// For a link: the session that started it.
    pub link_session: Option<SessionId>,
    /// Whether mail is on (`auth::ownership`'s first rule).
    pub mail_on: bool,
}

impl SignIn {
    /// Ends a provider's sign-in: a link to the session that started it, or the account the
    /// identity signs in as and a session for it (`replace` is the browser's old one, revoked).
    pub async fn with_provider(
        &self,
        given: ProviderSignIn,
        client: ClientInfo,
        replace: Option<TokenHash>,
        now: NaiveDateTime,
    ) -> Result<Signed, Failure> {
        let ProviderSignIn {
            provider,
            identity,
            return_to,
            link_session,
            mail_on,
        } = given;
        let signed = match link_session {
            Some(session_id) => {
                self.db
                    .run(move |conn| {
                        let linking = (provider.as_str(), &identity, mail_on);
                        link(conn, &session_id, linking, &client, now)
                    })
                    .await??
            }
            None => {
                let rules = SignInRules {
                    provider,
                    require_verified: self.settings.require_verified_email,
                    return_to,
                    policy: self.policy,
                };
                self.db
                    .run(move |conn| sign_in(conn, &rules, &identity, &client, replace, now))
                    .await??
            }
        };
        match &signed {
            Signed::In(_, _, replaced) => self.count_opened(*replaced),
            Signed::NeedsCode(_) => self.counters.login(LoginOutcome::MfaRequired),
            Signed::Linked => {}
        }
        Ok(signed)
    }

    /// Counts a provider sign-in that failed before or in [`SignIn::with_provider`] (a refusal
    /// by the person at the provider is not a failure).
    pub fn count_provider_failure(&self, failure: Failure) {
        if failure != Failure::Denied {
            self.counters.login(LoginOutcome::Failure);
        }
    }

    /// The second factor after a provider's sign-in, for the account `user_id` that the
    /// waiting flow `flow` names: codes are checked against the account's hourly budget, as
    /// when turning the factor off. A session, and where the sign-in was going; a wrong code
    /// leaves the sign-in waiting. [`Refused::SignInOver`] when the flow is gone.
    pub async fn with_code_after_provider(
        &self,
        flow: TokenHash,
        user_id: UserId,
        code: String,
        client: ClientInfo,
        replace: Option<TokenHash>,
        now: NaiveDateTime,
    ) -> Result<(Opened, String), Refused> {
        let code = code.trim().to_string();
        self.take_code_check(&user_id, &code, || Refused::WrongConfirmationCode)
            .await?;
        let (policy, second_factor) = (self.policy, self.second_factor.clone());
        let opened = self
            .db
            .transaction(move |conn| {
                // The account's row first (a write: on SQLite the write lock from here on), as
                // a deletion of the account takes it, so the two take turns instead of
                // deadlocking; then the waiting sign-in, then the code. A wrong code rolls
                // back and the sign-in keeps waiting.
                if User::touch(conn, &user_id, now)? == 0 {
                    return refuse(Refused::SignInOver);
                }
                let Some(login) = OidcLogin::take(conn, &flow, now)? else {
                    return refuse(Refused::SignInOver);
                };
                if login.mfa_user_id.as_deref() != Some(user_id.as_str()) {
                    return refuse(Refused::SignInOver);
                }
                let Some(accepted) = second_factor.check_code(conn, &user_id, &code, now)? else {
                    return refuse(Refused::WrongCode);
                };
                let Some(user) = User::find_by_id(conn, &user_id)? else {
                    return refuse(Refused::SignInOver);
                };
                let replace = replace.as_ref();
                let (session, token, replaced) = open_session(
                    conn,
                    &policy,
                    &user.id,
                    &client,
                    replace,
                    Some(accepted),
                    now,
                )?;
                let opened = Opened {
                    user,
                    session,
                    token,
                };
                Ok((opened, login.return_to, replaced))
            })
            .await?;
        match opened {
            Ok((opened, return_to, replaced)) => {
                self.count_opened(replaced);
                Ok((opened, return_to))
            }
            Err(refused) => {
                if matches!(refused, Refused::WrongCode) {
                    self.counters.login(LoginOutcome::Failure);
                }
                Err(refused)
            }
        }
    }
}

/// Links the provider account to the user of the session that started the link.
/// `mail_on`: whether the account must have proved its address first (`auth::ownership`).
fn link(
    conn: &mut DbConnection,
    session_id: &SessionId,
    (provider, identity, mail_on): (&str, &VerifiedIdentity, bool),
    client: &ClientInfo,
    now: NaiveDateTime,
) -> diesel::QueryResult<Result<Signed, Failure>> {
    transaction(conn, |conn| {
        let Some(user_id) = Session::live_user(conn, session_id, now)? else {
            return refuse(Failure::SignInRequired);
        };
        // Held until this commits: a reset that takes the account over waits, then removes
        // this link with the rest.
        User::touch(conn, &user_id, now)?;
        let Some(user) = User::find_by_id(conn, &user_id)? else {
            return refuse(Failure::SignInRequired);
        };
        if !ownership::may_add_sign_in_method(&user, mail_on) {
            return refuse(Failure::VerifyFirst);
        }
        match Identity::find(conn, &identity.issuer, &identity.subject)? {
            Some(known) if known.user_id == user_id => return Ok(Signed::Linked),
            Some(_) => return refuse(Failure::IdentityTaken),
            None => {}
        }
        Identity::link(
            conn,
            &user_id,
            provider,
            &identity.issuer,
            &identity.subject,
            now,
        )?;
        record(
            conn,
            &user_id,
            EventKind::IdentityLinked,
            Some(session_id),
            client,
            now,
        )?;
        Ok(Signed::Linked)
    })
}

/// What a provider sign-in goes by.
pub(crate) struct SignInRules {
    /// The configured id the identity is linked through.
    provider: String,
    /// `require_verified_email`.
    require_verified: bool,
    return_to: String,
    policy: SessionPolicy,
}

/// The user this provider account signs in as, by the rules of SPEC §8, and a session for
/// them (or, for an account with a second factor, a flow waiting for the code). One
/// transaction: a failure leaves nothing behind.
fn sign_in(
    conn: &mut DbConnection,
    rules: &SignInRules,
    identity: &VerifiedIdentity,
    client: &ClientInfo,
    replace: Option<TokenHash>,
    now: NaiveDateTime,
) -> diesel::QueryResult<Result<Signed, Failure>> {
    transaction(conn, |conn| {
        let user = match Identity::find(conn, &identity.issuer, &identity.subject)? {
            Some(known) => match User::find_by_id(conn, &known.user_id)? {
                Some(user) => user,
                None => return refuse(Failure::Conflict),
            },
            None => account_for(conn, rules, identity, client, now)?,
        };
        if rules.require_verified && user.email_verified_at.is_none() {
            return refuse(Failure::EmailUnverified);
        }
        if user.mfa_enabled() {
            let flow = Token::generate();
            OidcLogin::insert(
                conn,
                &NewOidcLogin {
                    state: &flow.hash(),
                    provider: &rules.provider,
                    nonce: "",
                    pkce_verifier: "",
                    return_to: &rules.return_to,
                    link_session_id: None,
                    mfa_user_id: Some(&user.id),
                },
                now,
                flow_lifetime(),
            )?;
            return Ok(Signed::NeedsCode(flow));
        }
        let (session, token, replaced) = open_session(
            conn,
            &rules.policy,
            &user.id,
            client,
            replace.as_ref(),
            None,
            now,
        )?;
        Ok(Signed::In(session, token, replaced))
    })
}

/// With no account linked to the provider account: the account with its address if both
/// sides have verified it (then linked), a new account if none has it, else a failure.
fn account_for(
    conn: &mut DbConnection,
    rules: &SignInRules,
    identity: &VerifiedIdentity,
    client: &ClientInfo,
    now: NaiveDateTime,
) -> Result<User, Abort<Failure>> {
    // The address as registration would take it, or none: a provider's claim is no better
    // than a typed one (display-name forms, trailing dots, invisible characters).
    let Some(email) = identity
        .email
        .as_deref()
        .map(normalize_email)
        .filter(|e| email_problem(e).is_none())
    else {
        return refuse(Failure::NoEmail);
    };
    let user = match User::find_by_email(conn, &email)? {
        Some(user) if identity.email_verified && user.email_verified_at.is_some() => user,
        Some(_) => return refuse(Failure::LinkRequired),
        None => {
            if rules.require_verified && !identity.email_verified {
                return refuse(Failure::EmailUnverified);
            }
            let name = display_name(identity.name.as_deref(), &email);
            let verified_at = identity.email_verified.then_some(now);
            let user = create_account(conn, (&email, &name), None, verified_at, now)?;
            record(conn, &user.id, EventKind::Registered, None, client, now)?;
            user
        }
    };
    Identity::link(
        conn,
        &user.id,
        &rules.provider,
        &identity.issuer,
        &identity.subject,
        now,
    )?;
    record(conn, &user.id, EventKind::IdentityLinked, None, client, now)?;
    Ok(user)
}

/// The provider's name for the person if registration would take it (cut to the longest a
/// name may be); else the address's local part (which a valid address makes a valid name).
fn display_name(claimed: Option<&str>, email: &str) -> String {
    let name: String = claimed
        .unwrap_or("")
        .trim()
        .chars()
        .take(MAX_NAME_CHARS)
        .collect();
    let name = name.trim();
    if name_problem(name).is_none() {
        name.to_string()
    } else {
        email.split('@').next().unwrap_or(email).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_names_follow_registration_rules() {
        assert_eq!(display_name(Some(" Ann Lee "), "ann@x.example"), "Ann Lee");
        assert_eq!(
            display_name(Some("Ann\u{202E}gpj.exe"), "ann@x.example"),
            "ann"
        );
        assert_eq!(display_name(Some("A\u{200B}dmin"), "ann@x.example"), "ann");
        assert_eq!(display_name(None, "ann@x.example"), "ann");
        assert_eq!(
            display_name(Some(&"n".repeat(300)), "a@x.example").len(),
            100
        );
    }
}
