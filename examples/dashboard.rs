//! The application of the contract (SPEC §6.1), exactly as written there: latchkey's JSON API
//! under `/api`, and one route of the application's own guarded by `CurrentSession`.
//!
//! `cargo run --example dashboard`, register at `/api/auth/register`, then `GET /dashboard`.

use latchkey::{CurrentSession, Latchkey};

#[rocket::get("/dashboard")]
fn dashboard(me: CurrentSession) -> String {
    format!("{} {}", me.user.id, me.user.email)
}

#[rocket::launch]
fn rocket() -> _ {
    rocket::build()
        .attach(Latchkey::fairing())
        .mount("/", rocket::routes![dashboard])
}
