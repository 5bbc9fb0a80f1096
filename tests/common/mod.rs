//! Test support: a fresh real database per test (a temp SQLite file, or a fresh PostgreSQL
//! database), a Rocket local client over it, and small request helpers.
//!
//! PostgreSQL comes from `LATCHKEY_TEST_PG_URL` (default `postgres://postgres@127.0.0.1:5432`).
//! When it cannot be reached, PostgreSQL tests skip with a loud message, unless
//! `LATCHKEY_REQUIRE_PG=1` (set by `.ci/run`), in which case they fail.

#![allow(dead_code)]

pub mod oidc;
pub mod server;
pub mod smtp;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use diesel::{Connection, PgConnection, RunQueryDsl};
use latchkey::config::Settings;
use latchkey::db::Db;
use rocket::figment::Figment;
use rocket::http::{ContentType, Cookie, Header, Status};
use rocket::local::blocking::{Client, LocalRequest, LocalResponse};
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Generates `sqlite::NAME` and `postgres::NAME` tests calling `NAME(backend)`.
#[macro_export]
macro_rules! on_both_backends {
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            $( #[test] fn $test() { super::$test($crate::common::Backend::Sqlite) } )*
        }
        mod postgres {
            $( #[test] fn $test() { super::$test($crate::common::Backend::Postgres) } )*
        }
    };
}

pub fn pg_base_url() -> String {
    std::env::var("LATCHKEY_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

fn pg_required() -> bool {
    std::env::var("LATCHKEY_REQUIRE_PG").is_ok_and(|v| v == "1")
}

static WARNED: AtomicBool = AtomicBool::new(false);

/// A throwaway database, removed on drop.
pub struct TestDb {
    pub url: String,
    pub backend: Backend,
    dir: Option<PathBuf>,
    pg_name: Option<String>,
}

impl TestDb {
    /// `None` means "skip": PostgreSQL is not reachable and not required.
    pub fn new(backend: Backend) -> Option<TestDb> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        match backend {
            Backend::Sqlite => {
                let dir = std::env::temp_dir().join(format!("latchkey-test-{id}"));
                std::fs::create_dir_all(&dir).expect("temp dir");
                Some(TestDb {
                    url: format!("sqlite://{}", dir.join("test.db").display()),
                    backend,
                    dir: Some(dir),
                    pg_name: None,
                })
            }
            Backend::Postgres => {
                let admin_url = format!("{}/postgres?connect_timeout=3", pg_base_url());
                let mut admin = match PgConnection::establish(&admin_url) {
                    Ok(conn) => conn,
                    Err(e) if pg_required() => panic!(
                        "PostgreSQL is required (LATCHKEY_REQUIRE_PG=1) but unreachable: {e}"
                    ),
                    Err(e) => {
                        if !WARNED.swap(true, Ordering::SeqCst) {
                            // Written to the stream itself: `eprintln!` is captured by the
                            // test harness and thrown away for tests that pass.
                            use std::io::Write;
                            let _ = writeln!(std::io::stderr(), "\n*** SKIPPING PostgreSQL tests: cannot connect to {} ({e}). Set LATCHKEY_REQUIRE_PG=1 to fail instead. ***\n", pg_base_url());
                        }
                        return None;
                    }
                };
                let name = format!("latchkey_test_{id}");
                diesel::sql_query(format!("CREATE DATABASE {name}"))
                    .execute(&mut admin)
                    .expect("create test database");
                Some(TestDb {
                    url: format!("{}/{name}", pg_base_url()),
                    backend,
                    dir: None,
                    pg_name: Some(name),
                })
            }
        }
    }

    pub fn settings(&self) -> Settings {
        Settings::for_database(&self.url).expect("valid test settings")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
        if let Some(name) = &self.pg_name {
            if let Ok(mut admin) = PgConnection::establish(&format!("{}/postgres", pg_base_url())) {
                let _ = diesel::sql_query(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut admin);
            }
        }
    }
}

/// Inserts an account directly (no Argon2: the hash is a placeholder nobody can log in with).
pub fn insert_user(
    conn: &mut latchkey::db::DbConnection,
    email: &str,
) -> latchkey::db::models::User {
    let now = latchkey::clock::system_now();
    let id = latchkey::domain::UserId::generate();
    let new = latchkey::db::models::NewUser {
        id: &id,
        email,
        name: "N",
        password_hash: Some("not-a-hash"),
        role: latchkey::domain::Role::User,
        created_at: now,
        updated_at: now,
        email_verified_at: None,
    };
    latchkey::db::models::User::insert(conn, &new).expect("insert user")
}

/// Rocket's own settings for in-process tests: quiet, and no trusted IP header.
pub fn rocket_figment() -> Figment {
    Figment::from(rocket::Config::debug_default())
        .merge(("log_level", "off"))
        .merge(("ip_header", false))
}

/// A server over a fresh database, driven in-process through Rocket's local client.
pub struct Harness {
    pub client: Client,
    pub settings: Settings,
    pub db: Db,
    pub test_db: TestDb,
}

impl Harness {
    pub fn start(backend: Backend) -> Option<Harness> {
        Harness::start_with(backend, |_| {})
    }

    pub fn start_with(backend: Backend, adjust: impl FnOnce(&mut Settings)) -> Option<Harness> {
        let test_db = TestDb::new(backend)?;
        let mut settings = test_db.settings();
        // A clock the test can move forward (`Harness::advance`) instead of sleeping.
        settings.clock = latchkey::clock::Clock::adjustable();
        adjust(&mut settings);
        let rocket = latchkey::server::rocket(
            rocket_figment(),
            latchkey::Latchkey::with_settings(settings.clone()),
        );
        let client = Client::untracked(rocket).expect("valid rocket");
        let db = Db::pool_only(&settings);
        Some(Harness {
            client,
            settings,
            db,
            test_db,
        })
    }

    pub fn cookie_name(&self) -> &str {
        &self.settings.cookie_name
    }

    /// Moves the server's clock forward by `by`.
    pub fn advance(&self, by: chrono::Duration) {
        self.settings.clock.advance(by);
    }

    /// The server's now.
    pub fn now(&self) -> chrono::NaiveDateTime {
        self.settings.clock.now()
    }
}

/// How a request authenticates.
#[derive(Clone, Debug)]
pub enum Auth {
    None,
    Cookie(String),
    Bearer(String),
}

pub struct Reply {
    pub status: Status,
    pub body: Value,
    pub headers: Vec<(String, String)>,
    pub set_cookies: Vec<String>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }

    /// The value of the session cookie set by this response, if any (empty when cleared).
    pub fn session_cookie(&self, name: &str) -> Option<String> {
        self.set_cookies.iter().find_map(|c| {
            let (pair, _) = c.split_once(';').unwrap_or((c, ""));
            let (n, v) = pair.split_once('=')?;
            (n.trim() == name).then(|| v.trim().to_string())
        })
    }

    pub fn set_cookie_header(&self, name: &str) -> Option<&str> {
        self.set_cookies
            .iter()
            .find(|c| c.starts_with(&format!("{name}=")))
            .map(String::as_str)
    }
}

fn finish(response: LocalResponse<'_>) -> Reply {
    let status = response.status();
    let headers: Vec<(String, String)> = response
        .headers()
        .iter()
        .map(|h| (h.name().to_string(), h.value().to_string()))
        .collect();
    let set_cookies = headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("set-cookie"))
        .map(|(_, v)| v.clone())
        .collect();
    let text = response.into_string().unwrap_or_default();
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    Reply {
        status,
        body,
        headers,
        set_cookies,
    }
}

impl Harness {
    pub fn request<'c>(&'c self, mut req: LocalRequest<'c>, auth: &Auth) -> LocalRequest<'c> {
        req = req.remote("127.0.0.1:40000".parse().unwrap());
        match auth {
            Auth::None => req,
            Auth::Cookie(value) => req.cookie(Cookie::new(
                self.settings.cookie_name.clone(),
                value.clone(),
            )),
            Auth::Bearer(token) => {
                req.header(Header::new("Authorization", format!("Bearer {token}")))
            }
        }
    }

    pub fn send(&self, req: LocalRequest<'_>) -> Reply {
        finish(req.dispatch())
    }

    pub fn get(&self, path: &str, auth: &Auth) -> Reply {
        self.send(self.request(self.client.get(path.to_string()), auth))
    }

    pub fn post(&self, path: &str, body: Value, auth: &Auth) -> Reply {
        let req = self
            .request(self.client.post(path.to_string()), auth)
            .header(ContentType::JSON)
            .body(body.to_string());
        self.send(req)
    }

    pub fn post_empty(&self, path: &str, auth: &Auth) -> Reply {
        self.send(self.request(self.client.post(path.to_string()), auth))
    }

    pub fn delete(&self, path: &str, auth: &Auth) -> Reply {
        self.send(self.request(self.client.delete(path.to_string()), auth))
    }

    pub fn delete_json(&self, path: &str, body: Value, auth: &Auth) -> Reply {
        let req = self
            .request(self.client.delete(path.to_string()), auth)
            .header(ContentType::JSON)
            .body(body.to_string());
        self.send(req)
    }

    /// Registers an account and returns its session cookie value and the response body.
    pub fn register(&self, email: &str, password: &str) -> (String, Value) {
        let reply = self.post(
            "/api/auth/register",
            serde_json::json!({ "email": email, "name": "Test User", "password": password }),
            &Auth::None,
        );
        assert_eq!(reply.status, Status::Created, "register: {:?}", reply.body);
        let cookie = reply
            .session_cookie(self.cookie_name())
            .expect("register sets the cookie");
        (cookie, reply.body)
    }

    /// Logs in through `/api/auth/token` and returns the bearer token.
    pub fn token(&self, email: &str, password: &str) -> String {
        let reply = self.post(
            "/api/auth/token",
            serde_json::json!({ "email": email, "password": password }),
            &Auth::None,
        );
        assert_eq!(reply.status, Status::Ok, "token: {:?}", reply.body);
        reply.body["token"]
            .as_str()
            .expect("token in body")
            .to_string()
    }

    pub fn promote(&self, email: &str) {
        let email = email.to_string();
        self.db
            .run_blocking(move |conn| {
                latchkey::db::models::User::set_role(
                    conn,
                    &email,
                    latchkey::db::models::Role::Admin,
                    latchkey::clock::system_now(),
                )
            })
            .expect("promote");
    }
}
