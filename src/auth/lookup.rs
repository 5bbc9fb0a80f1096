//! Resolving session tokens, with concurrent lookups sharing one query.
//!
//! Every authenticated request needs its session and user. Each request joins a queue; whoever
//! gets the lookup lane (the inline slot of `Db::read_inline`) takes everything waiting at that
//! moment, up to [`MAX_BATCH`], runs one query for all of it and hands each request its own row.
//! A request that finds the queue empty when it gets the lane (someone else took its entry)
//! waits for that answer instead. Nobody waits to fill a batch: alone, a lookup is one query as
//! before; under load, the lookups that arrive while a query runs go together in the next one,
//! so the database and the server each do one statement's fixed work for many requests.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use chrono::NaiveDateTime;
use diesel::result::QueryResult;
use prometheus::Histogram;
use rocket::tokio::sync::oneshot;

use crate::db::models::{Session, User};
use crate::db::{Db, DbConnection, DbError};
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
    db: Db,
    shared: Arc<Shared>,
}

/// What every batch, whichever request runs it, works on.
struct Shared {
    queue: Mutex<VecDeque<Waiter>>,
    batch_sizes: Histogram,
}

impl SessionLookup {
    /// `batch_sizes` records how many lookups each query carried.
    pub fn new(db: Db, batch_sizes: Histogram) -> SessionLookup {
        SessionLookup {
            db,
            shared: Arc::new(Shared {
                queue: Mutex::new(VecDeque::new()),
                batch_sizes,
            }),
        }
    }

    /// The session holding this token, with its user, if it has not expired by `now`.
    pub async fn resolve(&self, hash: TokenHash, now: NaiveDateTime) -> Result<Resolved, DbError> {
        let (reply, mut answer) = oneshot::channel();
        lock(&self.shared.queue).push_back(Waiter { hash, now, reply });
        loop {
            let shared = self.shared.clone();
            let served = self.db.read_inline(move |conn| run_batch(conn, &shared));
            rocket::tokio::select! {
                biased;
                result = &mut answer => return result.unwrap_or_else(|_| Err(dropped())),
                served = served => match served {
                    // Another batch holds this request: its answer is on the way.
                    Ok(0) => break,
                    // This batch may not have reached it (the queue was longer than a batch).
                    Ok(_) => continue,
                    Err(error) => {
                        // The batch that failed carried this request, or this request never got
                        // a slot and gives up: then its entry must not stay queued (while the
                        // database is down, nothing else would take it out).
                        if let Ok(result) = answer.try_recv() {
                            return result;
                        }
                        drop(answer);
                        lock(&self.shared.queue).retain(|w| !w.reply.is_closed());
                        return Err(error);
                    }
                },
            }
        }
        answer.await.unwrap_or_else(|_| Err(dropped()))
    }

    /// Lookups queued right now, waiting for the lane (for the metrics).
    pub fn waiting(&self) -> usize {
        lock(&self.shared.queue).len()
    }
}

/// The batch that carried this lookup ended without answering it (its task panicked).
fn dropped() -> DbError {
    DbError::Failed("the shared lookup carrying this request ended without an answer".into())
}

fn lock(queue: &Mutex<VecDeque<Waiter>>) -> MutexGuard<'_, VecDeque<Waiter>> {
    // Nothing panics while holding the lock; if something ever did, the queue is still whole.
    queue
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Takes what is queued, looks it all up in one query and answers each waiter. Returns how many
/// were answered (0 when the queue was already empty, without touching the database).
fn run_batch(conn: &mut DbConnection, shared: &Shared) -> QueryResult<usize> {
    let mut batch: Vec<Waiter> = Vec::new();
    {
        let mut queue = lock(&shared.queue);
        while batch.len() < MAX_BATCH {
            match queue.pop_front() {
                // Its request gave up (timed out, or its client went away): nobody to answer.
                Some(waiter) if waiter.reply.is_closed() => continue,
                Some(waiter) => batch.push(waiter),
                None => break,
            }
        }
    }
    if batch.is_empty() {
        return Ok(0);
    }
    shared.batch_sizes.observe(batch.len() as f64);
    let rows = match batch.as_slice() {
        // Alone: the single-row statement, which is cached on both backends.
        [only] => Session::resolve(conn, &only.hash, only.now).map(|found| {
            found
                .map(|(session, user)| (only.hash.as_bytes().to_vec(), session, user))
                .into_iter()
                .collect()
        }),
        _ => {
            let earliest = batch
                .iter()
                .map(|w| w.now)
                .min()
                .expect("a batch is not empty");
            let hashes: Vec<&[u8]> = batch.iter().map(|w| w.hash.as_bytes()).collect();
            Session::resolve_many(conn, &hashes, earliest)
        }
    };
    let rows = match rows {
        Ok(rows) => rows,
        Err(error) => {
            for waiter in batch {
                let _ = waiter.reply.send(Err(DbError::shared(&error)));
            }
            // Returned as well, so that a connection the error shows is dead gets discarded.
            return Err(error);
        }
    };
    let mut rows: Vec<Option<(Vec<u8>, Session, User)>> = rows.into_iter().map(Some).collect();
    let hashes: Vec<TokenHash> = batch.iter().map(|w| w.hash).collect();
    let answered = batch.len();
    for (i, waiter) in batch.into_iter().enumerate() {
        let wanted = waiter.hash.as_bytes();
        let row = rows
            .iter_mut()
            .find(|row| matches!(row, Some((hash, _, _)) if hash.as_slice() == wanted));
        // The same token twice in one batch (one client, two requests at once) shares the row.
        let asked_again = hashes[i + 1..].contains(&waiter.hash);
        let found = row
            .and_then(|row| if asked_again { row.clone() } else { row.take() })
            // Each waiter applies its own "now"; a shared query used the earliest of them.
            .filter(|(_, session, _)| session.expires_at > waiter.now)
            .map(|(_, session, user)| (session, user));
        // A waiter that gave up (its request timed out) has dropped its receiver.
        let _ = waiter.reply.send(Ok(found));
    }
    Ok(answered)
}
