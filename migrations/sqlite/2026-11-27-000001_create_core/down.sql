DROP TABLE cleanup_runs;
DROP TABLE login_throttles;
DROP TABLE security_events;
DROP TABLE sessions;
DROP TABLE users;
