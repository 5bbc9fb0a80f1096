//! `database_schema`: latchkey in its own PostgreSQL schema of a database it shares with an
//! application that has its own `users` and `sessions` tables.

mod common;

use common::Backend;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text};
use latchkey::config::DatabaseTarget;
use rocket::http::Status;
use serde_json::json;

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

#[derive(QueryableByName)]
struct Name {
    #[diesel(sql_type = Text)]
    name: String,
}

#[test]
fn latchkey_keeps_to_its_schema() {
    // The application was there first, with its own `users`.
    let Some(test_db) = common::TestDb::new(Backend::Postgres) else {
        return;
    };
    let mut app = PgConnection::establish(&test_db.url).unwrap();
    diesel::sql_query("CREATE TABLE users (id SERIAL PRIMARY KEY, login TEXT NOT NULL)")
        .execute(&mut app)
        .unwrap();
    diesel::sql_query("INSERT INTO users (login) VALUES ('app-user')")
        .execute(&mut app)
        .unwrap();
    let mut settings = test_db.settings();
    settings.database = DatabaseTarget::Postgres {
        url: test_db.url.clone(),
        schema: Some("auth".into()),
        statement_cache: true,
    };
    let rocket = latchkey::server::rocket(
        common::rocket_figment(),
        latchkey::Latchkey::with_settings(settings),
    );
    let client = rocket::local::blocking::Client::untracked(rocket).expect("launches");
    let registered = client
        .post("/api/auth/register")
        .header(rocket::http::ContentType::JSON)
        .body(
            json!({"email": "a@example.com", "name": "A", "password": "correct horse"}).to_string(),
        )
        .dispatch();
    assert_eq!(registered.status(), Status::Created);
    let cookie = registered
        .cookies()
        .get("session")
        .unwrap()
        .value()
        .to_string();
    let me = client
        .get("/api/auth/me")
        .cookie(rocket::http::Cookie::new("session", cookie))
        .dispatch();
    assert_eq!(me.status(), Status::Ok);

    // The application's table is as it was; latchkey's tables and migrations are in `auth`.
    let count = |sql: &str, conn: &mut PgConnection| {
        diesel::sql_query(sql).get_result::<Count>(conn).unwrap().n
    };
    assert_eq!(count("SELECT count(*) AS n FROM public.users", &mut app), 1);
    let public: Vec<String> = diesel::sql_query(
        "SELECT table_name AS name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY 1",
    )
    .load::<Name>(&mut app)
    .unwrap()
    .into_iter()
    .map(|n| n.name)
    .collect();
    assert_eq!(public, ["users"]);
    let mut ours: Vec<String> = diesel::sql_query(
        "SELECT table_name AS name FROM information_schema.tables WHERE table_schema = 'auth'",
    )
    .load::<Name>(&mut app)
    .unwrap()
    .into_iter()
    .map(|n| n.name)
    .collect();
    ours.sort();
    for table in [
        "__diesel_schema_migrations",
        "sessions",
        "users",
        "security_events",
    ] {
        assert!(
            ours.iter().any(|t| t == table),
            "{table} not in auth: {ours:?}"
        );
    }
    assert_eq!(count("SELECT count(*) AS n FROM auth.users", &mut app), 1);
}
