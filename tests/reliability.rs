//! Faults with the real server binary over real HTTP: crashes and restarts, two instances on
//! one database, a database outage (through a TCP proxy this test controls, so the shared
//! PostgreSQL server is never touched), races, and graceful shutdown.

mod common;

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::server::{agent, send, Server};
use common::{Backend, TestDb};
use serde_json::json;

const PASSWORD: &str = "correct horse battery";

/// These tests sign one account in many times at once. Each sign-in counts against the login
/// budget until its password checks out, so a default budget (5) would refuse most of them.
const CONCURRENT_SIGN_INS: [(&str, &str); 2] = [
    ("ROCKET_LOGIN_MAX_FAILURES", "1000"),
    ("ROCKET_IP_MAX_FAILURES", "1000"),
];

/// Registers (which opens a cookie session the tests never use) and returns a bearer token.
fn register(base: &str, email: &str) -> String {
    let (status, body, _) = send(
        agent().post(&format!("{base}/api/auth/register")),
        Some(json!({ "email": email, "name": "R", "password": PASSWORD })),
    );
    assert_eq!(status, 201, "{body}");
    token(base, email)
}

fn token(base: &str, email: &str) -> String {
    let (status, body, _) = send(
        agent().post(&format!("{base}/api/auth/token")),
        Some(json!({ "email": email, "password": PASSWORD })),
    );
    assert_eq!(status, 200, "{body}");
    body["token"].as_str().unwrap().to_string()
}

fn me(base: &str, token: &str) -> u16 {
    me_code(base, token).0
}

/// `/api/auth/me` with a bearer token: (status, error code; empty when there is none).
fn me_code(base: &str, token: &str) -> (u16, String) {
    let (status, body, _) = send(
        agent()
            .get(&format!("{base}/api/auth/me"))
            .set("Authorization", &format!("Bearer {token}")),
        None,
    );
    let code = body["error"]["code"].as_str().unwrap_or("").to_string();
    (status, code)
}

/// SIGTERM + restart, then SIGKILL in the middle of 100 concurrent logins and /me calls: every
/// session whose creation got a 2xx before the kill works afterwards.
fn sessions_survive_restart_and_kill(backend: Backend) {
    let Some(db) = TestDb::new(backend) else {
        return;
    };
    let mut server = Server::start(&db.url, &CONCURRENT_SIGN_INS);
    let before = register(&server.base, "a@example.com");
    server.signal("-TERM");
    assert!(server
        .wait(Duration::from_secs(10))
        .expect("exits")
        .success());
    let mut server = Server::start(&db.url, &CONCURRENT_SIGN_INS);
    assert_eq!(me(&server.base, &before), 200);

    let base = server.base.clone();
    let granted = Arc::new(Mutex::new(Vec::new()));
    let start = Arc::new(Barrier::new(101));
    let workers: Vec<_> = (0..100)
        .map(|i| {
            let (base, granted, start, before) =
                (base.clone(), granted.clone(), start.clone(), before.clone());
            thread::spawn(move || {
                start.wait();
                for _ in 0..20 {
                    if i % 2 == 0 {
                        let (status, body, _) = send(
                            agent().post(&format!("{base}/api/auth/token")),
                            Some(json!({ "email": "a@example.com", "password": PASSWORD })),
                        );
                        if status == 200 {
                            granted
                                .lock()
                                .unwrap()
                                .push(body["token"].as_str().unwrap().to_string());
                        }
                        if status == 0 {
                            break;
                        }
                    } else if me(&base, &before) == 0 {
                        break;
                    }
                }
            })
        })
        .collect();
    start.wait();
    thread::sleep(Duration::from_millis(1500));
    server.signal("-KILL");
    for w in workers {
        w.join().unwrap();
    }
    server.wait(Duration::from_secs(5)).expect("killed");
    let granted = granted.lock().unwrap().clone();
    assert!(!granted.is_empty(), "no login finished before the kill");
    let server = Server::start(&db.url, &CONCURRENT_SIGN_INS);
    for token in &granted {
        assert_eq!(
            me(&server.base, token),
            200,
            "a session granted before SIGKILL was lost"
        );
    }
    assert_eq!(me(&server.base, &before), 200);
    eprintln!(
        "{backend:?}: {} sessions granted before SIGKILL, all valid after restart",
        granted.len()
    );
}

/// Two instances on one database: sessions, revocations and throttling are shared at once.
fn two_instances_share_everything(backend: Backend) {
    let Some(db) = TestDb::new(backend) else {
        return;
    };
    let env = [("ROCKET_LOGIN_MAX_FAILURES", "3")];
    let a = Server::start(&db.url, &env);
    let b = Server::start(&db.url, &env);
    let made_on_a = register(&a.base, "a@example.com");
    assert_eq!(me(&b.base, &made_on_a), 200);
    let (status, _, _) = send(
        agent()
            .post(&format!("{}/api/auth/logout", b.base))
            .set("Authorization", &format!("Bearer {made_on_a}")),
        None,
    );
    assert_eq!(status, 204);
    assert_eq!(
        me_code(&a.base, &made_on_a),
        (401, "unauthenticated".into()),
        "logout on B is refused on A at once"
    );

    let second = token(&a.base, "a@example.com");
    let third = token(&b.base, "a@example.com");
    let (status, body, _) = send(
        agent()
            .delete(&format!("{}/api/auth/sessions", b.base))
            .set("Authorization", &format!("Bearer {third}")),
        None,
    );
    // The registration's own session and `second`.
    assert_eq!((status, body["revoked"].as_i64()), (200, Some(2)));
    assert_eq!(
        me_code(&a.base, &second),
        (401, "unauthenticated".into()),
        "revoke on B is refused on A at once"
    );

    let wrong = |base: &str| {
        let (status, body, _) = send(
            agent().post(&format!("{base}/api/auth/login")),
            Some(json!({ "email": "a@example.com", "password": "wrong password" })),
        );
        let code = body["error"]["code"].as_str().unwrap_or("").to_string();
        (status, code)
    };
    for base in [&a.base, &b.base, &a.base] {
        assert_eq!(wrong(base), (401, "invalid_credentials".into()));
    }
    assert_eq!(
        wrong(&b.base),
        (429, "too_many_attempts".into()),
        "failures on A and B count together"
    );
    let (right, body, _) = send(
        agent().post(&format!("{}/api/auth/login", a.base)),
        Some(json!({ "email": "a@example.com", "password": PASSWORD })),
    );
    assert_eq!(
        (right, body["error"]["code"].as_str()),
        (429, Some("too_many_attempts"))
    );
}

/// A TCP proxy in front of PostgreSQL that the test can cut and restore.
struct Proxy {
    port: u16,
    up: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<TcpStream>>>,
    stop_accepting: Arc<AtomicBool>,
    acceptor: Option<thread::JoinHandle<()>>,
}

impl Proxy {
    fn start(upstream: &'static str, port: u16) -> Proxy {
        let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let up = Arc::new(AtomicBool::new(true));
        let connections = Arc::new(Mutex::new(Vec::new()));
        let stop_accepting = Arc::new(AtomicBool::new(false));
        let (conns, stop) = (connections.clone(), stop_accepting.clone());
        let acceptor = thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((client, _)) => {
                        client.set_nonblocking(false).unwrap();
                        let Ok(server) = TcpStream::connect(upstream) else {
                            continue;
                        };
                        let pairs = [
                            (client.try_clone().unwrap(), server.try_clone().unwrap()),
                            (server.try_clone().unwrap(), client.try_clone().unwrap()),
                        ];
                        conns.lock().unwrap().extend([client, server]);
                        for (mut from, mut to) in pairs {
                            thread::spawn(move || {
                                let mut buf = [0u8; 16384];
                                while let Ok(n) = from.read(&mut buf) {
                                    if n == 0 || to.write_all(&buf[..n]).is_err() {
                                        break;
                                    }
                                }
                                let _ = to.shutdown(Shutdown::Both);
                            });
                        }
                    }
                    Err(_) => thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Proxy {
            port,
            up,
            connections,
            stop_accepting,
            acceptor: Some(acceptor),
        }
    }

    /// Closes the port and every connection through it: the database is "down".
    fn cut(&mut self) {
        self.up.store(false, Ordering::SeqCst);
        self.stop_accepting.store(true, Ordering::SeqCst);
        if let Some(acceptor) = self.acceptor.take() {
            acceptor.join().unwrap();
        }
        for conn in self.connections.lock().unwrap().drain(..) {
            let _ = conn.shutdown(Shutdown::Both);
        }
    }
}

/// A server whose PostgreSQL connections go through a proxy the test can cut.
fn behind_proxy(db: &TestDb, env: &[(&str, &str)]) -> (Proxy, Server) {
    let proxy = Proxy::start("127.0.0.1:5432", 0);
    let url = db
        .url
        .replace("127.0.0.1:5432", &format!("127.0.0.1:{}", proxy.port));
    let server = Server::start(&url, env);
    (proxy, server)
}

#[test]
fn database_outage_is_503_and_recovers() {
    let Some(db) = TestDb::new(Backend::Postgres) else {
        return;
    };
    let (mut proxy, server) = behind_proxy(&db, &[("ROCKET_POOL_TIMEOUT_MS", "1000")]);
    let token = register(&server.base, "a@example.com");
    let cookie_login = send(
        agent().post(&format!("{}/api/auth/login", server.base)),
        Some(json!({ "email": "a@example.com", "password": PASSWORD })),
    );
    let cookie = cookie_login
        .2
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();

    proxy.cut();
    let mut answers = HashSet::new();
    let outage = Instant::now();
    for _ in 0..5 {
        let started = Instant::now();
        let (status, body, set_cookie) = send(
            agent()
                .get(&format!("{}/api/auth/me", server.base))
                .set("Cookie", &cookie),
            None,
        );
        assert!(
            started.elapsed() < Duration::from_millis(4000),
            "a request hung for {:?}",
            started.elapsed()
        );
        assert_eq!(status, 503, "{body}");
        assert_eq!(body["error"]["code"], "service_unavailable");
        assert!(
            set_cookie.is_none(),
            "the cookie must be left alone during an outage"
        );
        answers.insert(status);
        assert_eq!(me(&server.base, &token), 503);
        let (status, body, _) = send(
            agent().post(&format!("{}/api/auth/login", server.base)),
            Some(json!({ "email": "a@example.com", "password": PASSWORD })),
        );
        assert_eq!(status, 503, "{body}");
    }
    let health = send(agent().get(&format!("{}/api/health", server.base)), None);
    assert_eq!(
        (health.0, health.1["status"].as_str()),
        (503, Some("unavailable"))
    );
    eprintln!("outage answers: {answers:?} over {:?}", outage.elapsed());

    // The database comes back on the same address: everything works again without a restart.
    let _proxy = Proxy::start("127.0.0.1:5432", proxy.port);
    let restored = Instant::now();
    let deadline = restored + Duration::from_secs(10);
    loop {
        let (status, _, _) = send(
            agent()
                .get(&format!("{}/api/auth/me", server.base))
                .set("Cookie", &cookie),
            None,
        );
        if status == 200 {
            break;
        }
        assert_eq!(status, 503);
        assert!(Instant::now() < deadline, "did not recover within 10 s");
        thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(me(&server.base, &token), 200);
    eprintln!(
        "recovered {:?} after the database came back",
        restored.elapsed()
    );
}

/// A database restart while the server is idle (every pooled connection dies quietly) fails
/// no request afterwards: idle connections are pinged before use.
#[test]
fn database_restart_while_idle_fails_no_request() {
    let Some(db) = TestDb::new(Backend::Postgres) else {
        return;
    };
    let (mut proxy, server) = behind_proxy(&db, &[("ROCKET_POOL_SIZE", "4")]);
    let token = register(&server.base, "a@example.com");
    // Use several pooled connections, then let them sit idle.
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let (base, token) = (server.base.clone(), token.clone());
            thread::spawn(move || (0..20).all(|_| me(&base, &token) == 200))
        })
        .collect();
    assert!(workers.into_iter().all(|w| w.join().unwrap()));
    proxy.cut();
    let _proxy = Proxy::start("127.0.0.1:5432", proxy.port);
    thread::sleep(Duration::from_millis(1500));
    let statuses: Vec<u16> = (0..10).map(|_| me(&server.base, &token)).collect();
    assert!(
        statuses.iter().all(|s| *s == 200),
        "after the restart: {statuses:?}"
    );
}

/// 50 parallel refreshes of one token: exactly one wins; 50 parallel logins: 50 sessions;
/// logout-all racing logins never leaves an earlier session valid.
fn races(backend: Backend) {
    let Some(db) = TestDb::new(backend) else {
        return;
    };
    let server = Server::start(&db.url, &CONCURRENT_SIGN_INS);
    let base = server.base.clone();
    let original = register(&base, "a@example.com");

    let start = Arc::new(Barrier::new(50));
    let refreshes: Vec<_> = (0..50)
        .map(|_| {
            let (base, original, start) = (base.clone(), original.clone(), start.clone());
            thread::spawn(move || {
                start.wait();
                send(
                    agent()
                        .post(&format!("{base}/api/auth/refresh"))
                        .set("Authorization", &format!("Bearer {original}")),
                    None,
                )
            })
        })
        .collect();
    let results: Vec<_> = refreshes.into_iter().map(|t| t.join().unwrap()).collect();
    let winners: Vec<String> = results
        .iter()
        .filter(|r| r.0 == 200)
        .map(|r| r.1["token"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        winners.len(),
        1,
        "statuses: {:?}",
        results.iter().map(|r| r.0).collect::<Vec<_>>()
    );
    assert!(results
        .iter()
        .all(|r| r.0 == 200 || (r.0 == 401 && r.1["error"]["code"] == "unauthenticated")));
    assert_eq!(me_code(&base, &original), (401, "unauthenticated".into()));
    assert_eq!(me(&base, &winners[0]), 200);

    let start = Arc::new(Barrier::new(50));
    let logins: Vec<_> = (0..50)
        .map(|_| {
            let (base, start) = (base.clone(), start.clone());
            thread::spawn(move || {
                start.wait();
                token(&base, "a@example.com")
            })
        })
        .collect();
    let tokens: HashSet<String> = logins.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(tokens.len(), 50);
    let (_, listed, _) = send(
        agent()
            .get(&format!("{base}/api/auth/sessions"))
            .set("Authorization", &format!("Bearer {}", winners[0])),
        None,
    );
    // 50 logins, the refreshed session, and the registration's own session.
    assert_eq!(listed["sessions"].as_array().unwrap().len(), 52);

    // logout-all while 20 more logins run: every session that existed before it is gone.
    let start = Arc::new(Barrier::new(21));
    let late: Vec<_> = (0..20)
        .map(|_| {
            let (base, start) = (base.clone(), start.clone());
            thread::spawn(move || {
                start.wait();
                token(&base, "a@example.com")
            })
        })
        .collect();
    start.wait();
    let (status, _, _) = send(
        agent()
            .post(&format!("{base}/api/auth/logout-all"))
            .set("Authorization", &format!("Bearer {}", winners[0])),
        None,
    );
    assert_eq!(status, 204);
    for token in tokens.iter().chain(&winners) {
        assert_eq!(
            me_code(&base, token),
            (401, "unauthenticated".into()),
            "a session from before logout-all survived it"
        );
    }
    for t in late {
        let (status, code) = me_code(&base, &t.join().unwrap());
        assert!(
            status == 200 || (status == 401 && code == "unauthenticated"),
            "{status} {code}"
        );
    }
}

/// SIGTERM with requests in flight: they complete, new connections are refused, exit 0.
fn graceful_shutdown(backend: Backend) {
    let Some(db) = TestDb::new(backend) else {
        return;
    };
    let mut server = Server::start(&db.url, &CONCURRENT_SIGN_INS);
    let base = server.base.clone();
    register(&base, "a@example.com");
    let start = Arc::new(Barrier::new(11));
    let inflight: Vec<_> = (0..10)
        .map(|_| {
            let (base, start) = (base.clone(), start.clone());
            thread::spawn(move || {
                start.wait();
                send(
                    agent().post(&format!("{base}/api/auth/token")),
                    Some(json!({ "email": "a@example.com", "password": PASSWORD })),
                )
                .0
            })
        })
        .collect();
    start.wait();
    thread::sleep(Duration::from_millis(30));
    server.signal("-TERM");
    let statuses: Vec<u16> = inflight.into_iter().map(|t| t.join().unwrap()).collect();
    let status = server
        .wait(Duration::from_secs(10))
        .expect("exits within the grace period");
    assert!(status.success(), "{status}");
    assert!(
        statuses.iter().all(|s| *s == 200),
        "in-flight requests: {statuses:?}"
    );
    assert!(
        TcpStream::connect(base.trim_start_matches("http://")).is_err(),
        "new connections are refused"
    );
}

/// Oversized headers and bodies over real HTTP get the contract's 4xx, never 5xx.
fn oversized_requests(backend: Backend) {
    let Some(db) = TestDb::new(backend) else {
        return;
    };
    let server = Server::start(&db.url, &CONCURRENT_SIGN_INS);
    // A large cookie is an unknown token like any other: 401, and it is cleared. (hyper takes
    // heads up to about 400 KiB; a larger one is refused before Rocket sees it.)
    for size in [8_000, 200_000] {
        let (status, body, cleared) = send(
            agent()
                .get(&format!("{}/api/auth/me", server.base))
                .set("Cookie", &format!("session={}", "A".repeat(size))),
            None,
        );
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (401, Some("unauthenticated")),
            "{size}"
        );
        let cleared = cleared.expect("the stale cookie is cleared");
        assert!(
            cleared.starts_with("session=;") && cleared.contains("Max-Age=0"),
            "{cleared}"
        );
    }
    // Just over the limit: the server reads 16 KiB, answers 413 and closes.
    let (status, body, _) = send(
        agent().post(&format!("{}/api/auth/login", server.base)),
        Some(json!({ "email": "x".repeat(64 * 1024), "password": "x" })),
    );
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (413, Some("payload_too_large"))
    );
    // Far over it, the client may still be writing when the server hangs up: 413 or a closed
    // connection, never a 5xx.
    let (status, _, _) = send(
        agent().post(&format!("{}/api/auth/login", server.base)),
        Some(json!({ "email": "x".repeat(1_000_000), "password": "x" })),
    );
    assert!(status == 413 || status == 0, "{status}");
    assert_eq!(
        ureq::get(&format!("{}/api/health", server.base))
            .call()
            .unwrap()
            .status(),
        200
    );
}

/// Many clients at once, two per account and some with unknown tokens: every /me answers with
/// its own caller's account (lookups share queries under load; answers must never cross).
fn concurrent_lookups_never_cross(backend: Backend) {
    let Some(db) = TestDb::new(backend) else {
        return;
    };
    let server = Server::start(&db.url, &CONCURRENT_SIGN_INS);
    let base = server.base.clone();
    let accounts: Vec<(String, String)> = (0..8)
        .map(|i| {
            let email = format!("u{i}@example.com");
            let token = register(&base, &email);
            (email, token)
        })
        .collect();
    let clients = 18;
    let start = Arc::new(Barrier::new(clients));
    let threads: Vec<_> = (0..clients)
        .map(|i| {
            let (base, start) = (base.clone(), start.clone());
            let account = accounts.get(i / 2).cloned();
            thread::spawn(move || {
                let token = account
                    .as_ref()
                    .map_or_else(|| "A".repeat(43), |(_, token)| token.clone());
                start.wait();
                for _ in 0..40 {
                    let (status, body, _) = send(
                        agent()
                            .get(&format!("{base}/api/auth/me"))
                            .set("Authorization", &format!("Bearer {token}")),
                        None,
                    );
                    match &account {
                        Some((email, _)) => {
                            assert_eq!(status, 200, "{body}");
                            assert_eq!(body["user"]["email"], email.as_str());
                        }
                        None => assert_eq!(
                            (status, body["error"]["code"].as_str()),
                            (401, Some("unauthenticated")),
                            "{body}"
                        ),
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let metrics = ureq::get(&format!("{base}/metrics"))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} in /metrics"))
    };
    let lookups = value("latchkey_session_lookup_batch_size_sum");
    let queries = value("latchkey_session_lookup_batch_size_count");
    assert_eq!(lookups, (clients * 40) as f64);
    assert!(
        queries < lookups,
        "no lookup shared a query: {queries} queries"
    );
}

on_both_backends!(
    concurrent_lookups_never_cross,
    sessions_survive_restart_and_kill,
    two_instances_share_everything,
    races,
    graceful_shutdown,
    oversized_requests
);
