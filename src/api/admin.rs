//! `/api/admin/*`: session statistics, cleanup on demand, and one user's sessions.

use rocket::serde::json::Json;
use rocket::{Route, State};
use serde_json::{json, Value};

use crate::api::error::{ApiError, ApiResult};
use crate::api::sessions::session_list;
use crate::auth::guard::{AdminUser, CleanupCaller};
use crate::cleanup::{self, CleanupOutcome};
use crate::clock;
use crate::db::models::session::counts;
use crate::db::models::{parse_id, CleanupRun, Session, User};
use crate::App;

pub fn routes() -> Vec<Route> {
    rocket::routes![
        session_stats,
        cleanup_sessions,
        user_sessions,
        revoke_user_sessions
    ]
}

#[rocket::get("/session-stats")]
async fn session_stats(app: &State<App>, _admin: AdminUser) -> ApiResult<Json<Value>> {
    let now = clock::now();
    let (counts, last) = app
        .db
        .run(move |conn| Ok((counts(conn, now)?, CleanupRun::latest(conn)?)))
        .await?;
    let last_cleanup = last.map(|run| {
        json!({
            "at": clock::rfc3339(run.started_at),
            "deleted": run.sessions_deleted,
            "duration_ms": run.duration_ms,
        })
    });
    Ok(Json(json!({
        "total": counts.total,
        "active": counts.active,
        "expired": counts.total - counts.active,
        "users_with_active_sessions": counts.users_with_active_sessions,
        "backend": app.db.backend().as_str(),
        "idle_timeout_secs": app.settings.session_idle_timeout.num_seconds(),
        "absolute_timeout_secs": app.settings.session_absolute_timeout.num_seconds(),
        "last_cleanup": last_cleanup,
    })))
}

/// The same cleanup the worker runs; for an admin, or a scheduler holding `CRON_SECRET`.
#[rocket::post("/cleanup-sessions")]
async fn cleanup_sessions(app: &State<App>, caller: CleanupCaller) -> ApiResult<Json<Value>> {
    if let CleanupCaller::Admin(admin) = &caller {
        tracing::info!(admin = %admin.user.id, "cleanup requested over HTTP");
    }
    app.metrics.cleanup_runs.inc();
    let outcome = cleanup::run(&app.db, &app.settings, Default::default()).await;
    cleanup::log_outcome(&outcome);
    let deleted = match outcome? {
        CleanupOutcome::Ran(report) => report.sessions_deleted,
        CleanupOutcome::Skipped => 0,
    };
    app.metrics.cleanup_deleted.inc_by(deleted as u64);
    Ok(Json(json!({ "deleted_count": deleted })))
}

async fn existing_user(app: &App, id: &str) -> ApiResult<User> {
    let id = parse_id(id).ok_or_else(ApiError::not_found)?;
    app.db
        .run(move |conn| User::find_by_id(conn, &id))
        .await?
        .ok_or_else(ApiError::not_found)
}

#[rocket::get("/users/<id>/sessions")]
async fn user_sessions(app: &State<App>, _admin: AdminUser, id: &str) -> ApiResult<Json<Value>> {
    let user = existing_user(app, id).await?;
    let now = clock::now();
    let sessions = app
        .db
        .run(move |conn| Session::list_active(conn, &user.id, now))
        .await?;
    Ok(Json(session_list(&sessions, None)))
}

#[rocket::delete("/users/<id>/sessions")]
async fn revoke_user_sessions(
    app: &State<App>,
    admin: AdminUser,
    id: &str,
) -> ApiResult<Json<Value>> {
    let user = existing_user(app, id).await?;
    let revoked = app
        .db
        .run(move |conn| Session::revoke_all(conn, &user.id, None))
        .await?;
    tracing::info!(admin = %admin.0.user.id, user = %id, revoked, "admin revoked a user's sessions");
    app.metrics.sessions_revoked.inc_by(revoked as u64);
    Ok(Json(json!({ "revoked": revoked })))
}
