-- The token a refresh replaced, so that a logout sent with it (racing the refresh) still finds
-- and ends its session. Only ever compared by logout; never accepted for authentication.
ALTER TABLE sessions ADD COLUMN previous_token_hash BLOB;
CREATE INDEX sessions_previous_token_hash ON sessions (previous_token_hash) WHERE previous_token_hash IS NOT NULL;
