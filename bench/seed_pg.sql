-- Seeds a latchkey PostgreSQL database for benchmarks (run after the server has migrated it).
-- psql variables: users (accounts user1..N@example.com), sessions (live sessions spread over
-- them), expired (already-expired sessions), hash (the PHC string every account gets).
-- Tokens are derived from their index (raw = sha256('bench-' || i)) so cookies can be written
-- without storing them: the table holds only sha256(raw), as the server does.
\set ON_ERROR_STOP on
INSERT INTO users (id, email, name, password_hash, role, created_at, updated_at)
SELECT md5('bench-user-' || u)::uuid::text, 'user' || u || '@example.com', 'User ' || u, :'hash', 'user',
       now() AT TIME ZONE 'UTC', now() AT TIME ZONE 'UTC'
FROM generate_series(1, :users) AS u
ON CONFLICT (email) DO NOTHING;

INSERT INTO sessions (id, token_hash, user_id, created_at, last_seen_at, expires_at, ip, user_agent)
SELECT md5('bench-session-' || i)::uuid::text,
       sha256(sha256(('bench-' || i)::bytea)),
       md5('bench-user-' || (1 + i % :users))::uuid::text,
       now() AT TIME ZONE 'UTC' - interval '1 hour',
       now() AT TIME ZONE 'UTC' - interval '1 hour',
       now() AT TIME ZONE 'UTC' + interval '6 days',
       '127.0.0.1', 'wrk'
FROM generate_series(1, :sessions) AS i;

INSERT INTO sessions (id, token_hash, user_id, created_at, last_seen_at, expires_at, ip, user_agent)
SELECT md5('bench-expired-' || i)::uuid::text,
       sha256(sha256(('bench-expired-' || i)::bytea)),
       md5('bench-user-' || (1 + i % :users))::uuid::text,
       now() AT TIME ZONE 'UTC' - interval '40 days',
       now() AT TIME ZONE 'UTC' - interval '40 days',
       now() AT TIME ZONE 'UTC' - interval '33 days',
       '127.0.0.1', 'wrk'
FROM generate_series(1, :expired) AS i;

ANALYZE users;
ANALYZE sessions;
