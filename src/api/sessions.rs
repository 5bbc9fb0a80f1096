//! "Where you're signed in": list and revoke your own sessions, and your security events.

use rocket::http::CookieJar;
use rocket::response::content::RawJson;
use rocket::{Route, State};

use crate::api::auth::SignedOut;
use crate::api::error::{ApiError, ApiResult};
use crate::api::json::render;
use crate::api::views::{EventList, EventView, Revoked, SessionList};
use crate::auth::{Authenticator, CurrentSession, Via};
use crate::db::models::event::record;
use crate::db::models::session::ClientInfo;
use crate::db::models::{EventKind, SecurityEvent, Session};
use crate::db::Db;
use crate::domain::SessionId;
use crate::metrics::Metrics;

pub fn routes() -> Vec<Route> {
    rocket::routes![
        list_sessions,
        revoke_session,
        revoke_other_sessions,
        logout_all
    ]
}

pub fn event_routes() -> Vec<Route> {
    rocket::routes![list_events]
}

pub const DEFAULT_EVENT_LIMIT: i64 = 50;
pub const MAX_EVENT_LIMIT: i64 = 200;

#[rocket::get("/sessions")]
async fn list_sessions(db: &State<Db>, current: CurrentSession) -> ApiResult<RawJson<String>> {
    let user_id = current.user.id.clone();
    let now = db.now();
    let sessions = db
        .run(move |conn| Session::list_active(conn, &user_id, now))
        .await?;
    render(&SessionList::new(&sessions, Some(&current.session.id)))
}

/// Revokes one of your own sessions. Someone else's id is indistinguishable from an unknown one.
#[rocket::delete("/sessions/<id>")]
async fn revoke_session(
    db: &State<Db>,
    auth: &State<Authenticator>,
    metrics: &State<Metrics>,
    client: ClientInfo,
    jar: &CookieJar<'_>,
    current: CurrentSession,
    id: &str,
) -> ApiResult<rocket::http::Status> {
    let user_id = current.user.id.clone();
    let target = SessionId::parse(id).ok_or_else(ApiError::not_found)?;
    let now = db.now();
    let target_is_current = target == current.session.id;
    let revoked = db
        .run(move |conn| {
            let revoked = Session::revoke(conn, &user_id, &target)?;
            if revoked {
                record(
                    conn,
                    &user_id,
                    EventKind::SessionRevoked,
                    Some(&target),
                    &client,
                    now,
                )?;
            }
            Ok(revoked)
        })
        .await?;
    if !revoked {
        return Err(ApiError::not_found());
    }
    metrics.sessions_revoked.inc();
    if target_is_current && current.via == Via::Cookie {
        auth.cookie.clear(jar);
    }
    Ok(rocket::http::Status::NoContent)
}

/// Signs out every other device; this one stays signed in.
#[rocket::delete("/sessions")]
async fn revoke_other_sessions(
    db: &State<Db>,
    metrics: &State<Metrics>,
    client: ClientInfo,
    current: CurrentSession,
) -> ApiResult<RawJson<String>> {
    let (user_id, keep) = (current.user.id.clone(), current.session.id.clone());
    let now = db.now();
    let revoked = db
        .run(move |conn| {
            let revoked = Session::revoke_all(conn, &user_id, Some(&keep))?;
            if revoked > 0 {
                record(
                    conn,
                    &user_id,
                    EventKind::SessionRevoked,
                    None,
                    &client,
                    now,
                )?;
            }
            Ok(revoked)
        })
        .await?;
    metrics.sessions_revoked.inc_by(revoked as u64);
    render(&Revoked { revoked })
}

/// Signs out everywhere, this device included.
#[rocket::post("/logout-all")]
async fn logout_all(
    db: &State<Db>,
    auth: &State<Authenticator>,
    metrics: &State<Metrics>,
    client: ClientInfo,
    jar: &CookieJar<'_>,
    current: CurrentSession,
) -> ApiResult<SignedOut> {
    let (user_id, session_id) = (current.user.id.clone(), current.session.id.clone());
    let now = db.now();
    let revoked = db
        .run(move |conn| {
            let revoked = Session::revoke_all(conn, &user_id, None)?;
            record(
                conn,
                &user_id,
                EventKind::Logout,
                Some(&session_id),
                &client,
                now,
            )?;
            Ok(revoked)
        })
        .await?;
    metrics.sessions_revoked.inc_by(revoked as u64);
    auth.cookie.clear(jar);
    Ok(SignedOut::new())
}

/// `limit` defaults to 50 and is capped at 200; anything that is not a positive whole number
/// is a validation error.
#[rocket::get("/events?<limit>")]
async fn list_events(
    db: &State<Db>,
    current: CurrentSession,
    limit: Option<&str>,
) -> ApiResult<RawJson<String>> {
    let limit = match limit {
        None => DEFAULT_EVENT_LIMIT,
        Some(text) => match text.trim().parse::<i64>() {
            Ok(n) if n > 0 => n.min(MAX_EVENT_LIMIT),
            _ => {
                let fields = [(
                    "limit".to_string(),
                    "Must be a whole number from 1 to 200.".to_string(),
                )];
                return Err(ApiError::validation(fields.into_iter().collect()));
            }
        },
    };
    let user_id = current.user.id.clone();
    let events = db
        .run(move |conn| SecurityEvent::list_for_user(conn, &user_id, limit))
        .await?;
    let events = events.into_iter().map(EventView::from).collect();
    render(&EventList { events })
}
