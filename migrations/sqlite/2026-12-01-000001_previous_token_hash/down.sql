DROP INDEX sessions_previous_token_hash;
ALTER TABLE sessions DROP COLUMN previous_token_hash;
