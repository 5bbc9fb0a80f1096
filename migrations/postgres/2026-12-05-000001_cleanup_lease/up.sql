-- The single-cleaner lease: at most one row, naming the cleanup that holds it and until when.
-- A cleanup takes it (when free or expired), renews it with each batch and gives it back, so
-- that one process cleans at a time without holding a connection or a lock for the whole run.
CREATE TABLE cleanup_lease (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    holder     TEXT NOT NULL,
    expires_at TIMESTAMP NOT NULL
);
