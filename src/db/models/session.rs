//! `sessions`: the session store. Every operation takes `now` from the application's clock, so
//! expiry is decided in one place and tests can move time.

use chrono::{Duration, NaiveDateTime};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Timestamp};
use diesel::AggregateExpressionMethods;

use crate::config::Settings;
use crate::db::models::User;
use crate::db::schema::{sessions, users};
use crate::db::DbConnection;
use crate::domain::{SessionId, UserId};
use crate::token::{Token, TokenHash};

/// A session row, without its token hash (which only ever appears in `WHERE` clauses).
#[derive(Queryable, Selectable, Clone, Debug)]
#[diesel(table_name = sessions)]
pub struct Session {
    /// A random UUID, public (lists and revocations use it).
    #[diesel(deserialize_as = String)]
    pub id: SessionId,
    /// Whose session it is.
    #[diesel(deserialize_as = String)]
    pub user_id: UserId,
    /// UTC, as are the times below.
    pub created_at: NaiveDateTime,
    /// Last recorded activity (written at most once per touch interval).
    pub last_seen_at: NaiveDateTime,
    /// `min(last_seen_at + idle timeout, created_at + absolute timeout)`.
    pub expires_at: NaiveDateTime,
    /// The client IP it was created from.
    pub ip: Option<String>,
    /// The user agent it was created with (cut to 256 characters).
    pub user_agent: Option<String>,
}

#[derive(Insertable)]
#[diesel(table_name = sessions)]
struct NewSession<'a> {
    id: &'a str,
    token_hash: &'a [u8],
    user_id: &'a str,
    created_at: NaiveDateTime,
    last_seen_at: NaiveDateTime,
    expires_at: NaiveDateTime,
    ip: Option<&'a str>,
    user_agent: Option<&'a str>,
}

/// The timeouts that decide a session's life.
#[derive(Debug, Clone, Copy)]
pub struct SessionPolicy {
    pub idle_timeout: Duration,
    pub absolute_timeout: Duration,
    pub touch_interval: Duration,
}

impl SessionPolicy {
    pub fn from_settings(settings: &Settings) -> SessionPolicy {
        SessionPolicy {
            idle_timeout: settings.session_idle_timeout,
            absolute_timeout: settings.session_absolute_timeout,
            touch_interval: settings.session_touch_interval,
        }
    }

    /// `min(last_seen + idle, created + absolute)`.
    pub fn expires_at(
        &self,
        created_at: NaiveDateTime,
        last_seen_at: NaiveDateTime,
    ) -> NaiveDateTime {
        (last_seen_at + self.idle_timeout).min(created_at + self.absolute_timeout)
    }
}

/// Who made the request: stored with the session for "where you're signed in".
#[derive(Debug, Clone, Default)]
pub struct ClientInfo {
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

/// Longest user agent kept with a session; the rest is noise or abuse.
const MAX_USER_AGENT: usize = 256;

impl ClientInfo {
    /// The user agent is kept without control characters and cut to 256 characters.
    pub fn new(ip: Option<String>, user_agent: Option<&str>) -> ClientInfo {
        let user_agent = user_agent.map(|ua| {
            ua.chars()
                .filter(|c| !c.is_control())
                .take(MAX_USER_AGENT)
                .collect::<String>()
        });
        ClientInfo {
            ip,
            user_agent: user_agent.filter(|ua| !ua.is_empty()),
        }
    }
}

impl Session {
    pub fn remaining(&self, now: NaiveDateTime) -> Duration {
        (self.expires_at - now).max(Duration::zero())
    }

    /// Starts a session for `user_id` and returns it with its token (the only time the token
    /// exists outside the client).
    pub fn create(
        conn: &mut DbConnection,
        policy: &SessionPolicy,
        user_id: &UserId,
        client: &ClientInfo,
        now: NaiveDateTime,
    ) -> QueryResult<(Session, Token)> {
        let token = Token::generate();
        let hash = token.hash();
        let id = SessionId::generate();
        diesel::insert_into(sessions::table)
            .values(NewSession {
                id: id.as_str(),
                token_hash: hash.as_bytes(),
                user_id: user_id.as_str(),
                created_at: now,
                last_seen_at: now,
                expires_at: policy.expires_at(now, now),
                ip: client.ip.as_deref(),
                user_agent: client.user_agent.as_deref(),
            })
            .execute(conn)?;
        let session = sessions::table
            .find(id.as_str())
            .select(Session::as_select())
            .first(conn)?;
        Ok((session, token))
    }

    /// The unexpired session holding this token, with its user, in one query.
    pub fn resolve(
        conn: &mut DbConnection,
        hash: &TokenHash,
        now: NaiveDateTime,
    ) -> QueryResult<Option<(Session, User)>> {
        // The hot path of every authenticated request, run on the concrete connection: there
        // Diesel keys its prepared-statement cache by the query's type and never rebuilds the
        // SQL text, which it does on each call through the multi-backend connection.
        macro_rules! query {
            () => {
                sessions::table
                    .inner_join(users::table)
                    .filter(sessions::token_hash.eq(hash.as_bytes()))
                    .filter(sessions::expires_at.gt(now))
                    .select((Session::as_select(), User::as_select()))
            };
        }
        match conn {
            DbConnection::Postgres(pg) => query!().first(pg).optional(),
            DbConnection::Sqlite(sqlite) => query!().first(sqlite).optional(),
        }
    }

    /// The sessions holding any of these tokens, with their users, in one query: each row comes
    /// with its token hash so the caller can hand it back to whoever asked. Expired sessions
    /// are returned too (at most one row per token): the caller compares `expires_at` with its
    /// own "now".
    pub fn resolve_many(
        conn: &mut DbConnection,
        hashes: &[&[u8]],
    ) -> QueryResult<Vec<(Vec<u8>, Session, User)>> {
        // On the concrete connection for the same reason as `resolve`. PostgreSQL binds the
        // list as one array (`= ANY($1)`), so one prepared statement serves every batch size.
        // The token is the only condition: PostgreSQL plans a prepared statement once for any
        // parameters, and with an `expires_at > $2` beside it that generic plan walks the
        // expiry index over every live session and filters by token, many times slower than
        // the token index (bench/RESULTS.md has the plans).
        macro_rules! query {
            () => {
                sessions::table
                    .inner_join(users::table)
                    .filter(sessions::token_hash.eq_any(hashes))
                    .select((
                        sessions::token_hash,
                        Session::as_select(),
                        User::as_select(),
                    ))
            };
        }
        match conn {
            DbConnection::Postgres(pg) => query!().load(pg),
            DbConnection::Sqlite(sqlite) => query!().load(sqlite),
        }
    }

    /// Whether [`Session::touch`] would write now.
    pub fn due_for_touch(&self, policy: &SessionPolicy, now: NaiveDateTime) -> bool {
        now - self.last_seen_at >= policy.touch_interval
    }

    /// Rolling expiry: records activity at most once per `touch_interval`, extending expiry
    /// within the absolute cap. Returns whether the row was written (and `self` updated).
    pub fn touch(
        &mut self,
        conn: &mut DbConnection,
        policy: &SessionPolicy,
        now: NaiveDateTime,
    ) -> QueryResult<bool> {
        if !self.due_for_touch(policy, now) {
            return Ok(false);
        }
        let expires_at = policy.expires_at(self.created_at, now);
        // Guarded by the old last_seen_at, so two instances touching at once write once.
        let update = diesel::update(
            sessions::table
                .find(self.id.as_str())
                .filter(sessions::last_seen_at.eq(self.last_seen_at)),
        )
        .set((
            sessions::last_seen_at.eq(now),
            sessions::expires_at.eq(expires_at),
        ));
        let written = match conn {
            // PostgreSQL only: a touch need not wait for its WAL flush. Losing the last few
            // touches in a database crash only makes those sessions expire a little earlier,
            // and it keeps an fsync off the hot path of authenticated reads.
            DbConnection::Postgres(_) => conn.transaction(|conn| {
                diesel::sql_query("SET LOCAL synchronous_commit TO OFF").execute(conn)?;
                update.execute(conn)
            })?,
            DbConnection::Sqlite(_) => update.execute(conn)?,
        };
        if written == 1 {
            self.last_seen_at = now;
            self.expires_at = expires_at;
        }
        Ok(written == 1)
    }

    /// Swaps the session's token for a new one and extends it, only if `old` is still its
    /// token: of several concurrent rotations exactly one wins; the others get `None`.
    pub fn rotate(
        conn: &mut DbConnection,
        policy: &SessionPolicy,
        session_id: &SessionId,
        old: &TokenHash,
        now: NaiveDateTime,
    ) -> QueryResult<Option<(Session, Token)>> {
        let token = Token::generate();
        let Some(current) = sessions::table
            .find(session_id.as_str())
            .filter(sessions::token_hash.eq(old.as_bytes()))
            .filter(sessions::expires_at.gt(now))
            .select(Session::as_select())
            .first(conn)
            .optional()?
        else {
            return Ok(None);
        };
        let expires_at = policy.expires_at(current.created_at, now);
        let written = diesel::update(
            sessions::table
                .find(session_id.as_str())
                .filter(sessions::token_hash.eq(old.as_bytes())),
        )
        .set((
            sessions::token_hash.eq(token.hash().as_bytes()),
            sessions::previous_token_hash.eq(Some(old.as_bytes())),
            sessions::last_seen_at.eq(now),
            sessions::expires_at.eq(expires_at),
        ))
        .execute(conn)?;
        if written != 1 {
            return Ok(None);
        }
        let session = Session {
            last_seen_at: now,
            expires_at,
            ..current
        };
        Ok(Some((session, token)))
    }

    /// Deletes the session holding this token, if any (logout, fixation defence). A token that
    /// the session's last refresh replaced still names it here (and nowhere else): a logout
    /// racing a refresh of the same session ends it, whichever token it was sent with.
    pub fn revoke_by_token(
        conn: &mut DbConnection,
        hash: &TokenHash,
    ) -> QueryResult<Option<Session>> {
        let Some(session) = sessions::table
            .filter(
                sessions::token_hash
                    .eq(hash.as_bytes())
                    .or(sessions::previous_token_hash.eq(hash.as_bytes())),
            )
            .select(Session::as_select())
            .first(conn)
            .optional()?
        else {
            return Ok(None);
        };
        // By id: a refresh between the two statements changes the token, not the session.
        let deleted = diesel::delete(sessions::table.find(session.id.as_str())).execute(conn)?;
        Ok((deleted == 1).then_some(session))
    }

    /// A token that a refresh replaced, presented again: it was copied, and whoever holds
    /// the session's current token may be the one who copied it (OAuth's refresh token reuse
    /// detection). Deletes the session it names, unless the session was used since
    /// `settled_before` (a request that left with the old token just before the refresh is
    /// not a theft). Returns the deleted session.
    pub fn revoke_reused(
        conn: &mut DbConnection,
        hash: &TokenHash,
        settled_before: NaiveDateTime,
    ) -> QueryResult<Option<Session>> {
        let Some(session) = sessions::table
            .filter(sessions::previous_token_hash.eq(hash.as_bytes()))
            .filter(sessions::last_seen_at.lt(settled_before))
            .select(Session::as_select())
            .first(conn)
            .optional()?
        else {
            return Ok(None);
        };
        let deleted = diesel::delete(
            sessions::table
                .find(session.id.as_str())
                .filter(sessions::previous_token_hash.eq(hash.as_bytes())),
        )
        .execute(conn)?;
        Ok((deleted == 1).then_some(session))
    }

    /// The user of a session that is still there and unexpired.
    pub fn live_user(
        conn: &mut DbConnection,
        id: &SessionId,
        now: NaiveDateTime,
    ) -> QueryResult<Option<UserId>> {
        let user: Option<String> = sessions::table
            .find(id.as_str())
            .filter(sessions::expires_at.gt(now))
            .select(sessions::user_id)
            .first(conn)
            .optional()?;
        Ok(user.map(UserId::from))
    }

    /// Deletes one of `user_id`'s sessions; `false` when there is no such session of theirs.
    pub fn revoke(
        conn: &mut DbConnection,
        user_id: &UserId,
        session_id: &SessionId,
    ) -> QueryResult<bool> {
        let deleted = diesel::delete(
            sessions::table
                .find(session_id.as_str())
                .filter(sessions::user_id.eq(user_id.as_str())),
        )
        .execute(conn)?;
        Ok(deleted == 1)
    }

    /// Deletes all of a user's sessions, optionally keeping one (the current device).
    pub fn revoke_all(
        conn: &mut DbConnection,
        user_id: &UserId,
        except: Option<&SessionId>,
    ) -> QueryResult<usize> {
        let mine = sessions::table.filter(sessions::user_id.eq(user_id.as_str()));
        match except {
            Some(keep) => diesel::delete(mine.filter(sessions::id.ne(keep.as_str()))).execute(conn),
            None => diesel::delete(mine).execute(conn),
        }
    }

    /// A user's unexpired sessions, most recently active first.
    pub fn list_active(
        conn: &mut DbConnection,
        user_id: &UserId,
        now: NaiveDateTime,
    ) -> QueryResult<Vec<Session>> {
        sessions::table
            .filter(sessions::user_id.eq(user_id.as_str()))
            .filter(sessions::expires_at.gt(now))
            .order((sessions::last_seen_at.desc(), sessions::created_at.desc()))
            .select(Session::as_select())
            .load(conn)
    }

    /// Deletes up to `batch` expired sessions in one short statement (by the `expires_at`
    /// index); returns how many went. Callers loop until it returns less than `batch`.
    pub fn delete_expired_batch(
        conn: &mut DbConnection,
        now: NaiveDateTime,
        batch: i64,
    ) -> QueryResult<usize> {
        // Written out per backend: Diesel's DSL cannot express DELETE … IN (SELECT … LIMIT n),
        // and the placeholders differ. The subquery walks the expires_at index.
        const WHERE_EXPIRED: &str = "WHERE id IN (SELECT id FROM sessions WHERE expires_at <=";
        match conn {
            DbConnection::Postgres(pg) => {
                diesel::sql_query(format!("DELETE FROM sessions {WHERE_EXPIRED} $1 LIMIT $2)"))
                    .bind::<Timestamp, _>(now)
                    .bind::<BigInt, _>(batch)
                    .execute(pg)
            }
            DbConnection::Sqlite(sqlite) => {
                diesel::sql_query(format!("DELETE FROM sessions {WHERE_EXPIRED} ? LIMIT ?)"))
                    .bind::<Timestamp, _>(now)
                    .bind::<BigInt, _>(batch)
                    .execute(sqlite)
            }
        }
    }
}

/// Counts for the admin view, each answered from an index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionCounts {
    pub total: i64,
    pub active: i64,
    pub users_with_active_sessions: i64,
}

pub fn counts(conn: &mut DbConnection, now: NaiveDateTime) -> QueryResult<SessionCounts> {
    let total = sessions::table.count().get_result(conn)?;
    let active = sessions::table
        .filter(sessions::expires_at.gt(now))
        .count()
        .get_result(conn)?;
    let users_with_active_sessions = sessions::table
        .filter(sessions::expires_at.gt(now))
        .select(diesel::dsl::count(sessions::user_id).aggregate_distinct())
        .get_result(conn)?;
    Ok(SessionCounts {
        total,
        active,
        users_with_active_sessions,
    })
}
