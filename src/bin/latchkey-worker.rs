//! `latchkey-worker`: removes expired sessions on a schedule (or once), applies migrations,
//! and promotes or demotes admins; the same as `latchkey cleanup`, `latchkey migrate` and
//! `latchkey admin`, kept for the deployments that run it.

fn main() -> std::process::ExitCode {
    latchkey::cli::worker_main()
}
