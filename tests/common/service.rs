//! `mongoferry serve` as a child process for the integration tests: started on a free loopback
//! port with the options a test gives, its log kept, stopped (SIGTERM, then kill) when dropped.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// How to start a service.
#[derive(Default)]
pub struct Serve {
    /// The history file; none: `--no-state`.
    pub state: Option<PathBuf>,
    /// More arguments of `serve`.
    pub args: Vec<String>,
    /// More environment variables.
    pub env: Vec<(String, String)>,
    /// The bearer token the test client sends (the service gets it through `args` or `env`).
    pub token: Option<String>,
    /// A PEM certificate the client trusts (for a service started with `--tls-cert`).
    pub trust: Option<Vec<u8>>,
}

impl Serve {
    pub fn with_state(state: &Path) -> Serve {
        Serve {
            state: Some(state.to_path_buf()),
            ..Serve::default()
        }
    }

    pub fn arg(mut self, arg: impl Into<String>) -> Serve {
        self.args.push(arg.into());
        self
    }

    pub fn start(self) -> Service {
        Service::start_with(self)
    }
}

/// A running `mongoferry serve`.
pub struct Service {
    child: Child,
    pub base: String,
    pub http: reqwest::Client,
    /// Every line the service logged so far.
    log: Arc<Mutex<Vec<String>>>,
    token: Option<String>,
}

impl Service {
    /// A service without authentication keeping its history in `state`.
    pub fn start(state: &Path) -> Service {
        Serve::with_state(state).start()
    }

    pub fn start_with(serve: Serve) -> Service {
        let mut command = Command::new(env!("CARGO_BIN_EXE_mongoferry"));
        command.args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--shutdown-timeout",
            "20",
        ]);
        match &serve.state {
            Some(state) => command.arg("--state").arg(state),
            None => command.arg("--no-state"),
        };
        command
            .args(&serve.args)
            .env("MONGOFERRY_LOG", "info")
            .env_remove("MONGOFERRY_API_TOKEN")
            .envs(serve.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        mongoferry::testkit::kill_with_parent(&mut command);
        let mut child = command.spawn().expect("start mongoferry serve");
        let (tx, rx) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let kept = log.clone();
        // Keeps draining the log so the service never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                kept.lock().unwrap().push(line.clone());
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let base = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(address) = line.split("serving on ").nth(1) {
                        break address.trim().to_string();
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    panic!(
                        "the service did not start within 30 s: {}",
                        log.lock().unwrap().join("\n")
                    );
                }
            }
        };
        let mut http = reqwest::Client::builder().timeout(Duration::from_secs(30));
        if let Some(pem) = &serve.trust {
            http = http
                .tls_built_in_root_certs(false)
                .add_root_certificate(reqwest::Certificate::from_pem(pem).unwrap());
        }
        Service {
            child,
            base,
            http: http.build().unwrap(),
            log,
            token: serve.token,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The port the service listens on.
    pub fn port(&self) -> u16 {
        self.base.rsplit(':').next().unwrap().parse().unwrap()
    }

    /// What the service logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// A request with the service's token, if it has one.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let request = self.http.request(method, self.url(path));
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = self.request(method, path);
        if let Some(body) = body {
            request = request.json(&body);
        }
        answer(request.send().await.expect("request")).await
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.send(reqwest::Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.send(reqwest::Method::POST, path, Some(body)).await
    }

    pub async fn patch(&self, path: &str, body: Value) -> (u16, Value) {
        self.send(reqwest::Method::PATCH, path, Some(body)).await
    }

    pub async fn job(&self, id: &Value) -> Value {
        let (status, job) = self.get(&format!("/api/jobs/{id}")).await;
        assert_eq!(status, 200, "{job}");
        job
    }

    /// Every job the service knows.
    pub async fn jobs(&self) -> Vec<Value> {
        let (status, list) = self.get("/api/jobs").await;
        assert_eq!(status, 200, "{list}");
        list["jobs"].as_array().unwrap().clone()
    }

    /// Polls a job until `check` holds.
    pub async fn wait_for(&self, id: &Value, what: &str, check: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let job = self.job(id).await;
            if check(&job) {
                return job;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {job}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM, then the exit status (within a bound).
    pub fn stop(mut self) -> std::process::ExitStatus {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "service did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The status and the body of an answer (JSON, or the text as a JSON string).
pub async fn answer(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, value)
}
