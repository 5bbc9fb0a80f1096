-- When the account's address was shown to be theirs (a verification or reset link was used).
ALTER TABLE users ADD COLUMN email_verified_at TIMESTAMP;

-- Links sent by mail: only the SHA-256 of the token is kept, and a row is deleted when used,
-- replaced by a newer one of its kind, or voided by a password change.
CREATE TABLE mail_tokens (
    token_hash BYTEA PRIMARY KEY CHECK (length(token_hash) = 32),
    user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    kind       TEXT NOT NULL CHECK (kind IN ('verify_email', 'password_reset')),
    created_at TIMESTAMP NOT NULL,
    expires_at TIMESTAMP NOT NULL
);
-- One live link per account and kind.
CREATE UNIQUE INDEX mail_tokens_user_kind_idx ON mail_tokens (user_id, kind);
CREATE INDEX mail_tokens_expires_at_idx ON mail_tokens (expires_at);
