DROP TABLE oidc_logins;
DROP TABLE identities;
-- The NOT NULL constraint on users.password_hash is not put back (SQLite would need the table
-- rebuilt again, and accounts without a password would have no way in).
