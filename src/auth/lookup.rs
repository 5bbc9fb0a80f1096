//! Resolving session tokens, with concurrent lookups sharing one query.
//!
//! Every authenticated request needs its session and user. Each request puts its token hash
//! in a queue and waits; one thread of its own (the lookup lane, `latchkey-lookup`) takes
//! everything waiting, up to [`MAX_BATCH`], runs one query for all of it on its own pooled
//! connection and hands each request its row, then takes the next batch. Nobody waits to fill
//! a batch: alone, a lookup is one query; under load, the lookups that arrive while a query
//! runs go together in the next one, so the database and the server each do one statement's
//! fixed work for many requests. The async workers never block on the database, so Rocket
//! needs no more of them than there are cores.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use chrono::NaiveDateTime;
use diesel::result::QueryResult;
use prometheus::Histogram;
use rocket::tokio::sync::oneshot;

use crate::db::models::{Session, User};
use crate::db::{Db, DbConnection, DbError, LaneConnection};
use crate::token::TokenHash;

/// The most lookups one query carries. Bounds a statement's size and its answer's delay.
pub const MAX_BATCH: usize = 32;

pub type Resolved = Option<(Session, User)>;

struct Waiter {
    hash: TokenHash,
    now: NaiveDateTime,
    reply: oneshot::Sender<Result<Resolved, DbError>>,
}

#[derive(Clone)]
pub struct SessionLookup {
    lane: Arc<Lane>,
    /// How long a request waits for its answer (`pool_timeout_ms`) before it is a 503.
    wait: Duration,
}

/// The queue and the thread that serves it; the thread ends when the last handle goes.
struct Lane {
    shared: Arc<Shared>,
}

impl Drop for Lane {
    fn drop(&mut self) {
        lock(&self.shared.state).closed = true;
        self.shared.wake.notify_one();
    }
}

/// What the requests and the lane share.
struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    batch_sizes: Histogram,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Waiter>,
    /// The lane is waiting for work: the next lookup must wake it (otherwise nobody signals:
    /// a busy lane takes the queue when its query is done).
    idle: bool,
    closed: bool,
}

impl SessionLookup {
    /// Starts the lane. `batch_sizes` records how many lookups each query carried.
    pub fn new(db: Db, batch_sizes: Histogram) -> SessionLookup {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            batch_sizes,
        });
        let wait = db.wait();
        let serving = shared.clone();
        let lane = db.lookup_lane();
        std::thread::Builder::new()
            .name("latchkey-lookup".into())
            .spawn(move || serve(&lane, &serving))
            .expect("spawn the session lookup thread");
        SessionLookup {
            lane: Arc::new(Lane { shared }),
            wait,
        }
    }

    /// The session holding this token, with its user, if it has not expired by `now`.
    pub async fn resolve(&self, hash: TokenHash, now: NaiveDateTime) -> Result<Resolved, DbError> {
        let (reply, answer) = oneshot::channel();
        {
            let mut state = lock(&self.lane.shared.state);
            state.queue.push_back(Waiter { hash, now, reply });
            if state.idle {
                state.idle = false;
                self.lane.shared.wake.notify_one();
            }
        }
        match rocket::tokio::time::timeout(self.wait, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(dropped()),
            // The lane is stuck on a slow or unreachable database. This lookup's entry stays
            // queued with its receiver gone; the lane skips it.
            Err(_) => Err(DbError::Unavailable),
        }
    }

    /// Lookups queued right now whose requests still wait (for the metrics). Entries of
    /// requests that gave up leave the queue when the lane next takes from it or retries.
    pub fn waiting(&self) -> usize {
        let state = lock(&self.lane.shared.state);
        state.queue.iter().filter(|w| !w.reply.is_closed()).count()
    }
}

/// The lane: waits until something is queued, gets its connection, and only then takes what
/// is queued (so lookups that arrived while it waited for the connection go in the same
/// query), looks it up and answers; until the last [`SessionLookup`] is dropped.
fn serve(lane: &LaneConnection, shared: &Shared) {
    loop {
        {
            let mut state = lock(&shared.state);
            loop {
                if state.closed {
                    return;
                }
                if !state.queue.is_empty() {
                    break;
                }
                state.idle = true;
                state = shared
                    .wake
                    .wait(state)
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
            }
        }
        let mut batch: Vec<Waiter> = Vec::new();
        // A panic in the query (a bug) fails this batch, not the lane every request needs.
        let rows = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            lane.run(|conn| {
                take_batch(shared, &mut batch);
                if batch.is_empty() {
                    return Ok(Vec::new());
                }
                shared.batch_sizes.observe(batch.len() as f64);
                look_up(conn, &batch)
            })
        }))
        .unwrap_or_else(|_| Err(dropped()));
        if batch.is_empty() {
            // No connection came in time (the database is down or busy): the lookups still
            // queued wait on; those whose requests gave up leave the queue now, so that it
            // does not grow for as long as an outage lasts.
            lock(&shared.state).queue.retain(|w| !w.reply.is_closed());
            continue;
        }
        answer(batch, rows);
    }
}

/// Moves up to [`MAX_BATCH`] queued lookups into `batch`, skipping those whose request gave
/// up (timed out, or its client went away).
fn take_batch(shared: &Shared, batch: &mut Vec<Waiter>) {
    let mut state = lock(&shared.state);
    while batch.len() < MAX_BATCH {
        match state.queue.pop_front() {
            Some(waiter) if waiter.reply.is_closed() => continue,
            Some(waiter) => batch.push(waiter),
            None => break,
        }
    }
}

/// The batch that carried this lookup ended without answering it (its query panicked).
fn dropped() -> DbError {
    tracing::error!("the shared lookup carrying a request ended without an answer");
    DbError::Panicked
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing panics while holding the lock; if something ever did, the queue is still whole.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// One query for the whole batch: rows with the token hash they belong to.
fn look_up(
    conn: &mut DbConnection,
    batch: &[Waiter],
) -> QueryResult<Vec<(Vec<u8>, Session, User)>> {
    match batch {
        // Alone: the single-row statement, which is cached on both backends.
        [only] => Session::resolve(conn, &only.hash, only.now).map(|found| {
            found
                .map(|(session, user)| (only.hash.as_bytes().to_vec(), session, user))
                .into_iter()
                .collect()
        }),
        _ => {
            let hashes: Vec<&[u8]> = batch.iter().map(|w| w.hash.as_bytes()).collect();
            Session::resolve_many(conn, &hashes)
        }
    }
}

/// Hands each waiter its own row (or the batch's error).
fn answer(batch: Vec<Waiter>, rows: Result<Vec<(Vec<u8>, Session, User)>, DbError>) {
    let rows = match rows {
        Ok(rows) => rows,
        Err(error) => {
            let error = error.into_shared();
            for waiter in batch {
                let _ = waiter.reply.send(Err(error.to_shared()));
            }
            return;
        }
    };
    let mut rows: Vec<Option<(Vec<u8>, Session, User)>> = rows.into_iter().map(Some).collect();
    let hashes: Vec<TokenHash> = batch.iter().map(|w| w.hash).collect();
    for (i, waiter) in batch.into_iter().enumerate() {
        let wanted = waiter.hash.as_bytes();
        let row = rows
            .iter_mut()
            .find(|row| matches!(row, Some((hash, _, _)) if hash.as_slice() == wanted));
        // The same token twice in one batch (one client, two requests at once) shares the row.
        let asked_again = hashes[i + 1..].contains(&waiter.hash);
        let found = row
            .and_then(|row| if asked_again { row.clone() } else { row.take() })
            // Each waiter applies its own "now" (the shared query has no time condition).
            .filter(|(_, session, _)| session.expires_at > waiter.now)
            .map(|(_, session, user)| (session, user));
        // A waiter that gave up (its request timed out) has dropped its receiver.
        let _ = waiter.reply.send(Ok(found));
    }
}
