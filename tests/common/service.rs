//! `mongoferry serve` for the integration tests, on a free loopback port with the options a test
//! gives: in-process by default (the same flag parsing and [`mongoferry::service::serve`] as the
//! binary, on a runtime of its own), or as a child process with [`Serve::spawn`] for what only a
//! process shows: its signals, its environment and its log. Stopped when dropped.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

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

    /// The command line of `serve`, after the binary's name.
    fn argv(&self) -> Vec<String> {
        let mut argv: Vec<String> = [
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--shutdown-timeout",
            "20",
        ]
        .map(String::from)
        .to_vec();
        match &self.state {
            Some(state) => argv.extend(["--state".into(), state.display().to_string()]),
            None => argv.push("--no-state".into()),
        }
        argv.extend(self.args.iter().cloned());
        argv
    }

    /// In this process, on a runtime and thread of its own.
    pub fn start(self) -> Service {
        assert!(
            self.env.is_empty(),
            "a service with its own environment must be spawned (Serve::spawn)"
        );
        let argv = std::iter::once("mongoferry".to_string()).chain(self.argv());
        let cli = mongoferry::cli::Cli::try_parse_from(argv).expect("serve's arguments");
        let mongoferry::cli::Command::Serve(args) = cli.command else {
            unreachable!("a serve command line")
        };
        let stop = CancellationToken::new();
        let (started, starting) = mpsc::channel();
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            let served = runtime.block_on(async move {
                match mongoferry::cli::prepare_serve(args).await {
                    Err(failure) => {
                        let _ = started.send(Err(failure.message().to_string()));
                        false
                    }
                    Ok(prepared) => {
                        let _ = started.send(Ok(prepared.url().to_string()));
                        prepared.run(stopping).await.is_ok()
                    }
                }
            });
            runtime.shutdown_timeout(Duration::from_secs(5));
            served
        });
        let base = match starting.recv_timeout(Duration::from_secs(30)) {
            Ok(Ok(base)) => base,
            Ok(Err(message)) => panic!("the service did not start: {message}"),
            Err(_) => panic!("the service did not start within 30 s"),
        };
        Service::new(
            Backend::InProcess {
                stop,
                thread: Some(thread),
            },
            base,
            Arc::default(),
            &self,
        )
    }

    /// As a child process of the binary, its log kept.
    pub fn spawn(self) -> Service {
        let mut command = Command::new(env!("CARGO_BIN_EXE_mongoferry"));
        command
            .args(self.argv())
            .env("MONGOFERRY_LOG", "info")
            .env_remove("MONGOFERRY_API_TOKEN")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
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
        Service::new(Backend::Process(child), base, log, &self)
    }
}

/// How a service runs.
enum Backend {
    InProcess {
        stop: CancellationToken,
        /// Returns whether the service stopped cleanly.
        thread: Option<std::thread::JoinHandle<bool>>,
    },
    Process(Child),
}

/// A running `mongoferry serve`.
pub struct Service {
    backend: Backend,
    pub base: String,
    pub http: reqwest::Client,
    /// Every line a spawned service logged so far.
    log: Arc<Mutex<Vec<String>>>,
    token: Option<String>,
}

impl Service {
    /// A service (in-process) without authentication keeping its history in `state`.
    pub fn start(state: &Path) -> Service {
        Serve::with_state(state).start()
    }

    /// The same as a child process.
    pub fn spawn(state: &Path) -> Service {
        Serve::with_state(state).spawn()
    }

    fn new(backend: Backend, base: String, log: Arc<Mutex<Vec<String>>>, serve: &Serve) -> Self {
        let mut http = reqwest::Client::builder().timeout(Duration::from_secs(30));
        if let Some(pem) = &serve.trust {
            http = http
                .tls_built_in_root_certs(false)
                .add_root_certificate(reqwest::Certificate::from_pem(pem).unwrap());
        }
        Service {
            backend,
            base,
            http: http.build().unwrap(),
            log,
            token: serve.token.clone(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The port the service listens on.
    pub fn port(&self) -> u16 {
        self.base.rsplit(':').next().unwrap().parse().unwrap()
    }

    /// What a spawned service logged so far.
    pub fn log(&self) -> String {
        assert!(
            matches!(self.backend, Backend::Process(_)),
            "only a spawned service's log is kept (Serve::spawn)"
        );
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

    /// Stops the service as SIGTERM does (a spawned one gets the signal), within a bound;
    /// whether it stopped cleanly (exit status 0).
    pub fn stop(mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(40);
        match &mut self.backend {
            Backend::Process(child) => {
                // SAFETY: signalling our own child.
                unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
                loop {
                    if let Some(status) = child.try_wait().unwrap() {
                        return status.success();
                    }
                    assert!(Instant::now() < deadline, "service did not stop on SIGTERM");
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            Backend::InProcess { stop, thread } => {
                stop.cancel();
                let thread = thread.take().expect("stopped once");
                while !thread.is_finished() {
                    assert!(Instant::now() < deadline, "service did not stop");
                    std::thread::sleep(Duration::from_millis(20));
                }
                thread.join().unwrap_or(false)
            }
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        match &mut self.backend {
            Backend::Process(child) => {
                let _ = child.kill();
                let _ = child.wait();
            }
            Backend::InProcess { stop, thread } => {
                stop.cancel();
                if let Some(thread) = thread.take() {
                    let _ = thread.join();
                }
            }
        }
    }
}

/// The status and the body of an answer (JSON, or the text as a JSON string).
pub async fn answer(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, value)
}
