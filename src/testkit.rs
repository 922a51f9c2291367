//! Test kit (feature `testkit`): SecantusDB test servers as child processes on free ports, and a
//! proxy that injects network faults.
//!
//! In: nothing but the project's venv (`scripts/setup-test-env.sh` installs `secantusdb` into
//! `.venv/`). Out: a [`TestServer`] with a `mongodb://` URI; dropping it kills the server, and the
//! server is also killed by the kernel if the process that started it dies (so a failed or killed
//! test never leaves one behind). Used by the integration tests and the benchmark, never by the
//! shipped binary.

use std::io::{self, Read};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a server may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(60);

pub struct TestServer {
    child: Child,
    pub port: u16,
    pub uri: String,
    log: tempfile::NamedTempFile,
    _storage: tempfile::TempDir,
}

/// The SecantusDB launcher: `$MONGOFERRY_SECANTUSD`, else the project's venv.
pub fn secantusd_path() -> PathBuf {
    std::env::var_os("MONGOFERRY_SECANTUSD")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/secantusd-py"))
}

impl TestServer {
    /// Starts a server.
    pub fn start() -> io::Result<Self> {
        Self::start_with(&[])
    }

    /// Starts a server with extra flags (e.g. `--enable-test-commands`, `--auth`).
    pub fn start_with(extra: &[&str]) -> io::Result<Self> {
        Ok(Self::start_many(1, extra)?.remove(0))
    }

    /// Starts `n` servers at once (each takes a moment to boot). They are started from the
    /// calling thread on purpose: a server dies with the thread that started it.
    pub fn start_many(n: usize, extra: &[&str]) -> io::Result<Vec<Self>> {
        let mut servers = (0..n)
            .map(|_| Self::spawn(extra))
            .collect::<io::Result<Vec<_>>>()?;
        for server in &mut servers {
            // A free port can be taken by someone else before the server binds it: retry.
            let mut attempts = 1;
            while let Err(e) = server.wait_listening() {
                if attempts == 3 {
                    return Err(e);
                }
                attempts += 1;
                *server = Self::spawn(extra)?;
            }
        }
        Ok(servers)
    }

    fn spawn(extra: &[&str]) -> io::Result<Self> {
        let exe = secantusd_path();
        if !exe.exists() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "{} not found: run `bash scripts/setup-test-env.sh` (or set MONGOFERRY_SECANTUSD)",
                    exe.display()
                ),
            ));
        }
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let storage = tempfile::tempdir()?;
        let log = tempfile::NamedTempFile::new()?;
        let mut command = Command::new(&exe);
        command
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .arg("--storage-path")
            .arg(storage.path())
            .args(["--log-level", "WARNING"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(log.reopen()?)
            .stderr(log.reopen()?);
        kill_with_parent(&mut command);
        let child = command.spawn()?;
        Ok(TestServer {
            child,
            port,
            uri: format!("mongodb://127.0.0.1:{port}/?directConnection=true"),
            log,
            _storage: storage,
        })
    }

    fn wait_listening(&mut self) -> io::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                return Err(io::Error::other(format!(
                    "test server exited with {status}: {}",
                    self.log_text()
                )));
            }
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "test server did not listen within {START_TIMEOUT:?}: {}",
                self.log_text()
            ),
        ))
    }

    /// What the server printed so far (for failure messages).
    pub fn log_text(&self) -> String {
        let mut text = String::new();
        if let Ok(mut f) = self.log.reopen() {
            let _ = f.read_to_string(&mut text);
        }
        text
    }

    /// The process id, e.g. to stop or pause the server from a test.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Makes the kernel kill the child started by `command` when the thread that started it ends
/// (on Linux), so that no test leaves a process behind even when it is killed itself.
#[cfg(target_os = "linux")]
pub fn kill_with_parent(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe and touches only the child being started.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
pub fn kill_with_parent(_command: &mut Command) {}

/// A TCP proxy in front of a server that injects faults: it can delay what clients send (delayed
/// chunks pass one at a time, so the server's latency rises as under load), cut every open
/// connection, and stall all traffic for a while, as a flaky network does.
pub struct FaultProxy {
    pub port: u16,
    delay_micros: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// Bumped to cut every open connection.
    cuts: tokio::sync::watch::Sender<u64>,
    /// No byte passes before this instant.
    stalled_until: std::sync::Arc<std::sync::Mutex<Option<tokio::time::Instant>>>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    pub async fn start(target_port: u16) -> io::Result<Self> {
        use std::sync::atomic::{AtomicU64, Ordering};
        use std::sync::{Arc, Mutex};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let delay_micros = Arc::new(AtomicU64::new(0));
        let one_at_a_time = Arc::new(tokio::sync::Mutex::new(()));
        let stalled_until: Arc<Mutex<Option<tokio::time::Instant>>> = Arc::default();
        let (cuts, _) = tokio::sync::watch::channel(0u64);
        let delay = delay_micros.clone();
        let (stall, cut) = (stalled_until.clone(), cuts.clone());
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", target_port)).await
                else {
                    continue;
                };
                let (delay, gate, stall) = (delay.clone(), one_at_a_time.clone(), stall.clone());
                let mut cut = cut.subscribe();
                connections.spawn(async move {
                    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
                    let wait_stall = |stall: Arc<Mutex<Option<tokio::time::Instant>>>| async move {
                        let until = *stall.lock().unwrap();
                        if let Some(until) = until {
                            tokio::time::sleep_until(until).await;
                        }
                    };
                    async fn pump(
                        mut from: impl AsyncRead + Unpin,
                        mut to: impl AsyncWrite + Unpin,
                        before_write: impl Fn() -> std::pin::Pin<
                            Box<dyn std::future::Future<Output = ()> + Send>,
                        >,
                    ) -> io::Result<()> {
                        let mut buf = vec![0u8; 64 * 1024];
                        loop {
                            let n = from.read(&mut buf).await?;
                            if n == 0 {
                                return to.shutdown().await;
                            }
                            before_write().await;
                            to.write_all(&buf[..n]).await?;
                        }
                    }
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    let up_stall = stall.clone();
                    let upstream = pump(client_read, server_write, move || {
                        let (delay, gate, stall) = (delay.clone(), gate.clone(), up_stall.clone());
                        Box::pin(async move {
                            wait_stall(stall).await;
                            let micros = delay.load(Ordering::Relaxed);
                            if micros > 0 {
                                let _turn = gate.lock().await;
                                tokio::time::sleep(Duration::from_micros(micros)).await;
                            }
                        })
                    });
                    let downstream = pump(server_read, client_write, move || {
                        Box::pin(wait_stall(stall.clone()))
                    });
                    // A cut drops both sockets: the client sees its connection reset.
                    tokio::select! {
                        _ = async { tokio::try_join!(upstream, downstream) } => {}
                        _ = cut.changed() => {}
                    }
                });
                while connections.try_join_next().is_some() {}
            }
        });
        Ok(FaultProxy {
            port,
            delay_micros,
            cuts,
            stalled_until,
            task,
        })
    }

    /// Closes every connection open through the proxy now.
    pub fn cut(&self) {
        self.cuts.send_modify(|n| *n += 1);
    }

    /// Holds all traffic (both ways, all connections) for `length`.
    pub fn stall(&self, length: Duration) {
        *self.stalled_until.lock().unwrap() = Some(tokio::time::Instant::now() + length);
    }

    pub fn set_delay(&self, delay: Duration) {
        self.delay_micros.store(
            delay.as_micros() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    pub fn uri(&self) -> String {
        format!("mongodb://127.0.0.1:{}/?directConnection=true", self.port)
    }

    /// Stops listening and cuts every connection.
    pub async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}
