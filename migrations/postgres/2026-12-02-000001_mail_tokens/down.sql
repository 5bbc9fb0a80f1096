DROP TABLE mail_tokens;
ALTER TABLE users DROP COLUMN email_verified_at;
