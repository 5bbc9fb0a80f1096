//! Real processes over real HTTP: start a binary on a free port with a fresh working
//! directory, wait for its health route, send requests with `ureq`.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

pub const SERVER: &str = env!("CARGO_BIN_EXE_latchkey");

/// Whether `binary` can be run. Outside CI a missing one skips the caller's test with a notice
/// in the normal test output; in CI (`CI` set) it fails, since `.ci/run` installs `package`.
pub fn installed(binary: &str, package: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {binary}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var("CI").is_err(),
            "{binary} is required in CI (.ci/run installs {package})"
        );
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stderr(),
            "*** SKIPPING a test: `{binary}` is not installed (apt-get install {package}) ***"
        );
    }
    found
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct Server {
    child: Child,
    pub base: String,
    dir: PathBuf,
}

impl Server {
    /// The server binary this build made, or the one `LATCHKEY_TEST_SERVER` names (to run the
    /// same tests against another build, say the last release, and see what it got wrong).
    pub fn start(database_url: &str, extra_env: &[(&str, &str)]) -> Server {
        let binary = std::env::var("LATCHKEY_TEST_SERVER").unwrap_or_else(|_| SERVER.into());
        Server::start_binary(Path::new(&binary), database_url, extra_env)
    }

    /// Any binary that serves latchkey's API (the server, or an example application).
    pub fn start_binary(binary: &Path, database_url: &str, extra_env: &[(&str, &str)]) -> Server {
        Server::start_binary_on(binary, free_port(), database_url, extra_env)
    }

    /// The server on a port chosen beforehand (its `public_url` must name it).
    pub fn start_on(port: u16, database_url: &str, extra_env: &[(&str, &str)]) -> Server {
        let binary = std::env::var("LATCHKEY_TEST_SERVER").unwrap_or_else(|_| SERVER.into());
        Server::start_binary_on(Path::new(&binary), port, database_url, extra_env)
    }

    fn start_binary_on(
        binary: &Path,
        port: u16,
        database_url: &str,
        extra_env: &[(&str, &str)],
    ) -> Server {
        let dir =
            std::env::temp_dir().join(format!("latchkey-rel-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut cmd = Command::new(binary);
        cmd.current_dir(&dir)
            .env("DATABASE_URL", database_url)
            .env("ROCKET_PORT", port.to_string())
            .env("RUST_LOG", "error")
            .env("ROCKET_ADDRESS", "127.0.0.1")
            .env_remove("CRON_SECRET")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.join("stdout.log")).unwrap())
            .stderr(std::fs::File::create(dir.join("stderr.log")).unwrap());
        for (key, value) in extra_env {
            cmd.env(key, value);
        }
        let mut child = cmd.spawn().unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while ureq::get(&format!("{base}/api/health")).call().is_err() {
            if child.try_wait().unwrap().is_some() {
                let log = std::fs::read_to_string(dir.join("stderr.log")).unwrap_or_default();
                panic!("server exited at boot: {log}");
            }
            assert!(Instant::now() < deadline, "server did not come up");
            thread::sleep(Duration::from_millis(50));
        }
        Server { child, base, dir }
    }

    /// What the process has written so far: (stdout, stderr).
    pub fn output(&self) -> (String, String) {
        let read = |name: &str| std::fs::read_to_string(self.dir.join(name)).unwrap_or_default();
        (read("stdout.log"), read("stderr.log"))
    }

    /// Its working directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn signal(&self, signal: &str) {
        Command::new("kill")
            .arg(signal)
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
    }

    pub fn wait(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A whole answer: status, headers and body text. Transport errors are status 0.
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }

    pub fn code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn set_cookies(&self) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("set-cookie"))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The `session=…` pair this answer set (the debug profile's cookie name), for a `Cookie`
    /// header.
    pub fn session_pair(&self) -> String {
        self.set_cookies()
            .into_iter()
            .find(|c| c.starts_with("session=") && !c.starts_with("session=;"))
            .unwrap_or_else(|| panic!("no session cookie: {} {}", self.status, self.body))
            .split(';')
            .next()
            .unwrap()
            .to_string()
    }
}

pub fn fetch(req: ureq::Request, body: Option<Value>) -> Answer {
    let result = match body {
        Some(body) => req.send_json(body),
        None => req.call(),
    };
    let response = match result {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(_) => {
            return Answer {
                status: 0,
                headers: Vec::new(),
                body: String::new(),
            }
        }
    };
    let status = response.status();
    let mut headers = Vec::new();
    for name in response.headers_names() {
        for value in response.all(&name) {
            headers.push((name.clone(), value.to_string()));
        }
    }
    let body = response.into_string().unwrap_or_default();
    Answer {
        status,
        headers,
        body,
    }
}

/// (status, JSON body, first Set-Cookie value) of a request; transport errors are status 0.
pub fn send(req: ureq::Request, body: Option<Value>) -> (u16, Value, Option<String>) {
    let answer = fetch(req, body);
    let cookie = answer.set_cookies().first().map(|c| c.to_string());
    (answer.status, answer.json(), cookie)
}

pub fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(15))
        .build()
}
