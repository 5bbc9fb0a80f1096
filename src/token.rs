//! Tokens: a secret handed to one client (a session token, a provider sign-in's state, a
//! mailed link), 32 random bytes from the OS, base64url without padding on the wire (43
//! characters), and only their SHA-256 in the database. `Debug` never shows a secret, and the
//! bytes are wiped when a token is dropped.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::TryRngCore;
use sha2::{Digest, Sha256};

const TOKEN_BYTES: usize = 32;
/// Length of 32 bytes in unpadded base64.
pub const TOKEN_LEN: usize = 43;

/// The secret a client holds. Only ever sent to that client; never stored or logged.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    raw: [u8; TOKEN_BYTES],
}

impl Drop for Token {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.raw);
    }
}

impl Token {
    /// A fresh token from the operating system's CSPRNG.
    pub fn generate() -> Token {
        let mut raw = [0u8; TOKEN_BYTES];
        rand::rngs::OsRng
            .try_fill_bytes(&mut raw)
            .expect("the operating system's random source failed");
        Token { raw }
    }

    /// Accepts exactly the shape we hand out (43 base64url characters that decode to 32
    /// bytes); anything else is refused here, before any database work.
    pub fn parse(text: &str) -> Option<Token> {
        if text.len() != TOKEN_LEN {
            return None;
        }
        let mut raw = [0u8; TOKEN_BYTES];
        match URL_SAFE_NO_PAD.decode_slice(text.as_bytes(), &mut raw) {
            Ok(TOKEN_BYTES) => Some(Token { raw }),
            _ => None,
        }
    }

    /// The text sent in the cookie or the JSON body.
    pub fn expose(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.raw)
    }

    pub fn hash(&self) -> TokenHash {
        TokenHash(Sha256::digest(self.raw).into())
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// SHA-256 of a token's raw bytes: what the `sessions.token_hash` column holds.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TokenHash(pub [u8; 32]);

impl TokenHash {
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenHash(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_shape() {
        let token = Token::generate();
        let text = token.expose();
        assert_eq!(text.len(), TOKEN_LEN);
        assert_eq!(Token::parse(&text), Some(token.clone()));
        assert_ne!(Token::generate(), token);
        assert_eq!(token.hash().as_bytes().len(), 32);
        assert!(!format!("{token:?}").contains(&text));
    }

    #[test]
    fn rejects_everything_else() {
        let good = Token::generate().expose();
        let padded = format!("{good}=");
        let short = &good[..42];
        let with_plus = format!("+{}", &good[1..]);
        // The last character of 43 carries 2 spare bits, which must be zero.
        let noncanonical = format!("{}B", &"A".repeat(42));
        for bad in [
            "",
            "x",
            short,
            &padded,
            &with_plus,
            &noncanonical,
            &"A".repeat(44),
            &format!("{}é", "A".repeat(41)),
        ] {
            assert!(Token::parse(bad).is_none(), "{bad:?} was accepted");
        }
    }
}
