#!/usr/bin/env python3
"""A login flood for bench/run.sh -f: CONNS threads sign in as random seeded users for SECONDS
seconds over keep-alive connections, and report how the server answered.

    flood.py BASE_URL USERS CONNS SECONDS [polite]

With `polite`, a client that gets 503 waits the Retry-After it was given before its next try,
as a well-behaved client does; without, it retries at once (the worst case for the server).

Prints one line: flood conns=… sent=… ok=… shed=… other=… ok_p50_ms=… shed_p50_ms=…
shed_max_ms=… (shed = 503 service_unavailable; its times are how long a shed sign-in waited
for its answer).
"""
import http.client
import json
import random
import sys
import threading
import time
from urllib.parse import urlparse


def percentile(values, p):
    if not values:
        return 0.0
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p / 100))]


def main():
    base, users, conns, seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    polite = len(sys.argv) > 5 and sys.argv[5] == "polite"
    url = urlparse(base)
    deadline = time.monotonic() + seconds
    results = []
    lock = threading.Lock()

    def client():
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
        mine = []
        while time.monotonic() < deadline:
            body = json.dumps({"email": f"user{random.randint(1, users)}@example.com",
                               "password": "password123"})
            started = time.monotonic()
            try:
                conn.request("POST", "/api/auth/login", body, {"Content-Type": "application/json"})
                answer = conn.getresponse()
                answer.read()
                status = answer.status
                retry_after = float(answer.getheader("Retry-After") or 0)
            except OSError:
                status, retry_after = 0, 0
                conn.close()
                conn = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
            mine.append((status, (time.monotonic() - started) * 1000))
            if polite and status == 503:
                time.sleep(min(retry_after, max(0.0, deadline - time.monotonic())))
        with lock:
            results.extend(mine)

    threads = [threading.Thread(target=client) for _ in range(conns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ok = [ms for status, ms in results if status == 200]
    shed = [ms for status, ms in results if status == 503]
    other = len(results) - len(ok) - len(shed)
    print(f"flood conns={conns} polite={int(polite)} sent={len(results)} ok={len(ok)} shed={len(shed)} other={other} "
          f"ok_p50_ms={percentile(ok, 50):.1f} shed_p50_ms={percentile(shed, 50):.1f} "
          f"shed_max_ms={max(shed, default=0):.1f}")


if __name__ == "__main__":
    main()
