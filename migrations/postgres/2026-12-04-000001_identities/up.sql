-- Accounts made by an OpenID provider's sign-in have no password.
ALTER TABLE users ALTER COLUMN password_hash DROP NOT NULL;

-- A user's accounts at OpenID providers: the provider's issuer and its subject for the user
-- identify one account there, linked to one latchkey user. `provider` is the configured id
-- it was linked through (what the page shows).
CREATE TABLE identities (
    id         TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    provider   TEXT NOT NULL,
    issuer     TEXT NOT NULL,
    subject    TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    UNIQUE (issuer, subject)
);
CREATE INDEX identities_user_id_idx ON identities (user_id);

-- Provider sign-ins under way: only the SHA-256 of the `state` is kept; the row holds what
-- the callback needs (PKCE verifier, nonce, where to go, the session that is linking) and is
-- deleted by the callback that uses it, so a callback cannot be replayed.
CREATE TABLE oidc_logins (
    state_hash      BYTEA PRIMARY KEY CHECK (length(state_hash) = 32),
    provider        TEXT NOT NULL,
    nonce           TEXT NOT NULL,
    pkce_verifier   TEXT NOT NULL,
    return_to       TEXT NOT NULL,
    link_session_id TEXT,
    -- Set once the provider has signed in a user whose account has a second factor: the row
    -- then waits for that code (its nonce and verifier are spent).
    mfa_user_id     TEXT REFERENCES users (id) ON DELETE CASCADE,
    created_at      TIMESTAMP NOT NULL,
    expires_at      TIMESTAMP NOT NULL
);
CREATE INDEX oidc_logins_expires_at_idx ON oidc_logins (expires_at);
