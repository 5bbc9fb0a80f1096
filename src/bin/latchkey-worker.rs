//! `latchkey-worker`: removes expired sessions on a schedule (or once), applies migrations,
//! and promotes or demotes admins. Reads the same configuration as the server.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use latchkey::cleanup::{self, CleanupOutcome};
use latchkey::clock;
use latchkey::config::{self, Settings};
use latchkey::db::models::{Role, User};
use latchkey::db::{self, Db, DbConnection};
use tokio::sync::Mutex;
use tokio_cron_scheduler::{Job, JobScheduler};

/// Cleans up expired latchkey sessions and manages admins.
///
/// Configuration comes from Rocket.toml (profile from ROCKET_PROFILE), ROCKET_* variables,
/// DATABASE_URL and CRON_SECRET, exactly as for the server. Without arguments it applies
/// pending migrations and runs the cleanup on `cleanup_schedule` (6-field cron with seconds,
/// default hourly) until SIGTERM or SIGINT, finishing the batch in hand before exiting 0.
#[derive(Parser)]
#[command(name = "latchkey-worker", version)]
struct Cli {
    /// Run one cleanup now and exit (for cron, systemd timers, Kubernetes CronJobs).
    #[arg(long)]
    once: bool,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Apply pending migrations and exit.
    Migrate,
    /// Grant or remove the admin role.
    Admin {
        #[command(subcommand)]
        action: AdminAction,
    },
}

#[derive(Subcommand)]
enum AdminAction {
    /// Give the account with this email the admin role.
    Promote { email: String },
    /// Make the account with this email a plain user again.
    Demote { email: String },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    latchkey::init_tracing();
    let settings = match Settings::from_figment(&config::figment()) {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("latchkey-worker: {e}");
            return ExitCode::from(2);
        }
    };
    match cli.command {
        Some(Command::Migrate) => one_shot(&settings, |_| ExitCode::SUCCESS),
        Some(Command::Admin { action }) => one_shot(&settings, |conn| set_role(conn, action)),
        None if cli.once => one_shot(&settings, |conn| run_once(conn, &settings)),
        None => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a Tokio runtime can start")
            .block_on(scheduled(settings)),
    }
}

/// Connects and migrates (failing fast, with the reason), then runs `work` on that one
/// connection. No pool: a pool's background threads opening TLS connections while the
/// process exits can crash libpq/OpenSSL's exit handlers.
fn one_shot(settings: &Settings, work: impl FnOnce(&mut DbConnection) -> ExitCode) -> ExitCode {
    let mut conn = match db::establish(&settings.database) {
        Ok(conn) => conn,
        Err(e) => {
            eprintln!("latchkey-worker: database (`database_url`): cannot connect: {e}");
            return ExitCode::from(1);
        }
    };
    match db::run_migrations(&mut conn) {
        Ok(applied) if applied > 0 => tracing::info!(applied, "migrations applied"),
        Ok(_) => {}
        Err(e) => {
            eprintln!("latchkey-worker: {e}");
            return ExitCode::from(1);
        }
    }
    work(&mut conn)
}

fn run_once(conn: &mut DbConnection, settings: &Settings) -> ExitCode {
    let outcome =
        cleanup::run_on(conn, settings, &AtomicBool::new(false)).map_err(db::DbError::from);
    cleanup::log_outcome(&outcome);
    match outcome {
        Ok(CleanupOutcome::Ran(report)) => {
            println!(
                "deleted {} expired sessions, {} old events, {} stale login counters in {} ms \
                 ({} statements, longest {} ms)",
                report.sessions_deleted,
                report.events_deleted,
                report.throttles_deleted,
                report.duration_ms,
                report.statements,
                report.longest_statement_ms
            );
            ExitCode::SUCCESS
        }
        Ok(CleanupOutcome::Skipped) => {
            println!("skipped: another process is cleaning up");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("latchkey-worker: cleanup failed: {e}");
            ExitCode::from(1)
        }
    }
}

fn set_role(conn: &mut DbConnection, action: AdminAction) -> ExitCode {
    let (email, role) = match action {
        AdminAction::Promote { email } => (email, Role::Admin),
        AdminAction::Demote { email } => (email, Role::User),
    };
    let email = email.trim().to_lowercase();
    match User::set_role(conn, &email, role, clock::now()).map_err(db::DbError::from) {
        Ok(1) => {
            println!("{email} is now {}", role.as_str());
            ExitCode::SUCCESS
        }
        Ok(_) => {
            eprintln!("latchkey-worker: no account with email {email}");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("latchkey-worker: {e}");
            ExitCode::from(1)
        }
    }
}

/// Shared by the scheduled job and the signal handler: a stop request, and a lock held while a
/// cleanup runs so that shutdown can wait for the batch in hand.
struct Worker {
    db: Db,
    settings: Settings,
    stop: Arc<AtomicBool>,
    running: Mutex<()>,
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler installs");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
    }
}

/// Waits for the database at start with back-off (1 s doubling to 60 s) rather than dying;
/// `None` if a stop signal comes first.
async fn wait_for_database(settings: &Settings) -> Option<Db> {
    let mut delay = Duration::from_secs(1);
    let signal = shutdown_signal();
    tokio::pin!(signal);
    loop {
        let attempt = {
            let settings = settings.clone();
            tokio::task::spawn_blocking(move || Db::connect_and_migrate(&settings))
                .await
                .unwrap_or_else(|e| Err(e.to_string()))
        };
        match attempt {
            Ok((db, applied)) => {
                if applied > 0 {
                    tracing::info!(applied, "migrations applied");
                }
                return Some(db);
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in_secs = delay.as_secs(), "database not ready at start; retrying")
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = &mut signal => return None,
        }
        delay = (delay * 2).min(Duration::from_secs(60));
    }
}

async fn scheduled(settings: Settings) -> ExitCode {
    let Some(db) = wait_for_database(&settings).await else {
        return ExitCode::SUCCESS;
    };
    let worker = Arc::new(Worker {
        db,
        settings,
        stop: Arc::new(AtomicBool::new(false)),
        running: Mutex::new(()),
    });
    let job_worker = worker.clone();
    let job = Job::new_async(worker.settings.cleanup_schedule.as_str(), move |_, _| {
        let worker = job_worker.clone();
        Box::pin(async move {
            let Ok(_running) = worker.running.try_lock() else {
                tracing::info!("previous cleanup still running; skipping this tick");
                return;
            };
            if worker.stop.load(Ordering::SeqCst) {
                return;
            }
            let outcome = cleanup::run(&worker.db, &worker.settings, worker.stop.clone()).await;
            cleanup::log_outcome(&outcome);
        })
    });
    let job = match job {
        Ok(job) => job,
        Err(e) => {
            eprintln!(
                "latchkey-worker: invalid configuration: `cleanup_schedule` is not a valid cron expression ({e:?})"
            );
            return ExitCode::from(2);
        }
    };
    let mut scheduler = match JobScheduler::new().await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("latchkey-worker: scheduler failed to start: {e:?}");
            return ExitCode::from(1);
        }
    };
    if let Err(e) = scheduler.add(job).await {
        eprintln!("latchkey-worker: invalid configuration: `cleanup_schedule` was refused ({e:?})");
        return ExitCode::from(2);
    }
    if let Err(e) = scheduler.start().await {
        eprintln!("latchkey-worker: scheduler failed to start: {e:?}");
        return ExitCode::from(1);
    }
    tracing::info!(schedule = %worker.settings.cleanup_schedule, "worker started");
    shutdown_signal().await;
    worker.stop.store(true, Ordering::SeqCst);
    let _ = scheduler.shutdown().await;
    // Waits for a cleanup in flight to finish its current batch.
    let _idle = worker.running.lock().await;
    tracing::info!("worker stopped");
    ExitCode::SUCCESS
}
