//! The cleanup shared by the worker and the admin endpoint, on both backends.

mod common;

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Barrier};

use chrono::Duration;
use common::{insert_user, Backend, TestDb};
use diesel::prelude::*;
use latchkey::cleanup::{self, CleanupOutcome, CleanupReport};
use latchkey::clock;
use latchkey::config::Settings;
use latchkey::db::models::session::ClientInfo;
use latchkey::db::models::{CleanupLease, CleanupRun, Session, SessionPolicy};
use latchkey::db::schema::{cleanup_lease, login_throttles, security_events, sessions};
use latchkey::db::Db;

fn setup(backend: Backend, adjust: impl FnOnce(&mut Settings)) -> Option<(Db, Settings, TestDb)> {
    let test_db = TestDb::new(backend)?;
    let mut settings = test_db.settings();
    adjust(&mut settings);
    let (db, _) = Db::connect_and_migrate(&settings).expect("migrate");
    Some((db, settings, test_db))
}

/// `expired` sessions created long ago and `active` ones created now.
fn seed(db: &Db, settings: &Settings, expired: usize, active: usize) {
    let policy = SessionPolicy::from_settings(settings);
    db.run_blocking(|conn| {
        conn.transaction(|conn| {
            let owner = insert_user(
                conn,
                &format!("{}@example.com", uuid::Uuid::new_v4().simple()),
            );
            let long_ago = clock::system_now() - Duration::days(60);
            for _ in 0..expired {
                Session::create(conn, &policy, &owner.id, &ClientInfo::default(), long_ago)?;
            }
            for _ in 0..active {
                Session::create(
                    conn,
                    &policy,
                    &owner.id,
                    &ClientInfo::default(),
                    clock::system_now(),
                )?;
            }
            Ok(())
        })
    })
    .unwrap();
}

fn count_sessions(db: &Db) -> i64 {
    db.run_blocking(|conn| sessions::table.count().get_result(conn))
        .unwrap()
}

fn ran(outcome: CleanupOutcome) -> CleanupReport {
    match outcome {
        CleanupOutcome::Ran(report) => report,
        CleanupOutcome::Skipped => panic!("expected the cleanup to run"),
    }
}

fn expired_go_active_stay_and_run_is_recorded(backend: Backend) {
    let Some((db, settings, _t)) = setup(backend, |_| {}) else {
        return;
    };
    seed(&db, &settings, 37, 5);
    let report = ran(cleanup::run_blocking(&db, &settings, &AtomicBool::new(false)).unwrap());
    assert_eq!(report.sessions_deleted, 37);
    assert_eq!(count_sessions(&db), 5);
    let recorded = db
        .run_blocking(CleanupRun::latest)
        .unwrap()
        .expect("run recorded");
    assert_eq!(recorded.sessions_deleted, 37);
    assert!(recorded.finished_at >= recorded.started_at);
    // A second run finds nothing.
    let again = ran(cleanup::run_blocking(&db, &settings, &AtomicBool::new(false)).unwrap());
    assert_eq!(again.sessions_deleted, 0);
}

fn batches_of_one_hundred(backend: Backend) {
    let Some((db, settings, _t)) = setup(backend, |s| s.cleanup_batch_size = 100) else {
        return;
    };
    seed(&db, &settings, 1050, 3);
    let report = ran(cleanup::run_blocking(&db, &settings, &AtomicBool::new(false)).unwrap());
    assert_eq!(report.sessions_deleted, 1050);
    assert!(report.statements <= 11, "{} statements", report.statements);
    assert_eq!(count_sessions(&db), 3);
}

fn stop_request_ends_after_the_batch_in_hand(backend: Backend) {
    let Some((db, settings, _t)) = setup(backend, |s| s.cleanup_batch_size = 10) else {
        return;
    };
    seed(&db, &settings, 50, 0);
    let report = ran(cleanup::run_blocking(&db, &settings, &AtomicBool::new(true)).unwrap());
    assert!(report.interrupted);
    assert_eq!(report.sessions_deleted, 10);
    assert_eq!(count_sessions(&db), 40);
}

fn prunes_old_events_and_stale_counters(backend: Backend) {
    let Some((db, settings, _t)) = setup(backend, |_| {}) else {
        return;
    };
    let now = clock::system_now();
    db.run_blocking(|conn| {
        let owner = insert_user(conn, "a@example.com");
        for (id, at) in [
            ("old", now - Duration::days(91)),
            ("new", now - Duration::days(1)),
        ] {
            diesel::insert_into(security_events::table)
                .values((
                    security_events::id.eq(id),
                    security_events::user_id.eq(Some(owner.id.as_str())),
                    security_events::kind.eq("login"),
                    security_events::at.eq(at),
                ))
                .execute(conn)?;
        }
        for (key, at) in [("ip:stale", now - Duration::days(2)), ("ip:fresh", now)] {
            diesel::insert_into(login_throttles::table)
                .values((
                    login_throttles::key.eq(key),
                    login_throttles::failures.eq(3),
                    login_throttles::window_start.eq(at),
                    login_throttles::last_failure_at.eq(at),
                ))
                .execute(conn)?;
        }
        Ok(())
    })
    .unwrap();
    let report = ran(cleanup::run_blocking(&db, &settings, &AtomicBool::new(false)).unwrap());
    assert_eq!((report.events_deleted, report.throttles_deleted), (1, 1));
    let left: Vec<String> = db
        .run_blocking(|conn| {
            security_events::table
                .select(security_events::id)
                .load(conn)
        })
        .unwrap();
    assert_eq!(left, ["new"]);
    let keys: Vec<String> = db
        .run_blocking(|conn| {
            login_throttles::table
                .select(login_throttles::key)
                .load(conn)
        })
        .unwrap();
    assert_eq!(keys, ["ip:fresh"]);
}

/// Two cleanups started together: no errors, and only one of them deletes anything (the lease
/// makes the other skip).
fn concurrent_cleanups_do_not_collide(backend: Backend) {
    let Some((db, settings, _t)) = setup(backend, |s| s.cleanup_batch_size = 500) else {
        return;
    };
    seed(&db, &settings, 3000, 2);
    let barrier = Arc::new(Barrier::new(2));
    let handles: Vec<_> = (0..2)
        .map(|_| {
            let (db, settings, barrier) = (db.clone(), settings.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                cleanup::run_blocking(&db, &settings, &AtomicBool::new(false)).expect("no error")
            })
        })
        .collect();
    let outcomes: Vec<CleanupOutcome> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let deleted: Vec<i64> = outcomes
        .iter()
        .map(|o| match o {
            CleanupOutcome::Ran(r) => r.sessions_deleted,
            CleanupOutcome::Skipped => 0,
        })
        .collect();
    assert_eq!(deleted.iter().sum::<i64>(), 3000, "{outcomes:?}");
    assert_eq!(
        deleted.iter().filter(|d| **d > 0).count(),
        1,
        "{outcomes:?}"
    );
    assert_eq!(count_sessions(&db), 2);
}

/// A cleanup takes the lease only when nobody holds it or its holder's time ran out: a live
/// holder makes it skip; a holder that stopped renewing (a crashed worker) is taken over.
fn the_lease_keeps_one_cleaner(backend: Backend) {
    let Some((db, settings, _t)) = setup(backend, |_| {}) else {
        return;
    };
    seed(&db, &settings, 10, 0);
    let hold = |until: chrono::NaiveDateTime| {
        db.run_blocking(move |conn| {
            let now = clock::system_now();
            CleanupLease::take(conn, "another worker", now, until)
        })
        .unwrap()
    };
    assert!(hold(clock::system_now() + Duration::minutes(1)));
    let skipped = cleanup::run_blocking(&db, &settings, &AtomicBool::new(false)).unwrap();
    assert_eq!(skipped, CleanupOutcome::Skipped);
    assert_eq!(count_sessions(&db), 10);
    // The holder stopped renewing a while ago.
    db.run_blocking(|conn| {
        diesel::update(cleanup_lease::table)
            .set(cleanup_lease::expires_at.eq(clock::system_now() - Duration::seconds(1)))
            .execute(conn)
    })
    .unwrap();
    let report = ran(cleanup::run_blocking(&db, &settings, &AtomicBool::new(false)).unwrap());
    assert_eq!(report.sessions_deleted, 10);
    // Given back at the end: the next one runs at once.
    let lease: i64 = db
        .run_blocking(|conn| cleanup_lease::table.count().get_result(conn))
        .unwrap();
    assert_eq!(lease, 0);
}

/// A cleanup holds no connection between its steps: with a pool of one, requests get the
/// connection while a long cleanup runs (each waits for one batch at most, far under
/// `pool_timeout_ms`), as when the admin endpoint or the worker's schedule runs it.
fn a_running_cleanup_leaves_the_pool_to_others(backend: Backend) {
    use rocket::tokio;
    use std::sync::atomic::Ordering;
    let Some((db, settings, _t)) = setup(backend, |s| {
        s.pool_size = 1;
        s.pool_timeout = std::time::Duration::from_millis(300);
        s.cleanup_batch_size = 1;
    }) else {
        return;
    };
    seed(&db, &settings, 3000, 0);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let finished = Arc::new(AtomicBool::new(false));
        let cleaner = {
            let (db, settings, finished) = (db.clone(), settings.clone(), finished.clone());
            tokio::spawn(async move {
                let stop = Arc::new(AtomicBool::new(false));
                let outcome = cleanup::run(&db, &settings, stop, None).await;
                finished.store(true, Ordering::SeqCst);
                outcome
            })
        };
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        for _ in 0..5 {
            let count = db
                .run(|conn| sessions::table.count().get_result::<i64>(conn))
                .await;
            assert!(count.is_ok(), "{count:?}");
        }
        assert!(
            !finished.load(Ordering::SeqCst),
            "the cleanup ended before the queries: make it longer"
        );
        let report = ran(cleaner.await.unwrap().expect("no error"));
        assert_eq!(report.sessions_deleted, 3000);
    });
}

on_both_backends!(
    expired_go_active_stay_and_run_is_recorded,
    batches_of_one_hundred,
    stop_request_ends_after_the_batch_in_hand,
    prunes_old_events_and_stale_counters,
    concurrent_cleanups_do_not_collide,
    the_lease_keeps_one_cleaner,
    a_running_cleanup_leaves_the_pool_to_others,
);
