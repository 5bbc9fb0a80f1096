//! The session store and migrations, against real SQLite and PostgreSQL databases.

mod common;

use chrono::Duration;
use common::{insert_user, Backend, TestDb};
use diesel::prelude::*;
use latchkey::auth::lookup::{Resolved, SessionLookup};
use latchkey::clock;
use latchkey::db::models::session::ClientInfo;
use latchkey::db::models::{Session, SessionPolicy, User};
use latchkey::db::schema::sessions;
use latchkey::db::{establish, run_migrations, Db, DbError};
use latchkey::metrics::Metrics;
use latchkey::token::{Token, TokenHash};

struct Store {
    db: Db,
    policy: SessionPolicy,
    _test_db: TestDb,
}

fn store(backend: Backend) -> Option<Store> {
    let test_db = TestDb::new(backend)?;
    let settings = test_db.settings();
    let (db, applied) = Db::connect_and_migrate(&settings).expect("connect and migrate");
    assert!(applied > 0, "a fresh database gets migrations");
    Some(Store {
        db,
        policy: SessionPolicy::from_settings(&settings),
        _test_db: test_db,
    })
}

fn client() -> ClientInfo {
    ClientInfo {
        ip: Some("192.0.2.1".into()),
        user_agent: Some("test-agent".into()),
    }
}

fn create_and_resolve(backend: Backend) {
    let Some(s) = store(backend) else { return };
    let policy = s.policy;
    s.db.run_blocking(|conn| {
        let user = insert_user(conn, "a@example.com");
        let now = clock::system_now();
        let (session, token) = Session::create(conn, &policy, &user.id, &client(), now)?;
        assert_eq!(session.expires_at, now + policy.idle_timeout);
        let (found, owner) = Session::resolve(conn, &token.hash(), now)?.expect("resolves");
        assert_eq!(found.id, session.id);
        assert_eq!(owner.id, user.id);
        assert_eq!(found.ip.as_deref(), Some("192.0.2.1"));
        // An unknown token does not resolve.
        assert!(Session::resolve(conn, &Token::generate().hash(), now)?.is_none());
        Ok(())
    })
    .unwrap();
}

fn expired_session_does_not_resolve(backend: Backend) {
    let Some(s) = store(backend) else { return };
    let policy = s.policy;
    s.db.run_blocking(|conn| {
        let user = insert_user(conn, "a@example.com");
        let now = clock::system_now();
        let (session, token) = Session::create(conn, &policy, &user.id, &client(), now)?;
        let later = session.expires_at;
        assert!(Session::resolve(conn, &token.hash(), later - Duration::seconds(1))?.is_some());
        // At and after expires_at the session is gone, although no cleanup ran.
        assert!(Session::resolve(conn, &token.hash(), later)?.is_none());
        assert!(Session::resolve(conn, &token.hash(), later + Duration::days(1))?.is_none());
        Ok(())
    })
    .unwrap();
}

fn touch_is_throttled_and_capped(backend: Backend) {
    let Some(s) = store(backend) else { return };
    let policy = SessionPolicy {
        idle_timeout: Duration::hours(1),
        absolute_timeout: Duration::hours(3),
        touch_interval: Duration::seconds(60),
    };
    s.db.run_blocking(|conn| {
        let user = insert_user(conn, "a@example.com");
        let t0 = clock::system_now();
        let (mut session, token) = Session::create(conn, &policy, &user.id, &client(), t0)?;
        // Within the interval: no write.
        assert!(!session.touch(conn, &policy, t0 + Duration::seconds(59))?);
        let stored: chrono::NaiveDateTime = sessions::table
            .find(session.id.as_str())
            .select(sessions::last_seen_at)
            .first(conn)?;
        assert_eq!(stored, t0);
        // After it: written, expiry rolls forward.
        let t1 = t0 + Duration::minutes(50);
        assert!(session.touch(conn, &policy, t1)?);
        assert_eq!(session.expires_at, t1 + Duration::hours(1));
        let (found, _) =
            Session::resolve(conn, &token.hash(), t0 + Duration::minutes(100))?.expect("extended");
        assert_eq!(found.last_seen_at, t1);
        // Near the absolute cap expiry stops at created + 3h, however active.
        let t2 = t0 + Duration::minutes(150);
        let mut current = found;
        assert!(current.touch(conn, &policy, t2)?);
        assert_eq!(current.expires_at, t0 + Duration::hours(3));
        assert!(Session::resolve(conn, &token.hash(), t0 + Duration::hours(3))?.is_none());
        Ok(())
    })
    .unwrap();
}

fn rotate_invalidates_old_token(backend: Backend) {
    let Some(s) = store(backend) else { return };
    let policy = s.policy;
    s.db.run_blocking(|conn| {
        let user = insert_user(conn, "a@example.com");
        let now = clock::system_now();
        let (session, old) = Session::create(conn, &policy, &user.id, &client(), now)?;
        let (rotated, new) =
            Session::rotate(conn, &policy, &session.id, &old.hash(), now)?.expect("rotates");
        assert_eq!(rotated.id, session.id);
        assert_ne!(new, old);
        assert!(Session::resolve(conn, &old.hash(), now)?.is_none());
        assert!(Session::resolve(conn, &new.hash(), now)?.is_some());
        // A second rotation with the old token loses.
        assert!(Session::rotate(conn, &policy, &session.id, &old.hash(), now)?.is_none());
        Ok(())
    })
    .unwrap();
}

fn revoke_list_and_revoke_all(backend: Backend) {
    let Some(s) = store(backend) else { return };
    let policy = s.policy;
    s.db.run_blocking(|conn| {
        let alice = insert_user(conn, "alice@example.com");
        let bob = insert_user(conn, "bob@example.com");
        let now = clock::system_now();
        let mut mine = Vec::new();
        for i in 0..3 {
            mine.push(Session::create(
                conn,
                &policy,
                &alice.id,
                &client(),
                now + Duration::seconds(i),
            )?);
        }
        let (bobs, _) = Session::create(conn, &policy, &bob.id, &client(), now)?;
        let listed = Session::list_active(conn, &alice.id, now + Duration::seconds(5))?;
        assert_eq!(listed.len(), 3);
        assert_eq!(listed[0].id, mine[2].0.id, "newest activity first");
        // Alice cannot revoke Bob's session.
        assert!(!Session::revoke(conn, &alice.id, &bobs.id)?);
        assert!(Session::revoke(conn, &alice.id, &mine[0].0.id)?);
        assert!(Session::resolve(conn, &mine[0].1.hash(), now)?.is_none());
        // Revoke all but one.
        assert_eq!(
            Session::revoke_all(conn, &alice.id, Some(&mine[1].0.id))?,
            1
        );
        assert_eq!(Session::list_active(conn, &alice.id, now)?.len(), 1);
        assert_eq!(Session::revoke_all(conn, &alice.id, None)?, 1);
        assert!(Session::list_active(conn, &alice.id, now)?.is_empty());
        let bobs_left: i64 = sessions::table
            .filter(sessions::user_id.eq(bob.id.as_str()))
            .count()
            .get_result(conn)?;
        assert_eq!(bobs_left, 1, "the other user's session is untouched");
        assert!(bobs.expires_at > now);
        // Deleting the user cascades to their sessions.
        assert_eq!(User::delete(conn, &bob.id)?, 1);
        let left: i64 = sessions::table
            .filter(sessions::user_id.eq(bob.id.as_str()))
            .count()
            .get_result(conn)?;
        assert_eq!(left, 0);
        Ok(())
    })
    .unwrap();
}

fn delete_expired_in_batches(backend: Backend) {
    let Some(s) = store(backend) else { return };
    let policy = s.policy;
    s.db.run_blocking(|conn| {
        let user = insert_user(conn, "a@example.com");
        let now = clock::system_now();
        for _ in 0..25 {
            Session::create(conn, &policy, &user.id, &client(), now - Duration::days(8))?;
        }
        let (_, live) = Session::create(conn, &policy, &user.id, &client(), now)?;
        assert_eq!(Session::delete_expired_batch(conn, now, 10)?, 10);
        assert_eq!(Session::delete_expired_batch(conn, now, 10)?, 10);
        assert_eq!(Session::delete_expired_batch(conn, now, 10)?, 5);
        assert_eq!(Session::delete_expired_batch(conn, now, 10)?, 0);
        assert!(Session::resolve(conn, &live.hash(), now)?.is_some());
        Ok(())
    })
    .unwrap();
}

/// The database holds SHA-256 of the token, never the token.
fn raw_token_never_stored(backend: Backend) {
    let Some(s) = store(backend) else { return };
    let policy = s.policy;
    s.db.run_blocking(|conn| {
        let user = insert_user(conn, "a@example.com");
        let (session, token) =
            Session::create(conn, &policy, &user.id, &client(), clock::system_now())?;
        let stored: Vec<u8> = sessions::table
            .find(session.id.as_str())
            .select(sessions::token_hash)
            .first(conn)?;
        assert_eq!(stored, token.hash().as_bytes());
        let text = token.expose();
        let matches: i64 = sessions::table
            .filter(
                sessions::id
                    .eq(&text)
                    .or(sessions::user_agent.eq(&text))
                    .or(sessions::ip.eq(&text)),
            )
            .count()
            .get_result(conn)?;
        assert_eq!(matches, 0);
        Ok(())
    })
    .unwrap();
}

fn migrations_twice_is_a_no_op(backend: Backend) {
    let Some(test_db) = TestDb::new(backend) else {
        return;
    };
    let settings = test_db.settings();
    let mut conn = establish(&settings.database).unwrap();
    assert!(run_migrations(&mut conn).unwrap() > 0);
    assert_eq!(run_migrations(&mut conn).unwrap(), 0);
    let (_, applied) = Db::connect_and_migrate(&settings).unwrap();
    assert_eq!(applied, 0);
}

/// Several processes (here threads with their own connections) booting at once all succeed,
/// and the migrations run once.
fn concurrent_migrations(backend: Backend) {
    let Some(test_db) = TestDb::new(backend) else {
        return;
    };
    let settings = test_db.settings();
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let settings = settings.clone();
            std::thread::spawn(move || {
                let mut conn = establish(&settings.database).unwrap();
                run_migrations(&mut conn)
            })
        })
        .collect();
    let applied: Vec<usize> = handles
        .into_iter()
        .map(|h| h.join().unwrap().expect("migrates"))
        .collect();
    assert_eq!(applied.iter().filter(|n| **n > 0).count(), 1, "{applied:?}");
}

#[test]
fn postgres_outage_never_falls_back_to_sqlite() {
    let settings =
        latchkey::config::Settings::for_database("postgres://nobody@127.0.0.1:1/none").unwrap();
    assert_eq!(settings.backend(), latchkey::config::Backend::Postgres);
    let before = cwd_files();
    let err = Db::connect_and_migrate(&settings).err().expect("refused");
    assert!(
        err.contains("127.0.0.1") || err.to_lowercase().contains("connect"),
        "{err}"
    );
    // No SQLite file appeared in the working directory (where a fallback would put one).
    assert_eq!(cwd_files(), before);
}

fn cwd_files() -> Vec<std::ffi::OsString> {
    let mut names: Vec<_> = std::fs::read_dir(".")
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    names.sort();
    names
}

fn current_thread_runtime() -> rocket::tokio::runtime::Runtime {
    rocket::tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// `SELECT n`: a query that needs a connection and nothing else.
fn select_int(conn: &mut latchkey::db::DbConnection, n: i32) -> QueryResult<i32> {
    diesel::select(n.into_sql::<diesel::sql_types::Integer>()).get_result(conn)
}

/// A fresh database behind a pool of `pool_size` connections that waits `pool_timeout` for one.
fn small_pool(
    backend: Backend,
    pool_size: u32,
    pool_timeout: std::time::Duration,
) -> Option<(Db, latchkey::config::Settings, TestDb)> {
    let test_db = TestDb::new(backend)?;
    let mut settings = test_db.settings();
    settings.pool_size = pool_size;
    settings.pool_timeout = pool_timeout;
    let (db, _) = Db::connect_and_migrate(&settings).expect("connect and migrate");
    Some((db, settings, test_db))
}

/// A slow query on another task: holds a pooled connection for `ms` milliseconds, then
/// answers `n`.
fn slow_query(db: &Db, ms: u64, n: i32) -> rocket::tokio::task::JoinHandle<Result<i32, DbError>> {
    let db = db.clone();
    rocket::tokio::spawn(async move {
        db.run(move |conn| {
            std::thread::sleep(std::time::Duration::from_millis(ms));
            select_int(conn, n)
        })
        .await
    })
}

/// With a single async worker (`workers = 1`) queries still work: they run on the blocking
/// pool, never on the one worker.
fn reads_work_with_one_worker(backend: Backend) {
    let Some(test_db) = TestDb::new(backend) else {
        return;
    };
    let figment = latchkey::config::figment()
        .merge(("database_url", test_db.url.clone()))
        .merge(("workers", 1));
    let settings = latchkey::config::Settings::from_figment(&figment).expect("valid settings");
    let (db, _) = Db::connect_and_migrate(&settings).expect("connect and migrate");
    let runtime = current_thread_runtime();
    let read = runtime.block_on(db.run(|conn| select_int(conn, 3)));
    assert_eq!(read.expect("read through the blocking pool"), 3);
}

fn multi_thread_runtime() -> rocket::tokio::runtime::Runtime {
    rocket::tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap()
}

/// Lookups queued while the one connection is busy: `hold` runs on it first (with the
/// connection), then `lookups` are started at once. Returns each lookup's result in order and
/// the batch-size histogram's (queries, lookups).
#[allow(clippy::type_complexity)]
fn lookups_behind_a_busy_connection(
    s: &Store,
    hold: impl FnOnce(&mut latchkey::db::DbConnection) -> QueryResult<()> + Send + 'static,
    lookups: Vec<(TokenHash, chrono::NaiveDateTime)>,
) -> (Vec<Result<Resolved, DbError>>, u64, f64) {
    use rocket::tokio;
    let metrics = Metrics::new();
    let lookup = SessionLookup::new(s.db.clone(), metrics.lookup_batch.clone());
    let db = s.db.clone();
    let results = multi_thread_runtime().block_on(async move {
        let busy = tokio::spawn(async move {
            db.run(move |conn| {
                hold(conn)?;
                std::thread::sleep(std::time::Duration::from_millis(400));
                Ok(())
            })
            .await
        });
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let tasks: Vec<_> = lookups
            .into_iter()
            .map(|(hash, now)| {
                let lookup = lookup.clone();
                tokio::spawn(async move { lookup.resolve(hash, now).await })
            })
            .collect();
        let mut results = Vec::new();
        for task in tasks {
            results.push(task.await.expect("lookup task"));
        }
        busy.await.expect("busy task").expect("busy query");
        results
    });
    let sizes = &metrics.lookup_batch;
    (results, sizes.get_sample_count(), sizes.get_sample_sum())
}

fn one_connection(backend: Backend) -> Option<Store> {
    let (db, settings, test_db) = small_pool(backend, 1, std::time::Duration::from_secs(2))?;
    Some(Store {
        db,
        policy: SessionPolicy::from_settings(&settings),
        _test_db: test_db,
    })
}

/// Forty lookups queued together go in two queries (32 + 8), and each gets its own answer:
/// the right session and user for every token (also when one token is asked for three times at
/// once), nothing for unknown tokens, and expiry judged by each lookup's own "now" although
/// they shared a query.
fn queued_lookups_share_queries_and_keep_their_answers(backend: Backend) {
    let Some(s) = one_connection(backend) else {
        return;
    };
    let policy = s.policy;
    let now = clock::system_now();
    let created: Vec<(Session, Token, User)> =
        s.db.run_blocking(move |conn| {
            (0..8)
                .map(|i| {
                    let user = insert_user(conn, &format!("u{i}@example.com"));
                    let (session, token) =
                        Session::create(conn, &policy, &user.id, &client(), now)?;
                    Ok((session, token, user))
                })
                .collect()
        })
        .unwrap();
    let expires_at = created[0].0.expires_at;
    let mut lookups = Vec::new();
    let mut expected: Vec<Option<(latchkey::domain::SessionId, latchkey::domain::UserId)>> =
        Vec::new();
    for round in 0..3 {
        for (session, token, user) in &created {
            lookups.push((token.hash(), now));
            expected.push(Some((session.id.clone(), user.id.clone())));
        }
        // An unknown token, and the first session just before and just after its expiry.
        lookups.push((Token::generate().hash(), now));
        expected.push(None);
        if round < 2 {
            lookups.push((created[0].1.hash(), expires_at - Duration::seconds(1)));
            expected.push(Some((created[0].0.id.clone(), created[0].2.id.clone())));
        } else {
            lookups.push((created[0].1.hash(), expires_at + Duration::seconds(1)));
            expected.push(None);
        }
    }
    let total = lookups.len();
    assert_eq!(total, 30);
    lookups.extend((0..10).map(|i| (created[i % 8].1.hash(), now)));
    expected
        .extend((0..10).map(|i| Some((created[i % 8].0.id.clone(), created[i % 8].2.id.clone()))));

    let (results, queries, answered) = lookups_behind_a_busy_connection(&s, |_| Ok(()), lookups);
    for (i, (result, expected)) in results.into_iter().zip(expected).enumerate() {
        let got = result
            .unwrap_or_else(|e| panic!("lookup {i} failed: {e}"))
            .map(|(session, user)| (session.id, user.id));
        assert_eq!(got, expected, "lookup {i}");
    }
    assert_eq!(answered, 40.0);
    assert_eq!(
        queries, 2,
        "40 queued lookups take two queries of at most 32"
    );
}

/// A query that fails answers every lookup it carried with the error; none is left waiting.
fn failed_batch_answers_every_lookup(backend: Backend) {
    let Some(s) = one_connection(backend) else {
        return;
    };
    let policy = s.policy;
    let now = clock::system_now();
    let token =
        s.db.run_blocking(move |conn| {
            let user = insert_user(conn, "a@example.com");
            Session::create(conn, &policy, &user.id, &client(), now).map(|(_, token)| token)
        })
        .unwrap();
    let lookups = (0..6).map(|_| (token.hash(), now)).collect();
    let break_the_join = |conn: &mut latchkey::db::DbConnection| {
        diesel::sql_query("ALTER TABLE users RENAME TO users_gone")
            .execute(conn)
            .map(drop)
    };
    let (results, queries, answered) =
        lookups_behind_a_busy_connection(&s, break_the_join, lookups);
    assert_eq!(results.len(), 6);
    for result in results {
        assert!(matches!(result, Err(DbError::Shared(_))), "{result:?}");
    }
    assert_eq!((queries, answered), (1, 6.0));
}

/// Work that fills the pool does not hold up the session lookup: its lane keeps a connection
/// of its own that nobody else can take (not `run`, not `run_blocking`, not a second lane),
/// and everything else shares the rest.
fn lookup_lane_has_a_connection_of_its_own(backend: Backend) {
    use rocket::tokio;
    use std::time::{Duration as StdDuration, Instant};
    let Some((db, _settings, _test_db)) = small_pool(backend, 2, StdDuration::from_millis(300))
    else {
        return;
    };
    let lane = db.lookup_lane();
    multi_thread_runtime().block_on(async move {
        let first = slow_query(&db, 1500, 1);
        tokio::time::sleep(StdDuration::from_millis(100)).await;
        // Waits for the connection the first one holds, and gives up after pool_timeout.
        let second = slow_query(&db, 1500, 2);
        let blocking = db.clone();
        let third =
            tokio::task::spawn_blocking(move || blocking.run_blocking(|conn| select_int(conn, 4)));
        let other_lane = db.lookup_lane();
        let fourth =
            tokio::task::spawn_blocking(move || other_lane.run(|conn| select_int(conn, 5)));
        tokio::time::sleep(StdDuration::from_millis(50)).await;
        let started = Instant::now();
        let read = tokio::task::spawn_blocking(move || lane.run(|conn| select_int(conn, 3)))
            .await
            .unwrap();
        assert_eq!(read.expect("the lane's own connection"), 3);
        assert!(
            started.elapsed() < StdDuration::from_millis(250),
            "{:?}",
            started.elapsed()
        );
        for (what, waited) in [
            ("run", second.await.unwrap()),
            ("run_blocking", third.await.unwrap()),
            ("a second lane", fourth.await.unwrap()),
        ] {
            assert!(
                matches!(waited, Err(DbError::Unavailable)),
                "{what}: {waited:?}"
            );
        }
        assert_eq!(first.await.unwrap().unwrap(), 1);
    });
}

/// Lookups that give up leave nothing behind: one whose request went away is skipped when a
/// batch is taken, and ones that time out while the database is busy (or down) take their
/// entries out of the queue, which would otherwise grow for as long as the outage lasts.
fn abandoned_lookups_leave_the_queue(backend: Backend) {
    use rocket::tokio;
    use std::time::Duration as StdDuration;
    let Some((db, settings, _test_db)) = small_pool(backend, 1, StdDuration::from_millis(200))
    else {
        return;
    };
    let policy = SessionPolicy::from_settings(&settings);
    let now = clock::system_now();
    let token = db
        .run_blocking(move |conn| {
            let user = insert_user(conn, "a@example.com");
            Session::create(conn, &policy, &user.id, &client(), now).map(|(_, token)| token)
        })
        .unwrap();
    let metrics = Metrics::new();
    let lookup = SessionLookup::new(db.clone(), metrics.lookup_batch.clone());
    multi_thread_runtime().block_on(async move {
        // A lookup whose request is dropped while it waits.
        let holder = slow_query(&db, 150, 1);
        tokio::time::sleep(StdDuration::from_millis(20)).await;
        let gone = {
            let lookup = lookup.clone();
            let hash = token.hash();
            tokio::spawn(async move { lookup.resolve(hash, now).await })
        };
        tokio::time::sleep(StdDuration::from_millis(50)).await;
        gone.abort();
        holder.await.unwrap().unwrap();
        let found = lookup.resolve(token.hash(), now).await.unwrap();
        assert!(found.is_some());
        let sizes = &metrics.lookup_batch;
        assert_eq!((sizes.get_sample_count(), sizes.get_sample_sum()), (1, 1.0));

        // Twenty lookups that time out behind a busy connection.
        let holder = slow_query(&db, 800, 1);
        tokio::time::sleep(StdDuration::from_millis(20)).await;
        let waiting: Vec<_> = (0..20)
            .map(|_| {
                let lookup = lookup.clone();
                let hash = token.hash();
                tokio::spawn(async move { lookup.resolve(hash, now).await })
            })
            .collect();
        for task in waiting {
            let result = task.await.unwrap();
            assert!(matches!(result, Err(DbError::Unavailable)), "{result:?}");
        }
        assert_eq!(lookup.waiting(), 0, "timed-out lookups stayed queued");
        holder.await.unwrap().unwrap();
    });
}

on_both_backends!(
    abandoned_lookups_leave_the_queue,
    lookup_lane_has_a_connection_of_its_own,
    queued_lookups_share_queries_and_keep_their_answers,
    failed_batch_answers_every_lookup,
    reads_work_with_one_worker,
    create_and_resolve,
    expired_session_does_not_resolve,
    touch_is_throttled_and_capped,
    rotate_invalidates_old_token,
    revoke_list_and_revoke_all,
    delete_expired_in_batches,
    raw_token_never_stored,
    migrations_twice_is_a_no_op,
    concurrent_migrations,
);
