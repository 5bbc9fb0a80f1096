//! `/api/admin/*`: session statistics, cleanup on demand, and one user's sessions.

use diesel::Connection;
use rocket::http::Status;
use rocket::response::content::RawJson;
use rocket::{Route, State};

use crate::api::error::{ApiError, ApiResult};
use crate::api::json::render;
use crate::api::views::{CleanupDone, LastCleanup, Revoked, SessionList, SessionStats};
use crate::auth::guard::{AdminUser, CleanupCaller};
use crate::cleanup::{self, CleanupOutcome};
use crate::clock;
use crate::config::Settings;
use crate::db::models::event::record;
use crate::db::models::second_factor;
use crate::db::models::session::{counts, ClientInfo};
use crate::db::models::{CleanupRun, EventKind, Session, User};
use crate::db::Db;
use crate::domain::UserId;
use crate::metrics::Metrics;

pub fn routes() -> Vec<Route> {
    rocket::routes![
        session_stats,
        cleanup_sessions,
        user_sessions,
        revoke_user_sessions,
        remove_user_mfa
    ]
}

#[rocket::get("/session-stats")]
async fn session_stats(
    db: &State<Db>,
    settings: &State<Settings>,
    _admin: AdminUser,
) -> ApiResult<RawJson<String>> {
    let now = db.now();
    let (counts, last) = db
        .run(move |conn| Ok((counts(conn, now)?, CleanupRun::latest(conn)?)))
        .await?;
    render(&SessionStats {
        total: counts.total,
        active: counts.active,
        expired: counts.total - counts.active,
        users_with_active_sessions: counts.users_with_active_sessions,
        backend: db.backend(),
        idle_timeout_secs: settings.session_idle_timeout.num_seconds(),
        absolute_timeout_secs: settings.session_absolute_timeout.num_seconds(),
        last_cleanup: last.map(|run| LastCleanup {
            at: clock::Rfc3339(run.started_at),
            deleted: run.sessions_deleted,
            duration_ms: run.duration_ms,
        }),
    })
}

/// The same cleanup the worker runs; for an admin, or a scheduler holding `CRON_SECRET`.
#[rocket::post("/cleanup-sessions")]
async fn cleanup_sessions(
    db: &State<Db>,
    settings: &State<Settings>,
    metrics: &State<Metrics>,
    caller: CleanupCaller,
) -> ApiResult<RawJson<String>> {
    if let CleanupCaller::Admin(admin) = &caller {
        tracing::info!(admin = %admin.user.id, "cleanup requested over HTTP");
    }
    metrics.cleanup_runs.inc();
    let outcome = cleanup::run(db, settings, Default::default(), None).await;
    cleanup::log_outcome(&outcome);
    let deleted = match outcome? {
        CleanupOutcome::Ran(report) => report.sessions_deleted,
        CleanupOutcome::Skipped => 0,
    };
    metrics.cleanup_deleted.inc_by(deleted as u64);
    render(&CleanupDone {
        deleted_count: deleted,
    })
}

async fn existing_user(db: &Db, id: &str) -> ApiResult<User> {
    let id = UserId::parse(id).ok_or_else(ApiError::not_found)?;
    db.run(move |conn| User::find_by_id(conn, &id))
        .await?
        .ok_or_else(ApiError::not_found)
}

#[rocket::get("/users/<id>/sessions")]
async fn user_sessions(db: &State<Db>, _admin: AdminUser, id: &str) -> ApiResult<RawJson<String>> {
    let user = existing_user(db, id).await?;
    let now = db.now();
    let sessions = db
        .run(move |conn| Session::list_active(conn, &user.id, now))
        .await?;
    render(&SessionList::new(&sessions, None))
}

#[rocket::delete("/users/<id>/sessions")]
async fn revoke_user_sessions(
    db: &State<Db>,
    metrics: &State<Metrics>,
    admin: AdminUser,
    id: &str,
) -> ApiResult<RawJson<String>> {
    let user = existing_user(db, id).await?;
    let revoked = db
        .run(move |conn| Session::revoke_all(conn, &user.id, None))
        .await?;
    tracing::info!(admin = %admin.user.id, user = %id, revoked, "admin revoked a user's sessions");
    metrics.sessions_revoked.inc_by(revoked as u64);
    render(&Revoked { revoked })
}

/// Removes a user's second factor (someone who lost both their authenticator and their
/// recovery codes). Their sessions are all revoked: whoever holds one now is not necessarily
/// them. 204 also when the user had none.
#[rocket::delete("/users/<id>/mfa")]
async fn remove_user_mfa(
    db: &State<Db>,
    metrics: &State<Metrics>,
    client: ClientInfo,
    admin: AdminUser,
    id: &str,
) -> ApiResult<Status> {
    let user = existing_user(db, id).await?;
    let now = db.now();
    let revoked = db
        .run(move |conn| {
            conn.transaction(|conn| {
                let was_on = second_factor::disable(conn, &user.id, now)?;
                second_factor::forget(conn, &user.id)?;
                if !was_on {
                    return Ok(None);
                }
                let revoked = Session::revoke_all(conn, &user.id, None)?;
                record(conn, &user.id, EventKind::MfaDisabled, None, &client, now)?;
                Ok(Some(revoked))
            })
        })
        .await?;
    if let Some(revoked) = revoked {
        tracing::info!(admin = %admin.user.id, user = %id, revoked, "admin removed a user's second factor");
        metrics.sessions_revoked.inc_by(revoked as u64);
    }
    Ok(Status::NoContent)
}
