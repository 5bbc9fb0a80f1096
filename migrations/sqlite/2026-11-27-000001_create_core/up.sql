-- Ids are random UUIDs stored as text and times are UTC without a time zone, bound from the
-- application's clock, so that the same Diesel schema serves PostgreSQL and SQLite.
CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    email         TEXT NOT NULL UNIQUE,
    name          TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    role          TEXT NOT NULL DEFAULT 'user' CHECK (role IN ('user', 'admin')),
    created_at    TIMESTAMP NOT NULL,
    updated_at    TIMESTAMP NOT NULL
);

CREATE TABLE sessions (
    id           TEXT PRIMARY KEY,
    token_hash   BLOB NOT NULL UNIQUE CHECK (length(token_hash) = 32),
    user_id      TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at   TIMESTAMP NOT NULL,
    last_seen_at TIMESTAMP NOT NULL,
    expires_at   TIMESTAMP NOT NULL,
    ip           TEXT,
    user_agent   TEXT
);
CREATE INDEX sessions_user_id_idx ON sessions (user_id);
CREATE INDEX sessions_expires_at_idx ON sessions (expires_at);

-- Events outlive the account they describe (user_id becomes NULL) until retention prunes them.
CREATE TABLE security_events (
    id         TEXT PRIMARY KEY,
    user_id    TEXT REFERENCES users (id) ON DELETE SET NULL,
    kind       TEXT NOT NULL,
    at         TIMESTAMP NOT NULL,
    session_id TEXT,
    ip         TEXT,
    user_agent TEXT
);
CREATE INDEX security_events_user_at_idx ON security_events (user_id, at);
CREATE INDEX security_events_at_idx ON security_events (at);

-- Failed-login counters, keyed by "email:<sha256>" or "ip:<address>", shared by all instances.
CREATE TABLE login_throttles (
    key             TEXT PRIMARY KEY,
    failures        INTEGER NOT NULL,
    window_start    TIMESTAMP NOT NULL,
    last_failure_at TIMESTAMP NOT NULL
);
CREATE INDEX login_throttles_last_failure_idx ON login_throttles (last_failure_at);

CREATE TABLE cleanup_runs (
    id                TEXT PRIMARY KEY,
    started_at        TIMESTAMP NOT NULL,
    finished_at       TIMESTAMP NOT NULL,
    sessions_deleted  INTEGER NOT NULL,
    events_deleted    INTEGER NOT NULL,
    throttles_deleted INTEGER NOT NULL,
    duration_ms       INTEGER NOT NULL
);
CREATE INDEX cleanup_runs_started_at_idx ON cleanup_runs (started_at);
