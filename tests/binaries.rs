//! The real binaries: configuration errors, the server over real HTTP, and the worker
//! (`--once`, the schedule with SIGTERM, a database that goes away or is down at start).

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::server::{fetch, free_port, Server};
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

/// SIGTERM, then it must exit 0 within 10 s (its output is shown otherwise).
fn stop_cleanly(child: &mut Child) {
    sigterm(child);
    let status = wait_for_exit(child, Duration::from_secs(10));
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}: {}",
        output(child)
    );
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
            let (expected, code) = if unreachable {
                ("cannot connect", 1)
            } else {
                ("invalid configuration", 2)
            };
            assert!(line.contains(expected), "{line}");
            assert_eq!(status.code(), Some(code), "{binary} {env:?}: {text}");
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
    stop_cleanly(&mut server);
    let (mut server, base) = start_server(&scratch.0, &test_db.url);
    let me = ureq::get(&format!("{base}/api/auth/me"))
        .set("Cookie", &cookie)
        .call()
        .unwrap();
    assert_eq!(me.status(), 200);
    stop_cleanly(&mut server);
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

/// The lines of `text` that are latchkey's own one-line errors.
fn error_lines(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|l| l.starts_with("latchkey: ") || l.starts_with("latchkey-worker: "))
        .collect()
}

#[test]
fn help_version_and_unknown_flags_never_serve() {
    let version = format!("{} {}", "latchkey", env!("CARGO_PKG_VERSION"));
    for (binary, args, code, expected) in [
        (SERVER, &["--help"][..], 0, "migrate"),
        (SERVER, &["help"][..], 0, "cleanup"),
        (SERVER, &["--version"][..], 0, version.as_str()),
        (SERVER, &["-V"][..], 0, version.as_str()),
        (SERVER, &["--bogus"][..], 2, "unexpected argument '--bogus'"),
        (
            SERVER,
            &["serve", "--port", "1"][..],
            2,
            "unexpected argument",
        ),
        (SERVER, &["admin", "promote"][..], 2, "EMAIL"),
        (WORKER, &["--help"][..], 0, "--once"),
        (WORKER, &["--version"][..], 0, "latchkey-worker "),
        (WORKER, &["--bogus"][..], 2, "unexpected argument"),
    ] {
        let scratch = Scratch::new();
        let started = Instant::now();
        let (status, text) = run_in(&scratch.0, binary, &[], args);
        assert_eq!(status.code(), Some(code), "{args:?}: {text}");
        assert!(text.contains(expected), "{args:?}: {text}");
        // It did not start anything: no database, no waiting for a signal.
        assert_eq!(files_in(&scratch.0), Vec::<String>::new(), "{args:?}");
        assert!(started.elapsed() < Duration::from_secs(10), "{args:?}");
    }
    let (_, help) = run(SERVER, &[], &["--help"]);
    for command in ["serve", "migrate", "cleanup", "admin"] {
        assert!(help.contains(command), "{help}");
    }
}

/// `latchkey migrate`, `cleanup --once` and `admin` do what the worker's commands do.
fn server_binary_runs_the_operator_commands(backend: Backend) {
    let Some(test_db) = TestDb::new(backend) else {
        return;
    };
    let env = [("DATABASE_URL", test_db.url.as_str())];
    let (status, text) = run(SERVER, &env, &["migrate"]);
    assert!(status.success(), "{text}");
    assert!(text.contains("the database is up to date"), "{text}");
    let (status, text) = run(SERVER, &env, &["cleanup", "--once"]);
    assert!(status.success(), "{text}");
    assert!(text.contains("deleted 0 expired sessions"), "{text}");
    let (status, text) = run(SERVER, &env, &["admin", "promote", "nobody@example.com"]);
    assert_eq!(status.code(), Some(1), "{text}");
    assert_eq!(
        error_lines(&text),
        ["latchkey: no account with email nobody@example.com"]
    );
}

/// The cookie a registration sets and the HSTS header, on a server started with `env`.
fn cookie_and_hsts(env: &[(&str, &str)]) -> (String, Option<String>, String) {
    let dir = Scratch::new();
    let url = format!("sqlite://{}", dir.0.join("db.sqlite").display());
    let server = Server::start(&url, env);
    let answer = fetch(
        ureq::post(&format!("{}/api/auth/register", server.base)),
        Some(serde_json::json!({
            "email": "p@example.com", "name": "P", "password": "password123"
        })),
    );
    assert_eq!(answer.status, 201, "{}", answer.body);
    let cookie = answer.set_cookies()[0].to_string();
    let hsts = answer
        .header("strict-transport-security")
        .map(str::to_string);
    (cookie, hsts, server.output().1)
}

#[test]
fn secure_cookies_in_every_profile_but_debug() {
    let info = [("RUST_LOG", "info")];
    for profile in ["production", "staging", "release"] {
        let env = [info[0], ("ROCKET_PROFILE", profile)];
        let (cookie, hsts, log) = cookie_and_hsts(&env);
        assert!(cookie.starts_with("__Host-session="), "{profile}: {cookie}");
        assert!(cookie.contains("; Secure"), "{profile}: {cookie}");
        assert_eq!(hsts.as_deref(), Some("max-age=31536000"), "{profile}");
        assert!(!log.contains("Secure"), "{profile}: {log}");
    }
    // Turning it off is allowed, and loud, in any profile.
    let env = [
        info[0],
        ("ROCKET_PROFILE", "production"),
        ("ROCKET_COOKIE_SECURE", "false"),
    ];
    let (cookie, hsts, log) = cookie_and_hsts(&env);
    assert!(
        cookie.starts_with("session=") && !cookie.contains("Secure"),
        "{cookie}"
    );
    assert_eq!(hsts, None);
    assert!(
        log.contains("WARN") && log.contains("cookie_secure is off"),
        "{log}"
    );
    // The debug profile is the local one: plain cookies, and it says so.
    let (cookie, _, log) = cookie_and_hsts(&[info[0], ("ROCKET_PROFILE", "debug")]);
    assert!(
        cookie.starts_with("session=") && !cookie.contains("Secure"),
        "{cookie}"
    );
    assert!(
        log.contains("WARN") && log.contains("without Secure"),
        "{log}"
    );
}

#[test]
fn configuration_errors_name_the_key_and_what_it_should_be() {
    let toml_cases = [
        (
            "[default]\nport = \n",
            "Rocket.toml` cannot be read: parse error at line 2",
        ),
        ("[default]\npool_size = \"x\"\n", "`pool_size` (in "),
        ("[default]\nworkers = -3\n", "`workers` (in "),
    ];
    for binary in [SERVER, WORKER] {
        let args: &[&str] = if binary == WORKER { &["--once"] } else { &[] };
        for (env, expected) in [
            (
                ("ROCKET_PORT", "abc"),
                "`port` (from ROCKET_PORT) must be a port number from 0 to 65535; got string \"abc\"",
            ),
            (
                ("ROCKET_WORKERS", "x"),
                "`workers` (from ROCKET_WORKERS) must be a whole number",
            ),
            (
                ("ROCKET_ADDRESS", "localhost:80"),
                "`address` (from ROCKET_ADDRESS) must be an IP address",
            ),
            (
                ("ROCKET_POOL_SIZE", "lots"),
                "`pool_size` (from ROCKET_POOL_SIZE) must be a whole number",
            ),
            (
                ("ROCKET_COOKIE_SECURE", "maybe"),
                "`cookie_secure` (from ROCKET_COOKIE_SECURE) must be true or false",
            ),
            (
                ("ROCKET_LOG_FORMAT", "xml"),
                "`log_format` (from ROCKET_LOG_FORMAT) must be `text` or `json` (got `xml`)",
            ),
        ] {
            let scratch = Scratch::new();
            let (status, text) = run_in(&scratch.0, binary, &[env], args);
            assert_eq!(status.code(), Some(2), "{env:?}: {text}");
            let lines = error_lines(&text);
            assert_eq!(lines.len(), 1, "{env:?}: {text}");
            assert!(lines[0].contains(expected), "{env:?}: {}", lines[0]);
            for rust in ["i64", "u16", "usize", "panicked", "IpAddr"] {
                assert!(!text.contains(rust), "{env:?}: {text}");
            }
            assert_eq!(files_in(&scratch.0), Vec::<String>::new());
        }
        for (toml, expected) in toml_cases {
            let scratch = Scratch::new();
            std::fs::write(scratch.0.join("Rocket.toml"), toml).unwrap();
            let (status, text) = run_in(&scratch.0, binary, &[], args);
            assert_eq!(status.code(), Some(2), "{toml}: {text}");
            let lines = error_lines(&text);
            assert_eq!(lines.len(), 1, "{toml}: {text}");
            assert!(lines[0].contains(expected), "{toml}: {}", lines[0]);
        }
    }
    // A misspelt key is a warning naming the nearest known one, and the command goes on.
    let scratch = Scratch::new();
    std::fs::write(
        scratch.0.join("Rocket.toml"),
        "[default]\nsesion_idle_timeout = 60\ncookie_same_site = \"strict\"\n",
    )
    .unwrap();
    let env = [("ROCKET_POOL_TIMOUT_MS", "100")];
    let (status, text) = run_in(&scratch.0, SERVER, &env, &["migrate"]);
    assert!(status.success(), "{text}");
    assert!(
        text.contains("unknown configuration key `sesion_idle_timeout`")
            && text.contains("did you mean `session_idle_timeout`?"),
        "{text}"
    );
    assert!(
        text.contains("`pool_timout_ms` (from ROCKET_POOL_TIMOUT_MS)")
            && text.contains("did you mean `pool_timeout_ms`?"),
        "{text}"
    );
    assert!(!text.contains("`cookie_same_site`"), "{text}");
    // The boot names the file it read and the database it opened, absolute.
    let config = std::fs::canonicalize(scratch.0.join("Rocket.toml")).unwrap();
    assert!(text.contains(&config.display().to_string()), "{text}");
    let database = std::fs::canonicalize(scratch.0.join("latchkey.db")).unwrap();
    assert!(
        text.contains(&format!("database=sqlite {}", database.display())),
        "{text}"
    );
}

#[test]
fn a_taken_port_fails_before_the_database_is_touched() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let scratch = Scratch::new();
    let (status, text) = run_in(&scratch.0, SERVER, &[("ROCKET_PORT", &port)], &[]);
    assert_eq!(status.code(), Some(1), "{text}");
    let lines = error_lines(&text);
    assert_eq!(lines.len(), 1, "{text}");
    assert!(
        lines[0].starts_with(&format!("latchkey: cannot listen on 127.0.0.1:{port}: ")),
        "{}",
        lines[0]
    );
    assert_eq!(files_in(&scratch.0), Vec::<String>::new());
}

#[test]
fn a_missing_postgres_database_is_created_or_explained() {
    let Some(_reachable) = TestDb::new(Backend::Postgres) else {
        return;
    };
    let name = format!("latchkey_new_{}", uuid::Uuid::new_v4().simple());
    let url = format!("{}/{name}", pg_base_url());
    let (status, text) = run(SERVER, &[("DATABASE_URL", &url)], &["migrate"]);
    let mut admin =
        diesel::PgConnection::establish(&format!("{}/postgres", pg_base_url())).unwrap();
    let _ = diesel::sql_query(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
        .execute(&mut admin);
    assert!(status.success(), "{text}");
    assert!(text.contains("created the database"), "{text}");
    // A role that may not create it is told what to do.
    let role = format!("latchkey_weak_{}", uuid::Uuid::new_v4().simple());
    diesel::sql_query(format!("CREATE ROLE \"{role}\" LOGIN"))
        .execute(&mut admin)
        .unwrap();
    let base = pg_base_url().replacen("postgres@", &format!("{role}@"), 1);
    let (status, text) = run(
        SERVER,
        &[("DATABASE_URL", &format!("{base}/{name}"))],
        &["migrate"],
    );
    let _ = diesel::sql_query(format!("DROP ROLE \"{role}\"")).execute(&mut admin);
    assert_eq!(status.code(), Some(1), "{text}");
    let lines = error_lines(&text);
    assert_eq!(lines.len(), 1, "{text}");
    assert!(
        lines[0].contains(&format!("database `{name}` does not exist"))
            && lines[0].contains("createdb"),
        "{}",
        lines[0]
    );
}

/// No log level prints a secret: Rocket's own log asked for at `debug` (which would print
/// every header) or `normal` (every query string) stays off, with a warning, and nothing
/// goes to stdout.
#[test]
fn no_log_level_prints_a_secret() {
    for level in ["debug", "normal"] {
        let dir = Scratch::new();
        let url = format!("sqlite://{}", dir.0.join("db.sqlite").display());
        let server = Server::start(&url, &[("RUST_LOG", "debug"), ("ROCKET_LOG_LEVEL", level)]);
        let (query, bearer) = ("QuerySecretValue123", "BearerSecretValue456");
        let answer = fetch(
            ureq::get(&format!("{}/api/auth/me?code={query}", server.base))
                .set("Authorization", &format!("Bearer {bearer}"))
                .set("Cookie", "session=CookieSecretValue789"),
            None,
        );
        assert_eq!(
            (answer.status, answer.code().as_str()),
            (401, "unauthenticated")
        );
        let deadline = Instant::now() + Duration::from_secs(5);
        let (stdout, stderr) = loop {
            let (stdout, stderr) = server.output();
            if stderr.contains("/api/auth/me") || Instant::now() > deadline {
                break (stdout, stderr);
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        for secret in [query, bearer, "CookieSecretValue789"] {
            assert!(!stdout.contains(secret), "{level}: {stdout}");
            assert!(!stderr.contains(secret), "{level}: {stderr}");
        }
        assert!(
            stderr.contains("Rocket's own log stays off"),
            "{level}: {stderr}"
        );
        assert_eq!(stdout, "", "{level}");
    }
}

/// The log: one stream on stderr (nothing of Rocket's on stdout), no colour into a file, an
/// access line per request without the query string, and JSON lines when asked.
#[test]
fn one_log_stream_with_access_lines() {
    for format in ["text", "json"] {
        let dir = Scratch::new();
        let url = format!("sqlite://{}", dir.0.join("db.sqlite").display());
        let server = Server::start(&url, &[("RUST_LOG", "info"), ("ROCKET_LOG_FORMAT", format)]);
        let secret = "QuerySecretValue123";
        let answer = fetch(
            ureq::get(&format!("{}/api/auth/me?token={secret}", server.base)),
            None,
        );
        assert_eq!(
            (answer.status, answer.code().as_str()),
            (401, "unauthenticated")
        );
        assert_eq!(
            fetch(ureq::get(&format!("{}/", server.base)), None).status,
            200
        );
        let answer = fetch(
            ureq::post(&format!("{}/api/auth/login", server.base)),
            Some(serde_json::json!({ "email": "a@example.com", "password": secret })),
        );
        assert_eq!(
            (answer.status, answer.code().as_str()),
            (401, "invalid_credentials")
        );
        // The writer is a background thread: give it a moment.
        let deadline = Instant::now() + Duration::from_secs(5);
        let (stdout, stderr) = loop {
            let (stdout, stderr) = server.output();
            if stderr.matches("/api/auth/login").count() > 0 || Instant::now() > deadline {
                break (stdout, stderr);
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        assert_eq!(stdout, "", "nothing on stdout");
        assert!(
            !stderr.contains('\u{1b}'),
            "no colour codes in a file: {stderr}"
        );
        assert!(!stderr.contains(secret), "{stderr}");
        assert!(
            !stderr.contains(">>") && !stderr.contains("Rocket has launched"),
            "{stderr}"
        );
        let access: Vec<&str> = stderr
            .lines()
            .filter(|l| l.contains("latchkey::access") && !l.contains("/api/health"))
            .collect();
        assert_eq!(access.len(), 3, "{stderr}");
        if format == "json" {
            let lines: Vec<serde_json::Value> = stderr
                .lines()
                .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l}")))
                .collect();
            let me = lines
                .iter()
                .find(|l| l["target"] == "latchkey::access" && l["path"] == "/api/auth/me")
                .expect("an access line for /me");
            assert_eq!(me["method"], "GET");
            assert_eq!(me["status"], 401);
            assert_eq!(me["route"], "/api/auth/me");
            assert!(me["duration_ms"].as_f64().is_some(), "{me}");
            assert!(lines.iter().any(|l| l["message"] == "latchkey is serving"));
        } else {
            assert!(
                access
                    .iter()
                    .any(|l| l.contains("method=\"GET\" path=\"/api/auth/me\"")
                        && l.contains("status=401")
                        && l.contains("duration_ms=")),
                "{stderr}"
            );
            assert!(stderr.contains("latchkey is serving"), "{stderr}");
        }
    }
}

on_both_backends!(
    server_binary_runs_the_operator_commands,
    server_over_real_http,
    worker_once_and_admin_commands,
    worker_schedule_then_sigterm
);
