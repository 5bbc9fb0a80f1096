-- When the account turned on its second factor (a TOTP enrollment was confirmed); NULL while
-- sign-in needs only the password. On the users row so that reading a session's user tells
-- whether the factor is on without another table.
ALTER TABLE users ADD COLUMN mfa_enabled_at TIMESTAMP;

-- The account's TOTP secret, sealed with `mfa_key` when one is configured (see src/auth/mfa.rs),
-- and the last time step a code was accepted for, so that no code works twice. A row whose
-- user has no mfa_enabled_at is an enrollment waiting for its first code.
CREATE TABLE totp_factors (
    user_id    TEXT PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    secret     TEXT NOT NULL,
    last_step  BIGINT,
    created_at TIMESTAMP NOT NULL
);

-- One-time recovery codes: only a keyed SHA-256 of each code is kept; used_at is set when one
-- is spent.
CREATE TABLE recovery_codes (
    code_hash  BLOB PRIMARY KEY CHECK (length(code_hash) = 32),
    user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    used_at    TIMESTAMP
);
CREATE INDEX recovery_codes_user_id_idx ON recovery_codes (user_id);
