//! The second factor: TOTP (RFC 6238: SHA-1, 6 digits, 30-second steps) and one-time
//! recovery codes.
//!
//! How secrets are kept:
//! - A TOTP secret (20 random bytes) is sealed with XChaCha20-Poly1305 under `mfa_key` before
//!   it is stored, with the user's id as associated data (a sealed secret copied onto another
//!   account does not open). A copy of the database alone then gives no codes; the key lives in
//!   the configuration, not in the database. Without `mfa_key` the secret is stored as it is
//!   (marked `plain:`), and the server warns at boot outside the debug profile. A plain secret
//!   keeps working after a key is configured; a sealed one needs the key it was sealed with.
//! - Recovery codes are 80 random bits each, so a keyed SHA-256 (the user's id as salt) is
//!   enough: there is nothing to guess from a hash, and checking one costs nothing, unlike a
//!   password hash per stored code.
//!
//! Codes are accepted for the time step before, at and after now, and never twice: the step of
//! the last accepted code is stored, and only a later step passes ([`TotpFactor::use_step`]).

use base64::engine::general_purpose::STANDARD_NO_PAD;
use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use chrono::NaiveDateTime;
use diesel::QueryResult;
use rand::TryRngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use totp_rs::{Algorithm, TOTP};

use crate::config::MfaKey;
use crate::db::models::{RecoveryCode, TotpFactor};
use crate::db::DbConnection;
use crate::domain::UserId;

/// Bytes of a TOTP secret (RFC 4226 recommends 160 bits).
const SECRET_LEN: usize = 20;
const STEP_SECONDS: i64 = 30;
const DIGITS: usize = 6;
/// Recovery codes handed out at enrollment.
pub const RECOVERY_CODES: usize = 10;
/// Random bytes per recovery code: 80 bits, 16 base32 characters.
const RECOVERY_BYTES: usize = 10;
const SEALED: &str = "v1:";
const PLAIN: &str = "plain:";
const NONCE_LEN: usize = 24;

fn random<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    rand::rngs::OsRng
        .try_fill_bytes(&mut bytes)
        .expect("the operating system's random source failed");
    bytes
}

/// What a presented code turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepted {
    /// A TOTP code for an unused step.
    Totp,
    /// An unused recovery code (now spent).
    RecoveryCode,
}

/// A new enrollment, before it is stored: what the user's authenticator app needs.
pub struct Enrollment {
    /// To store ([`TotpFactor::begin`]).
    pub sealed: String,
    /// Base32, for typing into an app.
    pub secret_base32: String,
    /// `otpauth://totp/…`, what the QR code holds.
    pub otpauth_uri: String,
}

/// The second-factor settings: the sealing key and the name apps show beside the code.
#[derive(Clone)]
pub struct SecondFactor {
    key: Option<MfaKey>,
    issuer: String,
}

impl SecondFactor {
    /// `issuer` is what authenticator apps show (the host of `public_url`, or "latchkey").
    pub fn new(key: Option<MfaKey>, public_url: Option<&str>) -> SecondFactor {
        let issuer = public_url
            .and_then(|url| url.split_once("://"))
            .map(|(_, rest)| rest.split('/').next().unwrap_or(rest).to_string())
            .filter(|host| !host.is_empty())
            .unwrap_or_else(|| "latchkey".into());
        SecondFactor { key, issuer }
    }

    fn totp(&self, secret: Vec<u8>, account: &str) -> TOTP {
        // Unchecked: the checks it skips are about the constants here (6 digits, 160 bits)
        // and about a `:` in the label, which the URI percent-encodes.
        TOTP::new_unchecked(
            Algorithm::SHA1,
            DIGITS,
            1,
            STEP_SECONDS as u64,
            secret,
            Some(self.issuer.clone()),
            account.to_string(),
        )
    }

    /// A fresh secret for `user_id`, sealed for storage, with what the user's app needs.
    pub fn enroll(&self, user_id: &UserId, email: &str) -> Enrollment {
        let secret = random::<SECRET_LEN>().to_vec();
        let sealed = self.seal(user_id, &secret);
        let totp = self.totp(secret, email);
        Enrollment {
            sealed,
            secret_base32: totp.get_secret_base32(),
            otpauth_uri: totp.get_url(),
        }
    }

    fn associated_data(user_id: &UserId) -> Vec<u8> {
        [b"latchkey totp secret:".as_slice(), user_id.as_bytes()].concat()
    }

    fn seal(&self, user_id: &UserId, secret: &[u8]) -> String {
        let Some(key) = &self.key else {
            return format!("{PLAIN}{}", STANDARD_NO_PAD.encode(secret));
        };
        let nonce = random::<NONCE_LEN>();
        let aad = SecondFactor::associated_data(user_id);
        let sealed = XChaCha20Poly1305::new(key.bytes().into())
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: secret,
                    aad: &aad,
                },
            )
            .expect("sealing 20 bytes cannot fail");
        format!(
            "{SEALED}{}",
            STANDARD_NO_PAD.encode([nonce.as_slice(), &sealed].concat())
        )
    }

    /// The secret of a stored factor, or `None` when it cannot be opened (another key, no key,
    /// another user's row): then no code matches.
    fn open(&self, user_id: &UserId, stored: &str) -> Option<Vec<u8>> {
        if let Some(plain) = stored.strip_prefix(PLAIN) {
            return STANDARD_NO_PAD.decode(plain).ok();
        }
        let sealed = STANDARD_NO_PAD.decode(stored.strip_prefix(SEALED)?).ok()?;
        if sealed.len() <= NONCE_LEN {
            return None;
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        let aad = SecondFactor::associated_data(user_id);
        let opened = self.key.as_ref().and_then(|key| {
            XChaCha20Poly1305::new(key.bytes().into())
                .decrypt(
                    XNonce::from_slice(nonce),
                    Payload {
                        msg: ciphertext,
                        aad: &aad,
                    },
                )
                .ok()
        });
        if opened.is_none() {
            tracing::error!(
                user = %user_id,
                "a TOTP secret cannot be opened with the configured `mfa_key` (set the key it \
                 was sealed with; meanwhile the user can sign in with a recovery code)"
            );
        }
        opened
    }

    /// The time step `code` is right for (one either side of `now`), if any.
    fn matching_step(&self, secret: Vec<u8>, code: &str, now: NaiveDateTime) -> Option<i64> {
        let totp = self.totp(secret, "");
        let step = now.and_utc().timestamp().div_euclid(STEP_SECONDS);
        [step, step - 1, step + 1].into_iter().find(|&s| {
            let expected = totp.generate((s * STEP_SECONDS).max(0) as u64);
            bool::from(expected.as_bytes().ct_eq(code.as_bytes()))
        })
    }

    /// Checks a 6-digit code against the user's factor (confirmed or not) and uses up its
    /// step. `Ok(false)` for a wrong, replayed or unreadable code.
    pub fn check_totp(
        &self,
        conn: &mut DbConnection,
        user_id: &UserId,
        code: &str,
        now: NaiveDateTime,
    ) -> QueryResult<bool> {
        let code: String = code.chars().filter(|c| !c.is_whitespace()).collect();
        if code.len() != DIGITS || !code.bytes().all(|b| b.is_ascii_digit()) {
            return Ok(false);
        }
        let Some(factor) = TotpFactor::find(conn, user_id)? else {
            return Ok(false);
        };
        let Some(secret) = self.open(user_id, &factor.secret) else {
            return Ok(false);
        };
        match self.matching_step(secret, &code, now) {
            Some(step) => TotpFactor::use_step(conn, user_id, step),
            None => Ok(false),
        }
    }

    /// Checks a code of either kind: a TOTP code, or a recovery code (spent if it matches).
    pub fn check_code(
        &self,
        conn: &mut DbConnection,
        user_id: &UserId,
        code: &str,
        now: NaiveDateTime,
    ) -> QueryResult<Option<Accepted>> {
        if self.check_totp(conn, user_id, code, now)? {
            return Ok(Some(Accepted::Totp));
        }
        match recovery_code_hash(user_id, code) {
            Some(hash) if RecoveryCode::spend(conn, user_id, &hash, now)? => {
                Ok(Some(Accepted::RecoveryCode))
            }
            _ => Ok(None),
        }
    }
}

/// Ten fresh recovery codes (`abcd-efgh-ijkl-mnop`) and the hashes to store.
pub fn new_recovery_codes(user_id: &UserId) -> (Vec<String>, Vec<[u8; 32]>) {
    (0..RECOVERY_CODES)
        .map(|_| {
            let text = base32::encode(
                base32::Alphabet::Rfc4648Lower { padding: false },
                &random::<RECOVERY_BYTES>(),
            );
            let grouped = text
                .as_bytes()
                .chunks(4)
                .map(|chunk| std::str::from_utf8(chunk).expect("base32 is ASCII"))
                .collect::<Vec<_>>()
                .join("-");
            let hash =
                recovery_code_hash(user_id, &grouped).expect("a code we made is well formed");
            (grouped, hash)
        })
        .unzip()
}

/// The stored form of a recovery code, or `None` if `code` cannot be one (any case; dashes
/// and spaces ignored).
fn recovery_code_hash(user_id: &UserId, code: &str) -> Option<[u8; 32]> {
    let normalized: String = code
        .chars()
        .filter(|c| *c != '-' && !c.is_whitespace())
        .map(|c| c.to_ascii_lowercase())
        .collect();
    let well_formed = normalized.len() == RECOVERY_BYTES * 8 / 5
        && normalized
            .bytes()
            .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b));
    well_formed.then(|| {
        Sha256::new()
            .chain_update(b"latchkey recovery code:")
            .chain_update(user_id.as_bytes())
            .chain_update(b":")
            .chain_update(normalized.as_bytes())
            .finalize()
            .into()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> MfaKey {
        MfaKey::parse(&STANDARD_NO_PAD.encode([7u8; 32])).unwrap()
    }

    #[test]
    fn sealed_secrets_open_only_with_their_key_and_user() {
        let (ann, bob) = (UserId::generate(), UserId::generate());
        let sealed = SecondFactor::new(Some(key()), None);
        let secret = [1u8; 20];
        let stored = sealed.seal(&ann, &secret);
        assert!(stored.starts_with("v1:"), "{stored}");
        assert!(!stored.contains(&STANDARD_NO_PAD.encode(secret)));
        assert_eq!(sealed.open(&ann, &stored).as_deref(), Some(&secret[..]));
        assert_eq!(sealed.open(&bob, &stored), None);
        let other = SecondFactor::new(
            Some(MfaKey::parse(&STANDARD_NO_PAD.encode([8u8; 32])).unwrap()),
            None,
        );
        assert_eq!(other.open(&ann, &stored), None);
        assert_eq!(SecondFactor::new(None, None).open(&ann, &stored), None);
        // Without a key the secret is stored as it is, and stays readable once a key is set.
        let plain = SecondFactor::new(None, None).seal(&ann, &secret);
        assert!(plain.starts_with("plain:"));
        assert_eq!(sealed.open(&ann, &plain).as_deref(), Some(&secret[..]));
        assert_eq!(sealed.open(&ann, "v1:AAAA"), None);
        assert_eq!(sealed.open(&ann, "junk"), None);
    }

    #[test]
    fn codes_match_one_step_either_side() {
        // RFC 6238 appendix B, SHA-1: T = 59 s gives 94287082 (8 digits), so 287082 for 6.
        let factor = SecondFactor::new(None, None);
        let secret = b"12345678901234567890".to_vec();
        let at = |secs: i64| {
            chrono::DateTime::from_timestamp(secs, 0)
                .unwrap()
                .naive_utc()
        };
        assert_eq!(
            factor.matching_step(secret.clone(), "287082", at(59)),
            Some(1)
        );
        assert_eq!(
            factor.matching_step(secret.clone(), "287082", at(89)),
            Some(1)
        );
        assert_eq!(
            factor.matching_step(secret.clone(), "287082", at(30)),
            Some(1)
        );
        assert_eq!(
            factor.matching_step(secret.clone(), "287082", at(0)),
            Some(1)
        );
        assert_eq!(factor.matching_step(secret.clone(), "287082", at(90)), None);
        assert_eq!(factor.matching_step(secret, "287083", at(59)), None);
    }

    #[test]
    fn recovery_codes_are_random_and_forgiving_to_type() {
        let user = UserId::generate();
        let (codes, hashes) = new_recovery_codes(&user);
        assert_eq!(codes.len(), 10);
        assert_eq!(hashes.len(), 10);
        let first = &codes[0];
        assert_eq!(first.len(), 19, "{first}");
        assert_eq!(
            recovery_code_hash(&user, &first.to_uppercase().replace('-', " ")),
            Some(hashes[0])
        );
        assert_ne!(
            recovery_code_hash(&UserId::generate(), first),
            Some(hashes[0])
        );
        assert_eq!(recovery_code_hash(&user, "123456"), None);
        let unique: std::collections::HashSet<_> = codes.iter().collect();
        assert_eq!(unique.len(), 10);
    }

    #[test]
    fn issuer_is_the_public_host() {
        let uri = |public: Option<&str>| {
            SecondFactor::new(None, public)
                .enroll(&UserId::generate(), "ann:x@example.com")
                .otpauth_uri
        };
        let named = uri(Some("https://auth.example.com/"));
        assert!(named.starts_with("otpauth://totp/auth.example.com:ann%3Ax%40example.com?secret="));
        assert!(named.ends_with("&issuer=auth.example.com"), "{named}");
        assert!(uri(None).contains("issuer=latchkey"));
    }
}
