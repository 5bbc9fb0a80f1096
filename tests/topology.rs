//! Production topology with the real neighbours (SPEC §10): PgBouncer in transaction mode, a
//! streaming-replication standby promoted after the primary dies, several servers and workers
//! behind nginx, and a login flood against `login_queue_max`. Every process is started here on
//! free 127.0.0.1 ports in a temp dir (PostgreSQL and PgBouncer as the `postgres` user) and
//! stopped when the test ends, even when it fails; the machine's own cluster on 5432 is only
//! used as a plain database server.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::server::{fetch, free_port, installed, Answer, Server, SERVER};
use common::{Backend, TestDb};
use serde_json::{json, Value};

const WORKER: &str = env!("CARGO_BIN_EXE_latchkey-worker");
const PASSWORD: &str = "correct horse battery";

/// A scratch directory the `postgres` user owns (PostgreSQL and PgBouncer refuse to run as
/// root), removed at the end.
struct Scratch(PathBuf);

impl Scratch {
    fn new(kind: &str) -> Scratch {
        let dir =
            std::env::temp_dir().join(format!("latchkey-{kind}-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let owned = Command::new("chown")
            .args(["postgres:postgres", dir.to_str().unwrap()])
            .status()
            .unwrap();
        assert!(owned.success(), "chown postgres {}", dir.display());
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `program args…` as the `postgres` user; panics with its output when it fails.
fn as_postgres(program: &str, args: &[&str]) -> String {
    let output = Command::new("runuser")
        .args(["-u", "postgres", "--", program])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{program} {args:?}: {text}");
    text
}

fn pg_bin(name: &str) -> String {
    let versions = std::fs::read_dir("/usr/lib/postgresql").expect("PostgreSQL is installed");
    let mut dirs: Vec<PathBuf> = versions.map(|e| e.unwrap().path()).collect();
    dirs.sort();
    dirs.last()
        .unwrap()
        .join("bin")
        .join(name)
        .display()
        .to_string()
}

/// A PostgreSQL cluster of our own, stopped (immediately) when dropped.
struct Cluster {
    data: PathBuf,
    port: u16,
}

impl Cluster {
    /// A new primary that accepts replication connections from 127.0.0.1.
    fn primary(scratch: &Scratch) -> Cluster {
        let data = scratch.0.join("primary");
        as_postgres(
            &pg_bin("initdb"),
            &[
                "-D",
                data.to_str().unwrap(),
                "--auth=trust",
                "-U",
                "postgres",
                "--no-sync",
            ],
        );
        Cluster::start_in(scratch, data)
    }

    /// A streaming standby of `primary` (a base backup with `-R`).
    fn standby(scratch: &Scratch, primary: &Cluster) -> Cluster {
        let data = scratch.0.join("standby");
        as_postgres(
            &pg_bin("pg_basebackup"),
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &primary.port.to_string(),
                "-U",
                "postgres",
                "-D",
                data.to_str().unwrap(),
                "-R",
                "-X",
                "stream",
                "-c",
                "fast",
            ],
        );
        Cluster::start_in(scratch, data)
    }

    /// Configures the cluster in `data` for a free port and starts it.
    fn start_in(scratch: &Scratch, data: PathBuf) -> Cluster {
        let cluster = Cluster {
            data,
            port: free_port(),
        };
        cluster.configure(&scratch.0);
        cluster.start();
        cluster
    }

    fn configure(&self, socket_dir: &Path) {
        let conf = self.data.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf).unwrap();
        text.push_str(&format!(
            "\nport = {}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
             fsync = off\nwal_level = replica\nmax_wal_senders = 5\nhot_standby = on\n",
            self.port,
            socket_dir.display()
        ));
        std::fs::write(&conf, text).unwrap();
    }

    fn ctl(&self, args: &[&str]) -> String {
        let data = self.data.to_str().unwrap().to_string();
        let log = self.data.with_extension("log").display().to_string();
        let mut all = vec!["-D", &data, "-l", &log];
        all.extend_from_slice(args);
        as_postgres(&pg_bin("pg_ctl"), &all)
    }

    fn start(&self) {
        self.ctl(&["-w", "-t", "30", "start"]);
    }

    fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    fn sql(&self, database: &str, sql: &str) -> String {
        let output = Command::new("psql")
            .args([
                "-X",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                &self.url(database),
            ])
            .args(["-c", sql])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{sql}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let data = self.data.to_str().unwrap().to_string();
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--", &pg_bin("pg_ctl"), "-D", &data])
            .args(["-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A process killed when dropped.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_for_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not come up");
        thread::sleep(Duration::from_millis(50));
    }
}

/// PgBouncer in transaction mode in front of the machine's PostgreSQL, with fewer server
/// connections than latchkey's pool has clients (so consecutive statements of one client do
/// reach different server connections).
fn pgbouncer(scratch: &Scratch, upstream_port: u16) -> (Daemon, u16) {
    let port = free_port();
    let dir = &scratch.0;
    std::fs::write(dir.join("users.txt"), "\"postgres\" \"\"\n").unwrap();
    let ini = format!(
        "[databases]\n* = host=127.0.0.1 port={upstream_port}\n\n[pgbouncer]\n\
         listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n\
         auth_type = trust\nauth_file = {dir}/users.txt\npool_mode = transaction\n\
         default_pool_size = 3\nmax_client_conn = 500\n\
         ignore_startup_parameters = extra_float_digits\n\
         logfile = {dir}/pgbouncer.log\n",
        dir = dir.display()
    );
    std::fs::write(dir.join("pgbouncer.ini"), ini).unwrap();
    let child = Command::new("runuser")
        .args(["-u", "postgres", "--", "pgbouncer"])
        .arg(dir.join("pgbouncer.ini"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let daemon = Daemon(child);
    wait_for_port(port, "pgbouncer");
    (daemon, port)
}

fn post(base: &str, path: &str, body: Value, cookie: Option<&str>) -> Answer {
    let mut req = ureq::post(&format!("{base}{path}"));
    if let Some(cookie) = cookie {
        req = req.set("Cookie", cookie);
    }
    fetch(req, Some(body))
}

fn get(base: &str, path: &str, cookie: &str) -> Answer {
    fetch(
        ureq::get(&format!("{base}{path}"))
            .set("Cookie", cookie)
            .timeout(Duration::from_secs(15)),
        None,
    )
}

/// The session cookie (`name=value`) an answer set.
fn cookie_of(answer: &Answer) -> String {
    let set = answer
        .set_cookies()
        .into_iter()
        .find(|c| c.starts_with("session="))
        .unwrap_or_else(|| panic!("no session cookie: {} {}", answer.status, answer.body));
    set.split(';').next().unwrap().to_string()
}

fn register(base: &str, email: &str) -> String {
    let answer = post(
        base,
        "/api/auth/register",
        json!({ "email": email, "name": "T", "password": PASSWORD }),
        None,
    );
    assert_eq!(answer.status, 201, "{email}: {}", answer.body);
    cookie_of(&answer)
}

/// Runs `args` on the worker binary (or the server's subcommands) and returns (exit, output).
fn run(binary: &str, database_url: &str, env: &[(&str, &str)], args: &[&str]) -> (i32, String) {
    let dir = std::env::temp_dir().join(format!("latchkey-run-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let output = Command::new(binary)
        .current_dir(&dir)
        .env("DATABASE_URL", database_url)
        .env("RUST_LOG", "info")
        .envs(env.iter().copied())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    (
        output.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

const NO_CACHE: (&str, &str) = ("ROCKET_PG_STATEMENT_CACHE", "false");

#[test]
fn every_feature_behind_pgbouncer_in_transaction_mode() {
    if !installed("pgbouncer", "pgbouncer") {
        return;
    }
    let Some(test_db) = TestDb::new(Backend::Postgres) else {
        return;
    };
    let scratch = Scratch::new("pgbouncer");
    let (_bouncer, port) = pgbouncer(&scratch, 5432);
    let name = test_db.url.rsplit('/').next().unwrap().to_string();
    let url = format!("postgres://postgres@127.0.0.1:{port}/{name}");
    // Migrations through the pooler, two processes at once (the lock is transaction-scoped).
    let booting: Vec<_> = (0..2)
        .map(|_| {
            let url = url.clone();
            thread::spawn(move || run(SERVER, &url, &[NO_CACHE], &["migrate"]))
        })
        .collect();
    for boot in booting {
        let (code, text) = boot.join().unwrap();
        assert_eq!(code, 0, "{text}");
    }
    let server = Server::start(&url, &[NO_CACHE, ("ROCKET_POOL_SIZE", "8")]);
    let base = server.base.clone();
    // Many clients at once, each through the whole API.
    let clients: Vec<_> = (0..8)
        .map(|i| {
            let base = base.clone();
            thread::spawn(move || {
                let email = format!("u{i}@example.com");
                let first = register(&base, &email);
                let login = post(
                    &base,
                    "/api/auth/login",
                    json!({ "email": email, "password": PASSWORD }),
                    None,
                );
                assert_eq!(login.status, 200, "{}", login.body);
                let second = cookie_of(&login);
                for _ in 0..10 {
                    assert_eq!(get(&base, "/api/auth/me", &second).status, 200);
                }
                let sessions = get(&base, "/api/auth/sessions", &second);
                assert_eq!(sessions.status, 200, "{}", sessions.body);
                let listed = sessions.json();
                let other = listed["sessions"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|s| s["current"] == false)
                    .expect("the first session is listed")["id"]
                    .as_str()
                    .unwrap()
                    .to_string();
                let revoked = fetch(
                    ureq::delete(&format!("{base}/api/auth/sessions/{other}"))
                        .set("Cookie", &second),
                    None,
                );
                assert_eq!(revoked.status, 204, "{}", revoked.body);
                let ended = get(&base, "/api/auth/me", &first);
                assert_eq!(
                    (ended.status, ended.code()),
                    (401, "unauthenticated".to_string())
                );
                let changed = post(
                    &base,
                    "/api/auth/password",
                    json!({ "current_password": PASSWORD, "new_password": "another long one" }),
                    Some(&second),
                );
                assert_eq!(changed.status, 204, "{}", changed.body);
                let third = cookie_of(&changed);
                assert_eq!(get(&base, "/api/events", &third).status, 200);
                let out = post(&base, "/api/auth/logout", json!({}), Some(&third));
                assert_eq!(out.status, 204, "{}", out.body);
                let ended = get(&base, "/api/auth/me", &third);
                assert_eq!(
                    (ended.status, ended.code()),
                    (401, "unauthenticated".to_string())
                );
            })
        })
        .collect();
    for client in clients {
        client.join().expect("a client failed");
    }
    let health = fetch(ureq::get(&format!("{base}/api/health")), None);
    assert_eq!(health.status, 200, "{}", health.body);
    // The cleanup through the pooler, from both binaries at once: each exits 0, and the
    // single-cleaner lock holds there too.
    let cleaners: Vec<_> = [
        (SERVER, &["cleanup", "--once"][..]),
        (WORKER, &["--once"][..]),
    ]
    .into_iter()
    .map(|(binary, args)| {
        let url = url.clone();
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        thread::spawn(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            run(binary, &url, &[NO_CACHE], &args)
        })
    })
    .collect();
    for cleaner in cleaners {
        let (code, text) = cleaner.join().unwrap();
        assert_eq!(code, 0, "{text}");
        assert!(
            text.contains("deleted ") || text.contains("skipped"),
            "{text}"
        );
    }
    let (_, log) = server.output();
    assert!(!log.contains("prepared statement"), "{log}");
    assert!(!log.contains("ERROR"), "{log}");
}

/// The session an instance behind the balancer made, read back from each instance directly:
/// (status, error code; empty when there is none) from each.
fn me_everywhere(servers: &[Server], cookie: &str) -> Vec<(u16, String)> {
    servers
        .iter()
        .map(|s| {
            let answer = get(&s.base, "/api/auth/me", cookie);
            (answer.status, answer.code())
        })
        .collect()
}

#[test]
fn many_instances_behind_nginx_share_everything() {
    if !installed("nginx", "nginx-light") {
        return;
    }
    let Some(test_db) = TestDb::new(Backend::Postgres) else {
        return;
    };
    // Four servers booting at once on one database (their migrations take turns).
    let starting: Vec<_> = (0..4)
        .map(|_| {
            let url = test_db.url.clone();
            thread::spawn(move || Server::start(&url, &[]))
        })
        .collect();
    let servers: Vec<Server> = starting.into_iter().map(|t| t.join().unwrap()).collect();
    let dir = std::env::temp_dir().join(format!("latchkey-lb-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    let upstreams: String = servers
        .iter()
        .map(|s| format!("    server {};\n", s.base.trim_start_matches("http://")))
        .collect();
    let conf = format!(
        "daemon off;\npid {dir}/nginx.pid;\nerror_log stderr;\nevents {{}}\nhttp {{\n\
         access_log off;\nclient_body_temp_path {dir};\nproxy_temp_path {dir};\n\
         upstream latchkey {{\n{upstreams}}}\n\
         server {{\n  listen 127.0.0.1:{port};\n  location / {{\n    proxy_pass http://latchkey;\n\
         proxy_set_header Host $host:$server_port;\n  }}\n}}\n}}\n",
        dir = dir.display()
    );
    std::fs::write(dir.join("nginx.conf"), conf).unwrap();
    let nginx = Daemon(
        Command::new("nginx")
            .args(["-p", dir.to_str().unwrap(), "-c"])
            .arg(dir.join("nginx.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for_port(port, "nginx");
    let lb = format!("http://127.0.0.1:{port}");

    // A session made through the balancer works on every instance.
    let first = register(&lb, "many@example.com");
    assert_eq!(
        me_everywhere(&servers, &first),
        vec![(200, String::new()); 4]
    );
    let login = post(
        &lb,
        "/api/auth/login",
        json!({ "email": "many@example.com", "password": PASSWORD }),
        None,
    );
    let second = cookie_of(&login);
    let second_id = login.json()["session"]["id"].as_str().unwrap().to_string();
    // Requests through the balancer reach each instance in turn, and all answer for it.
    for _ in 0..8 {
        assert_eq!(get(&lb, "/api/auth/me", &second).status, 200);
    }
    // A revocation through one instance is refused by all of them at once.
    let revoked = fetch(
        ureq::delete(&format!(
            "{}/api/auth/sessions/{second_id}",
            servers[0].base
        ))
        .set("Cookie", &first),
        None,
    );
    assert_eq!(revoked.status, 204, "{}", revoked.body);
    assert_eq!(
        me_everywhere(&servers, &second),
        vec![(401, "unauthenticated".to_string()); 4]
    );
    assert_eq!(
        me_everywhere(&servers, &first),
        vec![(200, String::new()); 4]
    );

    // Throttles add up: five failures spread over the instances, then every one refuses.
    for i in 0..5 {
        let answer = post(
            &servers[i % 4].base,
            "/api/auth/login",
            json!({ "email": "many@example.com", "password": "wrong password" }),
            None,
        );
        assert_eq!(
            (answer.status, answer.code()),
            (401, "invalid_credentials".to_string()),
            "{}",
            answer.body
        );
    }
    for server in &servers {
        let answer = post(
            &server.base,
            "/api/auth/login",
            json!({ "email": "many@example.com", "password": PASSWORD }),
            None,
        );
        assert_eq!(
            (answer.status, answer.code()),
            (429, "too_many_attempts".to_string())
        );
    }
    drop(nginx);
    let _ = std::fs::remove_dir_all(&dir);

    // Two workers on a schedule of every second: exactly one cleans at each tick.
    let workers: Vec<Daemon> = (0..2)
        .map(|_| {
            Daemon(
                Command::new(WORKER)
                    .current_dir(std::env::temp_dir())
                    .env("DATABASE_URL", &test_db.url)
                    .env("ROCKET_CLEANUP_SCHEDULE", "* * * * * *")
                    .env("RUST_LOG", "error")
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap(),
            )
        })
        .collect();
    thread::sleep(Duration::from_millis(5500));
    drop(workers);
    use diesel::{Connection, RunQueryDsl};
    let mut admin = diesel::PgConnection::establish(&test_db.url).unwrap();
    let per_tick: Vec<(i64,)> = diesel::sql_query(
        "SELECT count(*) AS n FROM cleanup_runs GROUP BY date_trunc('second', started_at) ORDER BY 1",
    )
    .load::<Count>(&mut admin)
    .unwrap()
    .into_iter()
    .map(|c| (c.n,))
    .collect();
    assert!(per_tick.len() >= 3, "{per_tick:?}");
    assert!(per_tick.iter().all(|(n,)| *n == 1), "{per_tick:?}");
}

#[derive(diesel::QueryableByName)]
struct Count {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

#[test]
fn failover_to_a_promoted_standby() {
    if !installed("runuser", "util-linux") || !installed("psql", "postgresql-client") {
        return;
    }
    if TestDb::new(Backend::Postgres).is_none() {
        return;
    }
    let scratch = Scratch::new("failover");
    let primary = Cluster::primary(&scratch);
    primary.sql("postgres", "CREATE DATABASE latchkey");
    let standby = Cluster::standby(&scratch, &primary);
    let url = format!(
        "postgres://postgres@127.0.0.1:{},127.0.0.1:{}/latchkey?target_session_attrs=read-write",
        primary.port, standby.port
    );
    let timeout_ms: u64 = 1000;
    let server = Server::start(
        &url,
        &[
            ("ROCKET_POOL_TIMEOUT_MS", "1000"),
            ("ROCKET_IP_MAX_REGISTRATIONS", "1000"),
        ],
    );
    let base = server.base.clone();
    let cookies: Vec<String> = (0..20)
        .map(|i| register(&base, &format!("f{i}@example.com")))
        .collect();
    // Everything acknowledged has reached the standby.
    let written = primary.sql("postgres", "SELECT pg_current_wal_lsn()");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let replayed = standby.sql(
            "postgres",
            &format!("SELECT pg_last_wal_replay_lsn() >= '{written}'::pg_lsn"),
        );
        if replayed == "t" {
            break;
        }
        assert!(Instant::now() < deadline, "the standby did not catch up");
        thread::sleep(Duration::from_millis(50));
    }

    // The primary dies. Until the promotion every answer is 503, never 401, never late.
    let died = Instant::now();
    primary.ctl(&["-m", "immediate", "stop"]);
    let mut outage = Vec::new();
    while died.elapsed() < Duration::from_secs(3) {
        let asked = Instant::now();
        let answer = get(&base, "/api/auth/me", &cookies[0]);
        outage.push((answer.status, asked.elapsed()));
        thread::sleep(Duration::from_millis(100));
    }
    assert!(
        outage.iter().all(|(status, _)| *status == 503),
        "{outage:?}"
    );
    // The pool's wait, plus one connection attempt to each host.
    let slowest = outage.iter().map(|(_, took)| *took).max().unwrap();
    assert!(
        slowest < Duration::from_millis(timeout_ms + 1000),
        "{outage:?}"
    );
    let login = post(
        &base,
        "/api/auth/login",
        json!({ "email": "f1@example.com", "password": PASSWORD }),
        None,
    );
    assert_eq!(login.status, 503, "{}", login.body);

    // The standby is promoted; within seconds, without a restart, requests succeed again.
    let promoted = Instant::now();
    standby.ctl(&["-w", "promote"]);
    let (recovered, since_death) = loop {
        if get(&base, "/api/auth/me", &cookies[0]).status == 200 {
            break (promoted.elapsed(), died.elapsed());
        }
        assert!(
            promoted.elapsed() < Duration::from_secs(15),
            "not back 15 s after the promotion"
        );
        thread::sleep(Duration::from_millis(50));
    };
    // Nothing acknowledged was lost: every session made before the failover is valid.
    for cookie in &cookies {
        assert_eq!(get(&base, "/api/auth/me", cookie).status, 200);
    }
    // And writes go to the new primary.
    register(&base, "after@example.com");
    use std::io::Write as _;
    let _ = writeln!(
        std::io::stderr(),
        "failover: {} answers during the outage, all 503 (slowest {slowest:?}); first 200 {recovered:?} after the promotion, {since_death:?} after the primary died",
        outage.len()
    );
}

/// Past `login_queue_max`, sign-ins are shed at once with 503 and `Retry-After`, nothing is
/// half-created, and signed-in requests keep being answered.
fn a_login_flood_is_shed(backend: Backend) {
    let Some(test_db) = TestDb::new(backend) else {
        return;
    };
    // Every registration comes from 127.0.0.1: a budget that does not stop them first.
    let server = Server::start(
        &test_db.url,
        &[
            ("ROCKET_LOGIN_QUEUE_MAX", "2"),
            ("ROCKET_IP_MAX_REGISTRATIONS", "1000"),
        ],
    );
    let base = server.base.clone();
    let signed_in = register(&base, "calm@example.com");
    let flood: Vec<_> = (0..40)
        .map(|i| {
            let base = base.clone();
            thread::spawn(move || {
                let answer = post(
                    &base,
                    "/api/auth/register",
                    json!({ "email": format!("flood{i}@example.com"), "name": "F", "password": PASSWORD }),
                    None,
                );
                (i, answer.status, answer.code(), answer.header("retry-after").map(str::to_string))
            })
        })
        .collect();
    // Meanwhile, the signed-in user is answered.
    let mut calm = Vec::new();
    for _ in 0..20 {
        calm.push(get(&base, "/api/auth/me", &signed_in).status);
    }
    let answers: Vec<_> = flood.into_iter().map(|t| t.join().unwrap()).collect();
    assert!(calm.iter().all(|s| *s == 200), "{calm:?}");
    let shed: Vec<_> = answers.iter().filter(|a| a.1 == 503).collect();
    for (_, status, code, retry) in &answers {
        match status {
            201 => {}
            503 => {
                assert_eq!(code, "service_unavailable");
                assert_eq!(retry.as_deref(), Some("1"));
            }
            other => panic!("unexpected {other} {code}"),
        }
    }
    assert!(!shed.is_empty(), "nothing was shed: {answers:?}");
    // A shed registration left nothing behind: it can be made now.
    let (i, ..) = shed[0];
    register(&base, &format!("flood{i}@example.com"));
}

on_both_backends!(a_login_flood_is_shed);
