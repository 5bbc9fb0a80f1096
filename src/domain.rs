//! Domain values as types: the ids of users and sessions, roles and security event kinds.
//! Rows carry these instead of bare strings, so a session id cannot be passed where a user id
//! belongs and a role is one of two values, not any text.

use std::fmt;
use std::ops::Deref;

use serde::Serialize;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// A fresh random id (UUID v4).
            pub fn generate() -> $name {
                $name(uuid::Uuid::new_v4().to_string())
            }

            /// The canonical form of an id from a URL, or `None` if it cannot be one of ours
            /// (such input never reaches SQL).
            pub fn parse(text: &str) -> Option<$name> {
                uuid::Uuid::parse_str(text).ok().map(|id| $name(id.to_string()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        /// What the database holds (text in both backends).
        impl From<String> for $name {
            fn from(text: String) -> $name {
                $name(text)
            }
        }

        impl Deref for $name {
            type Target = str;

            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

id_type!(
    /// A user's id: a random UUID, public.
    UserId
);
id_type!(
    /// A session's id: a random UUID, public (used to list and revoke; never a credential).
    SessionId
);

/// What a stored text turned out not to be (a row written by something else).
#[derive(Debug)]
pub struct UnknownValue(String);

impl fmt::Display for UnknownValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown stored value `{}`", self.0)
    }
}

impl std::error::Error for UnknownValue {}

macro_rules! text_enum {
    ($(#[$doc:meta])* $name:ident { $($variant:ident => $text:literal),* $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
        pub enum $name {
            $(#[serde(rename = $text)] $variant),*
        }

        impl $name {
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),*
                }
            }
        }

        impl TryFrom<String> for $name {
            type Error = UnknownValue;

            fn try_from(text: String) -> Result<$name, UnknownValue> {
                match text.as_str() {
                    $($text => Ok($name::$variant),)*
                    _ => Err(UnknownValue(text)),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

text_enum!(
    /// A user's role.
    Role {
        User => "user",
        Admin => "admin",
    }
);

text_enum!(
    /// What a security event records.
    EventKind {
        Registered => "registered",
        Login => "login",
        LoginFailed => "login_failed",
        Logout => "logout",
        SessionRevoked => "session_revoked",
        PasswordChanged => "password_changed",
        AccountDeleted => "account_deleted",
        PasswordReset => "password_reset",
        EmailVerified => "email_verified",
        MfaEnabled => "mfa_enabled",
        MfaDisabled => "mfa_disabled",
        RecoveryCodeUsed => "recovery_code_used",
        IdentityLinked => "identity_linked",
        IdentityUnlinked => "identity_unlinked",
    }
);
