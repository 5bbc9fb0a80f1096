DROP TABLE oidc_logins;
DROP TABLE identities;
-- Fails while an account without a password exists: such accounts would have no way in.
ALTER TABLE users ALTER COLUMN password_hash SET NOT NULL;
