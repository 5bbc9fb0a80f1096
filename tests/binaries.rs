//! The real binaries: configuration errors, the server over real HTTP, and the worker
//! (`--once`, the schedule with SIGTERM, a database that goes away or is down at start).

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::server::free_port;
use common::{pg_base_url, Backend, TestDb};
use diesel::prelude::*;
use latchkey::db::schema::cleanup_runs;
use latchkey::db::Db;

const SERVER: &str = env!("CARGO_BIN_EXE_latchkey");
const WORKER: &str = env!("CARGO_BIN_EXE_latchkey-worker");

/// A scratch working directory (so the repository's Rocket.toml is not picked up).
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        let dir =
            std::env::temp_dir().join(format!("latchkey-bin-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn command(binary: &str, dir: &Path, env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(binary);
    cmd.current_dir(dir)
        .env_remove("DATABASE_URL")
        .env_remove("CRON_SECRET")
        .env("RUST_LOG", "info")
        .env("ROCKET_LOG_LEVEL", "critical")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (key, value) in env {
        cmd.env(key, value);
    }
    cmd
}

/// Runs to completion (bounded) and returns (status, stdout + stderr).
fn run(binary: &str, env: &[(&str, &str)], args: &[&str]) -> (ExitStatus, String) {
    run_in(&Scratch::new().0, binary, env, args)
}

/// [`run`] in a working directory of the caller's.
fn run_in(dir: &Path, binary: &str, env: &[(&str, &str)], args: &[&str]) -> (ExitStatus, String) {
    let mut child = command(binary, dir, env).args(args).spawn().unwrap();
    let status = wait_for_exit(&mut child, Duration::from_secs(30)).expect("exits in time");
    (status, output(&mut child))
}

/// The names of the files in `dir`.
fn files_in(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

fn output(child: &mut Child) -> String {
    let mut text = String::new();
    if let Some(mut out) = child.stdout.take() {
        out.read_to_string(&mut text).unwrap();
    }
    if let Some(mut err) = child.stderr.take() {
        err.read_to_string(&mut text).unwrap();
    }
    text
}

fn wait_for_exit(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    None
}

fn sigterm(child: &Child) {
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn bad_configuration_stops_with_one_clear_line() {
    let cases: [(&[(&str, &str)], &str); 5] = [
        (&[("DATABASE_URL", "mysql://localhost/db")], "database_url"),
        (
            &[("ROCKET_SESSION_IDLE_TIMEOUT", "0")],
            "session_idle_timeout",
        ),
        (&[("ROCKET_POOL_TIMEOUT_MS", "-5")], "pool_timeout_ms"),
        (
            &[("ROCKET_COOKIE_SAME_SITE", "sideways")],
            "cookie_same_site",
        ),
        (
            &[("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")],
            "database_url",
        ),
    ];
    for binary in [SERVER, WORKER] {
        for (env, key) in cases {
            let args: &[&str] = if binary == WORKER { &["--once"] } else { &[] };
            let scratch = Scratch::new();
            let (status, text) = run_in(&scratch.0, binary, env, args);
            assert!(!status.success(), "{binary} {env:?}: {text}");
            // Nothing was created: no SQLite file beside a bad setting, and an unreachable
            // PostgreSQL never becomes one.
            assert_eq!(
                files_in(&scratch.0),
                Vec::<String>::new(),
                "{binary} {env:?}"
            );
            // One line of ours naming the key: "invalid configuration" for a value latchkey
            // cannot use, "database" for one it cannot reach.
            let line = text
                .lines()
                .find(|l| l.starts_with("latchkey") && l.contains(key))
                .unwrap_or_else(|| panic!("{text}"));
            let unreachable = env[0].1.contains("127.0.0.1:1");
            let expected = if unreachable {
                "cannot connect"
            } else {
                "invalid configuration"
            };
            assert!(line.contains(expected), "{line}");
        }
    }
}

/// Starts the server binary on a free port; returns it once /api/health answers.
fn start_server(dir: &Path, database_url: &str) -> (Child, String) {
    let port = free_port();
    let mut child = command(
        SERVER,
        dir,
        &[
            ("DATABASE_URL", database_url),
            ("ROCKET_PORT", &port.to_string()),
        ],
    )
    .spawn()
    .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(reply) = ureq::get(&format!("{base}/api/health")).call() {
            assert_eq!(reply.status(), 200);
            return (child, base);
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("server exited early ({status}): {}", output(&mut child));
        }
        assert!(Instant::now() < deadline, "server did not come up");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn server_over_real_http(backend: Backend) {
    let Some(test_db) = TestDb::new(backend) else {
        return;
    };
    let scratch = Scratch::new();
    let (mut server, base) = start_server(&scratch.0, &test_db.url);
    let health: serde_json::Value = ureq::get(&format!("{base}/api/health"))
        .call()
        .unwrap()
        .into_json()
        .unwrap();
    assert_eq!(health["database"]["status"], "connected");
    assert!(health["database"]["latency_ms"].is_number());
    let reply = ureq::post(&format!("{base}/api/auth/register"))
        .send_json(
            serde_json::json!({ "email": "a@example.com", "name": "A", "password": "password123" }),
        )
        .unwrap();
    assert_eq!(reply.status(), 201);
    let cookie = reply
        .header("set-cookie")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let me = ureq::get(&format!("{base}/api/auth/me"))
        .set("Cookie", &cookie)
        .call()
        .unwrap();
    assert_eq!(me.status(), 200);
    let page = ureq::get(&format!("{base}/")).call().unwrap();
    assert!(page.content_type().contains("html"));
    // Restart: the session survives.
    sigterm(&server);
    assert!(wait_for_exit(&mut server, Duration::from_secs(10))
        .unwrap()
        .success());
    let (mut server, base) = start_server(&scratch.0, &test_db.url);
    let me = ureq::get(&format!("{base}/api/auth/me"))
        .set("Cookie", &cookie)
        .call()
        .unwrap();
    assert_eq!(me.status(), 200);
    sigterm(&server);
    assert!(wait_for_exit(&mut server, Duration::from_secs(10))
        .unwrap()
        .success());
}

#[test]
fn default_configuration_creates_sqlite_file() {
    let scratch = Scratch::new();
    let port = free_port();
    let mut child = command(SERVER, &scratch.0, &[("ROCKET_PORT", &port.to_string())])
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while ureq::get(&format!("http://127.0.0.1:{port}/api/health"))
        .call()
        .is_err()
    {
        assert!(
            Instant::now() < deadline && child.try_wait().unwrap().is_none(),
            "{}",
            output(&mut child)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(scratch.0.join("latchkey.db").exists());
    sigterm(&child);
    assert!(wait_for_exit(&mut child, Duration::from_secs(10))
        .unwrap()
        .success());
}

fn worker_once_and_admin_commands(backend: Backend) {
    let Some(test_db) = TestDb::new(backend) else {
        return;
    };
    let env = [("DATABASE_URL", test_db.url.as_str())];
    // Several times: an early version crashed at exit now and then (pool threads opening TLS
    // connections while libpq/OpenSSL ran their exit handlers).
    for _ in 0..5 {
        let (status, text) = run(WORKER, &env, &["--once"]);
        assert!(status.success(), "{status}: {text}");
        assert!(text.contains("deleted 0 expired sessions"), "{text}");
    }
    let (status, text) = run(WORKER, &env, &["admin", "promote", "nobody@example.com"]);
    assert!(!status.success());
    assert!(text.contains("no account"), "{text}");
    let (status, text) = run(WORKER, &[], &["--help"]);
    assert!(status.success());
    assert!(text.contains("--once") && text.contains("admin"), "{text}");
}

fn recorded_runs(db: &Db) -> i64 {
    db.run_blocking(|conn| cleanup_runs::table.count().get_result(conn))
        .unwrap_or(-1)
}

/// Starts the worker with a schedule of every second and waits until it has recorded `runs`
/// cleanups; returns the running worker.
fn ticking_worker(
    test_db: &TestDb,
    scratch: &Scratch,
    extra_env: &[(&str, &str)],
    runs: i64,
) -> Child {
    let mut env = vec![
        ("DATABASE_URL", test_db.url.as_str()),
        ("ROCKET_CLEANUP_SCHEDULE", "* * * * * *"),
    ];
    env.extend_from_slice(extra_env);
    let mut worker = command(WORKER, &scratch.0, &env).spawn().unwrap();
    let db = Db::pool_only(&test_db.settings());
    let deadline = Instant::now() + Duration::from_secs(20);
    while recorded_runs(&db) < runs {
        assert!(Instant::now() < deadline, "fewer than {runs} runs in 20 s");
        assert!(
            worker.try_wait().unwrap().is_none(),
            "worker exited: {}",
            output(&mut worker)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    worker
}

/// A schedule of every second: at least two runs, then SIGTERM ends the worker with 0.
fn worker_schedule_then_sigterm(backend: Backend) {
    let Some(test_db) = TestDb::new(backend) else {
        return;
    };
    let scratch = Scratch::new();
    let mut worker = ticking_worker(&test_db, &scratch, &[], 2);
    sigterm(&worker);
    let status = wait_for_exit(&mut worker, Duration::from_secs(10)).expect("stops on SIGTERM");
    let text = output(&mut worker);
    assert!(status.success(), "{status}: {text}");
    assert!(text.contains("cleanup finished"), "{text}");
}

/// PostgreSQL: the worker survives its database disappearing between ticks, and a database
/// that is down when it starts.
#[test]
fn worker_survives_database_outages() {
    let Some(test_db) = TestDb::new(Backend::Postgres) else {
        return;
    };
    let scratch = Scratch::new();
    let mut worker = ticking_worker(&test_db, &scratch, &[("ROCKET_POOL_TIMEOUT_MS", "500")], 1);
    let name = test_db.url.rsplit('/').next().unwrap().to_string();
    let mut admin = PgConnection::establish(&format!("{}/postgres", pg_base_url())).unwrap();
    diesel::sql_query(format!("DROP DATABASE {name} WITH (FORCE)"))
        .execute(&mut admin)
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        worker.try_wait().unwrap().is_none(),
        "worker died when its database went away"
    );
    sigterm(&worker);
    let status = wait_for_exit(&mut worker, Duration::from_secs(10)).expect("stops on SIGTERM");
    let text = output(&mut worker);
    assert!(status.success(), "{text}");
    assert!(text.contains("cleanup failed"), "{text}");

    // Down at start: it keeps retrying instead of exiting.
    let mut worker = command(
        WORKER,
        &scratch.0,
        &[("DATABASE_URL", "postgres://postgres@127.0.0.1:1/none")],
    )
    .spawn()
    .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        worker.try_wait().unwrap().is_none(),
        "worker gave up at start"
    );
    sigterm(&worker);
    let status = wait_for_exit(&mut worker, Duration::from_secs(10)).expect("stops on SIGTERM");
    let text = output(&mut worker);
    assert!(status.success(), "{text}");
    assert!(text.contains("retrying"), "{text}");
}

on_both_backends!(
    server_over_real_http,
    worker_once_and_admin_commands,
    worker_schedule_then_sigterm
);
