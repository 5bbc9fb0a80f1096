DROP TABLE recovery_codes;
DROP TABLE totp_factors;
ALTER TABLE users DROP COLUMN mfa_enabled_at;
