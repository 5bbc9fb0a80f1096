#!/usr/bin/env python3
"""Seeds a latchkey SQLite database for benchmarks, the same rows as seed_pg.sql.

usage: seed_sqlite.py DB_PATH USERS SESSIONS HASH COOKIE_NAME COOKIE_FILE COOKIES
"""
import base64
import datetime
import hashlib
import sqlite3
import sys
import uuid


def md5_uuid(text):
    return str(uuid.UUID(hashlib.md5(text.encode()).hexdigest()))


def main():
    path, users, sessions, phc, cookie_name, cookie_file, cookies = sys.argv[1:8]
    users, sessions, cookies = int(users), int(sessions), int(cookies)
    now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
    fmt = lambda t: t.strftime("%Y-%m-%d %H:%M:%S.%f")
    db = sqlite3.connect(path)
    db.execute("PRAGMA busy_timeout = 5000")
    db.executemany(
        "INSERT OR IGNORE INTO users (id, email, name, password_hash, role, created_at, updated_at) "
        "VALUES (?, ?, ?, ?, 'user', ?, ?)",
        ((md5_uuid(f"bench-user-{u}"), f"user{u}@example.com", f"User {u}", phc, fmt(now), fmt(now))
         for u in range(1, users + 1)),
    )
    seen = fmt(now - datetime.timedelta(hours=1))
    expires = fmt(now + datetime.timedelta(days=6))

    def rows():
        for i in range(1, sessions + 1):
            raw = hashlib.sha256(f"bench-{i}".encode()).digest()
            yield (md5_uuid(f"bench-session-{i}"), hashlib.sha256(raw).digest(),
                   md5_uuid(f"bench-user-{1 + i % users}"), seen, seen, expires, "127.0.0.1", "wrk")

    db.executemany(
        "INSERT INTO sessions (id, token_hash, user_id, created_at, last_seen_at, expires_at, ip, user_agent) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        rows(),
    )
    db.commit()
    db.execute("ANALYZE")
    with open(cookie_file, "w") as out:
        for i in range(1, min(cookies, sessions) + 1):
            raw = hashlib.sha256(f"bench-{i}".encode()).digest()
            token = base64.urlsafe_b64encode(raw).decode().rstrip("=")
            out.write(f"{cookie_name}={token}\n")


if __name__ == "__main__":
    main()
