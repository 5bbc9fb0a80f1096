//! `latchkey`'s command line: the server (the default) and the operator commands it shares
//! with `latchkey-worker`. Only this binary reaches the server, the API and the page.

use std::net::TcpListener;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use rocket::figment::Figment;

use super::{operate, prepare, runtime, AdminAction, Started, Task};
use crate::config::Settings;
use crate::{server, BootError, Latchkey};

/// Database-backed sessions and authentication: the server, and its operator commands.
///
/// Configuration comes from Rocket.toml (searched for in the working directory and its
/// parents, or the file ROCKET_CONFIG names; profile from ROCKET_PROFILE), ROCKET_* variables,
/// DATABASE_URL and CRON_SECRET. Every command reads the same configuration.
#[derive(Parser)]
#[command(name = "latchkey", version)]
struct ServerCli {
    #[command(subcommand)]
    command: Option<ServerCommand>,
}

#[derive(Subcommand)]
enum ServerCommand {
    /// Apply pending migrations, then serve the API and the page (the default).
    Serve,
    /// Apply pending migrations and exit.
    Migrate,
    /// Remove expired sessions on `cleanup_schedule` until SIGTERM or SIGINT (what
    /// `latchkey-worker` runs), or once with --once.
    Cleanup {
        /// Run one cleanup now and exit (for cron, systemd timers, Kubernetes CronJobs).
        #[arg(long)]
        once: bool,
    },
    /// Grant or remove the admin role.
    Admin {
        #[command(subcommand)]
        action: AdminAction,
    },
}

/// `latchkey`'s `main`.
pub fn server_main() -> ExitCode {
    let prog = "latchkey";
    let task = match ServerCli::parse().command {
        None | Some(ServerCommand::Serve) => None,
        Some(ServerCommand::Migrate) => Some(Task::Migrate),
        Some(ServerCommand::Cleanup { once }) => Some(Task::Cleanup { once }),
        Some(ServerCommand::Admin { action }) => Some(Task::Admin(action)),
    };
    let started = match prepare(prog) {
        Ok(started) => started,
        Err(code) => return code,
    };
    match task {
        Some(task) => operate(prog, task, started.settings),
        None => {
            let Started {
                figment,
                settings,
                rocket_config,
                _logs,
            } = started;
            let (workers, max_blocking) = (rocket_config.workers, rocket_config.max_blocking);
            runtime(workers, max_blocking).block_on(serve(prog, figment, settings, rocket_config))
        }
    }
}

/// The server: the port checked first (so a second instance on a taken port fails before it
/// touches the database), then the fairing connects and migrates, then Rocket serves.
async fn serve(
    prog: &str,
    figment: Figment,
    settings: Settings,
    rocket_config: rocket::Config,
) -> ExitCode {
    let address = format!("{}:{}", rocket_config.address, rocket_config.port);
    if rocket_config.port != 0 {
        if let Err(e) = TcpListener::bind((rocket_config.address, rocket_config.port)) {
            eprintln!("{prog}: cannot listen on {address}: {e} (set ROCKET_ADDRESS / ROCKET_PORT)");
            return ExitCode::from(1);
        }
    }
    let latchkey = Latchkey::with_settings(settings);
    let boot = latchkey.boot_watch();
    let rocket = match server::rocket(figment, latchkey).ignite().await {
        Ok(rocket) => rocket,
        Err(e) => {
            // The fairing has printed its one line; Rocket's own error is printed otherwise.
            let _ = e.kind();
            return match boot.failure() {
                Some(BootError::Config(_)) => ExitCode::from(2),
                Some(BootError::Database(_)) => ExitCode::from(1),
                None => {
                    eprintln!("{prog}: {e}");
                    ExitCode::from(1)
                }
            };
        }
    };
    // The first login with an unknown email would otherwise pay for the dummy hash.
    rocket::tokio::task::spawn_blocking(crate::auth::password::warm_up);
    match rocket.launch().await {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => match e.kind() {
            rocket::error::ErrorKind::Bind(io) => {
                eprintln!("{prog}: cannot listen on {address}: {io}");
                ExitCode::from(1)
            }
            // Asked to stop, and stopped: Rocket reports that some connection or task still
            // held on after the grace periods. Requests in flight had their time; say so and
            // exit as a stop does.
            rocket::error::ErrorKind::Shutdown(_, error) => {
                let why = error
                    .as_ref()
                    .map_or_else(String::new, |e| format!(": {e}"));
                tracing::warn!("shutdown finished with I/O still open{why}");
                ExitCode::SUCCESS
            }
            _ => {
                eprintln!("{prog}: {e}");
                ExitCode::from(1)
            }
        },
    }
}
