//! The command line of both binaries: `latchkey` (serve by default, in `serve`; `migrate`,
//! `cleanup`, `admin`) and `latchkey-worker` (the cleanup schedule by default, as it always
//! was; the same `--once`, `migrate` and `admin`). Each starts the same way: the configuration
//! (its errors one line and exit 2, unknown keys a warning), the log stream, then the command.
//! The worker's way through here never reaches the server, the API, the page or the providers:
//! those are only in `serve`.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::Timelike;
use clap::{Parser, Subcommand};
use rocket::figment::Figment;
use tokio::sync::Mutex;
use tokio_cron_scheduler::{JobBuilder, JobScheduler};

use crate::cleanup::{self, CleanupOutcome};
use crate::clock;
use crate::config::{self, LogFormat, Settings};
use crate::db::models::{Role, User};
use crate::db::{self, Db, DbConnection};

mod serve;

pub use serve::server_main;

/// Cleans up expired latchkey sessions and manages admins (the same as `latchkey cleanup`,
/// `latchkey migrate` and `latchkey admin`).
///
/// Configuration comes from Rocket.toml (profile from ROCKET_PROFILE), ROCKET_* variables,
/// DATABASE_URL and CRON_SECRET, exactly as for the server. Without arguments it applies
/// pending migrations and runs the cleanup on `cleanup_schedule` (6-field cron with seconds,
/// default hourly) until SIGTERM or SIGINT, finishing the batch in hand before exiting 0.
#[derive(Parser)]
#[command(name = "latchkey-worker", version)]
struct WorkerCli {
    /// Run one cleanup now and exit (for cron, systemd timers, Kubernetes CronJobs).
    #[arg(long)]
    once: bool,

    #[command(subcommand)]
    command: Option<WorkerCommand>,
}

#[derive(Subcommand)]
enum WorkerCommand {
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

/// An operator command, whichever binary was asked.
enum Task {
    Migrate,
    Cleanup { once: bool },
    Admin(AdminAction),
}

/// `latchkey-worker`'s `main`.
pub fn worker_main() -> ExitCode {
    let cli = WorkerCli::parse();
    let task = match cli.command {
        Some(WorkerCommand::Migrate) => Task::Migrate,
        Some(WorkerCommand::Admin { action }) => Task::Admin(action),
        None => Task::Cleanup { once: cli.once },
    };
    let prog = "latchkey-worker";
    match prepare(prog) {
        Ok(started) => operate(prog, task, started.settings),
        Err(code) => code,
    }
}

/// What both binaries start from.
struct Started {
    figment: Figment,
    settings: Settings,
    rocket_config: rocket::Config,
    /// Flushes the log stream when the command is done.
    _logs: Option<tracing_appender::non_blocking::WorkerGuard>,
}

/// How each binary starts: OpenSSL, the configuration (its errors one line and exit 2,
/// unknown keys a warning), the log stream.
fn prepare(prog: &str) -> Result<Started, ExitCode> {
    // Before libpq or lettre touch OpenSSL: initialise it without its exit-time clean-up, so a
    // pool thread still in a TLS handshake when the process exits cannot meet freed state.
    openssl_sys::init();
    let figment = config::figment();
    let logs = crate::init_tracing(LogFormat::from_figment(&figment));
    let rocket_config = match config::check_rocket_keys(&figment) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("{prog}: {e}");
            return Err(ExitCode::from(2));
        }
    };
    for warning in config::unknown_keys(&figment) {
        tracing::warn!("{warning}");
    }
    let (figment, rocket_log) = config::keep_rocket_log_quiet(figment, &rocket_config);
    if let Some(warning) = rocket_log {
        tracing::warn!("{warning}");
    }
    let settings = match Settings::from_figment(&figment) {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("{prog}: {e}");
            return Err(ExitCode::from(2));
        }
    };
    let file = config::config_file(&figment).map(|path| {
        std::path::absolute(&path)
            .unwrap_or(path)
            .display()
            .to_string()
    });
    tracing::info!(
        file = file.as_deref().unwrap_or("none found (defaults and environment only)"),
        profile = %figment.profile(),
        database = %settings.database.describe(),
        "configuration"
    );
    Ok(Started {
        figment,
        settings,
        rocket_config,
        _logs: logs,
    })
}

/// Runs an operator command: one connection for `migrate`, `admin` and `cleanup --once`, the
/// schedule for `cleanup`.
fn operate(prog: &str, task: Task, settings: Settings) -> ExitCode {
    match task {
        Task::Migrate => one_shot(prog, &settings, |_| {
            println!("the database is up to date");
            ExitCode::SUCCESS
        }),
        Task::Admin(action) => one_shot(prog, &settings, |conn| set_role(prog, conn, action)),
        Task::Cleanup { once: true } => {
            one_shot(prog, &settings, |conn| run_once(prog, conn, &settings))
        }
        Task::Cleanup { once: false } => runtime(2, 16).block_on(scheduled(prog, settings)),
    }
}

/// The runtime Rocket's own `main` would build: `workers` async threads, `max_blocking`
/// blocking ones (where every database call runs).
fn runtime(workers: usize, max_blocking: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers.max(1))
        .max_blocking_threads(max_blocking.max(1))
        .thread_name("rocket-worker-thread")
        .enable_all()
        .build()
        .expect("a Tokio runtime can start")
}

/// Connects and migrates (failing fast, with the reason), then runs `work` on that one
/// connection. No pool: a pool's background threads opening TLS connections while the
/// process exits can crash libpq/OpenSSL's exit handlers.
fn one_shot(
    prog: &str,
    settings: &Settings,
    work: impl FnOnce(&mut DbConnection) -> ExitCode,
) -> ExitCode {
    let mut conn = match db::connect_at_boot(&settings.database) {
        Ok(conn) => conn,
        Err(e) => {
            eprintln!("{prog}: database (`database_url`): {e}");
            return ExitCode::from(1);
        }
    };
    match db::run_migrations(&mut conn) {
        Ok(applied) if applied > 0 => tracing::info!(applied, "migrations applied"),
        Ok(_) => {}
        Err(e) => {
            eprintln!("{prog}: {e}");
            return ExitCode::from(1);
        }
    }
    work(&mut conn)
}

fn run_once(prog: &str, conn: &mut DbConnection, settings: &Settings) -> ExitCode {
    let outcome = cleanup::run_on(conn, settings, &AtomicBool::new(false), None);
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
            eprintln!("{prog}: cleanup failed: {e}");
            ExitCode::from(1)
        }
    }
}

fn set_role(prog: &str, conn: &mut DbConnection, action: AdminAction) -> ExitCode {
    let (email, role) = match action {
        AdminAction::Promote { email } => (email, Role::Admin),
        AdminAction::Demote { email } => (email, Role::User),
    };
    let email = crate::validation::normalize_email(&email);
    match User::set_role(conn, &email, role, clock::system_now()).map_err(db::DbError::from) {
        Ok(1) => {
            println!("{email} is now {}", role.as_str());
            ExitCode::SUCCESS
        }
        Ok(_) => {
            eprintln!("{prog}: no account with email {email}");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("{prog}: {e}");
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

async fn scheduled(prog: &str, settings: Settings) -> ExitCode {
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
    // The schedule as the configuration parsed it (once, with the scheduler's own parser).
    let mut job = JobBuilder::new().with_cron_job_type();
    job.schedule = Some(worker.settings.cleanup_schedule.clone());
    let job = job.with_run_async(Box::new(move |_, _| {
        let worker = job_worker.clone();
        Box::pin(async move {
            let Ok(_running) = worker.running.try_lock() else {
                tracing::info!("previous cleanup still running; skipping this tick");
                return;
            };
            if worker.stop.load(Ordering::SeqCst) {
                return;
            }
            // The tick this job fires for (cron's resolution is a second).
            let tick = worker.db.now().with_nanosecond(0);
            let outcome =
                cleanup::run(&worker.db, &worker.settings, worker.stop.clone(), tick).await;
            cleanup::log_outcome(&outcome);
        })
    }));
    let job = match job.build() {
        Ok(job) => job,
        Err(e) => {
            eprintln!("{prog}: the cleanup job could not be made: {e:?}");
            return ExitCode::from(1);
        }
    };
    let mut scheduler = match JobScheduler::new().await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{prog}: scheduler failed to start: {e:?}");
            return ExitCode::from(1);
        }
    };
    if let Err(e) = scheduler.add(job).await {
        eprintln!("{prog}: invalid configuration: `cleanup_schedule` was refused ({e:?})");
        return ExitCode::from(2);
    }
    if let Err(e) = scheduler.start().await {
        eprintln!("{prog}: scheduler failed to start: {e:?}");
        return ExitCode::from(1);
    }
    let schedule = worker.settings.cleanup_schedule.pattern.to_string();
    tracing::info!(schedule, "worker started");
    shutdown_signal().await;
    worker.stop.store(true, Ordering::SeqCst);
    let _ = scheduler.shutdown().await;
    // Waits for a cleanup in flight to finish its current batch.
    let _idle = worker.running.lock().await;
    tracing::info!("worker stopped");
    ExitCode::SUCCESS
}
