//! A small notes application that uses latchkey for its accounts and sessions: its own table
//! (created at ignite on latchkey's pool), its own page at `/`, its own routes guarded by
//! `CurrentSession`, and its own Diesel queries on latchkey's pool.
//!
//! ```sh
//! cargo run --example notes            # SQLite in ./latchkey.db, like the server
//! B=http://127.0.0.1:8000; J='content-type: application/json'
//! curl -s -c jar -H "$J" -d '{"email":"ann@example.com","name":"Ann","password":"correct horse"}' $B/api/auth/register
//! curl -s -b jar -H "$J" -d '{"text":"buy milk"}' $B/notes
//! curl -s -b jar $B/notes
//! ```

use chrono::NaiveDateTime;
use diesel::prelude::*;
use latchkey::{AuthError, CurrentSession, Db, DbError, Latchkey};
use rocket::fairing::AdHoc;
use rocket::http::Status;
use rocket::serde::json::Json;
use rocket::{Build, Rocket, State};
use serde::{Deserialize, Serialize};

diesel::table! {
    notes (id) {
        id -> Text,
        user_id -> Text,
        text -> Text,
        created_at -> Timestamp,
    }
}

#[derive(Queryable, Selectable, Insertable, Serialize)]
#[diesel(table_name = notes)]
struct Note {
    id: String,
    #[serde(skip)]
    user_id: String,
    text: String,
    created_at: NaiveDateTime,
}

#[derive(Deserialize)]
struct NewNote {
    text: String,
}

/// The application's own page: latchkey does not take `/`.
#[rocket::get("/")]
fn index() -> &'static str {
    "notes: sign in through /api/auth/login, then GET or POST /notes\n"
}

/// Who is asking, or why nobody is: `Result<CurrentSession, AuthError>` gives the reason.
#[rocket::get("/whoami")]
fn whoami(me: Result<CurrentSession, AuthError>) -> String {
    match me {
        Ok(me) => format!("{} ({})\n", me.user.email, me.user.role),
        Err(reason) => format!("nobody: {reason}\n"),
    }
}

/// Your notes, newest first. A database that cannot answer in time is 503 (`DbError` answers
/// in latchkey's JSON error shape).
#[rocket::get("/notes")]
async fn list(me: CurrentSession, db: &State<Db>) -> Result<Json<Vec<Note>>, DbError> {
    let user_id = me.user.id.to_string();
    let mine = db
        .run(move |conn| {
            notes::table
                .filter(notes::user_id.eq(user_id))
                .order(notes::created_at.desc())
                .select(Note::as_select())
                .load(conn)
        })
        .await?;
    Ok(Json(mine))
}

/// A cookie-authenticated POST from another site never gets here: the guard refuses it (403).
#[rocket::post("/notes", data = "<body>")]
async fn create(
    me: CurrentSession,
    db: &State<Db>,
    body: Json<NewNote>,
) -> Result<(Status, Json<Note>), DbError> {
    let note = Note {
        id: uuid::Uuid::new_v4().to_string(),
        user_id: me.user.id.to_string(),
        text: body.into_inner().text,
        created_at: db.now(),
    };
    let note = db
        .run(move |conn| {
            diesel::insert_into(notes::table)
                .values(&note)
                .execute(conn)
                .map(|_| note)
        })
        .await?;
    Ok((Status::Created, Json(note)))
}

/// The application's own migration, on latchkey's pool once latchkey has connected.
async fn create_table(rocket: Rocket<Build>) -> Result<Rocket<Build>, Rocket<Build>> {
    let Some(db) = rocket.state::<Db>().cloned() else {
        return Err(rocket);
    };
    let created = db
        .run(|conn| {
            diesel::sql_query(
                "CREATE TABLE IF NOT EXISTS notes (id TEXT PRIMARY KEY, user_id TEXT NOT NULL, \
                 text TEXT NOT NULL, created_at TIMESTAMP NOT NULL)",
            )
            .execute(conn)
        })
        .await;
    match created {
        Ok(_) => Ok(rocket),
        Err(e) => {
            eprintln!("notes: cannot create the notes table: {e}");
            Err(rocket)
        }
    }
}

#[rocket::launch]
fn rocket() -> _ {
    rocket::build()
        .attach(Latchkey::fairing())
        .attach(AdHoc::try_on_ignite("notes table", create_table))
        .mount("/", rocket::routes![index, whoami, list, create])
}
