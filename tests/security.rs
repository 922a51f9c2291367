//! Who may use `mongoferry serve`, tried as an attacker would: cross-site requests, DNS
//! rebinding, missing or wrong tokens, an exposed address without a token, TLS, the cluster
//! allow-list, and clients that send too much or too slowly. Every refusal is checked for its
//! status and for what it did not do: no job created, no job stopped, nothing copied.

mod common;

use std::time::{Duration, Instant};

use common::service::{answer, Serve, Service};
use common::*;
use reqwest::Method;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TOKEN: &str = "s3cret-Token-0123456789abcdef";

/// A spec copying `db.c` of the source to the destination, limited to a few documents a second,
/// so that it is still running while the test tries to interfere.
async fn slow_spec(env: &TestEnv, name: &str) -> (Value, String) {
    let (s, d) = (env.src_db(name), env.dst_db(name));
    insert_raw(&env.src_client().await, &s, "c", &sample_docs(2_000, 64)).await;
    let spec = json!({
        "from": env.src, "to": env.dst, "namespaces": [format!("{s}.c:{d}.c")],
        "rate": 20, "batch_size": 10, "workers": 1,
    });
    (spec, d)
}

/// Documents at the destination.
async fn copied(env: &TestEnv, db: &str) -> u64 {
    env.dst_client()
        .await
        .database(db)
        .collection::<mongodb::bson::Document>("c")
        .count_documents(mongodb::bson::doc! {})
        .await
        .unwrap()
}

#[test]
fn cross_site_requests_are_refused_and_start_or_stop_nothing() {
    let service = Serve::default().start();
    TestEnv::start().run(|env| async move {
        let (spec, d) = slow_spec(&env, "xsite").await;
        let body = spec.to_string();
        let own_origin = service.base.clone();

        // What a form or a `fetch(..., {mode: "no-cors"})` on any page can send without a
        // preflight: a "simple" content type, or none.
        for content_type in [
            Some("text/plain"),
            Some("application/x-www-form-urlencoded"),
            Some("multipart/form-data; boundary=x"),
            None,
        ] {
            let mut request = service
                .http
                .post(service.url("/api/jobs"))
                .header("origin", "http://evil.example")
                .body(body.clone());
            if let Some(content_type) = content_type {
                request = request.header("content-type", content_type);
            }
            // From the evil page: its origin is refused first.
            let (status, refused) = answer(request.send().await.unwrap()).await;
            assert_eq!(status, 403, "{content_type:?}: {refused}");
            assert!(refused["error"].as_str().unwrap().contains("evil.example"));
            // Without an Origin (an older browser, a plugin): the content type is refused.
            let mut request = service
                .http
                .post(service.url("/api/jobs"))
                .body(body.clone());
            if let Some(content_type) = content_type {
                request = request.header("content-type", content_type);
            }
            let (status, refused) = answer(request.send().await.unwrap()).await;
            assert_eq!(status, 415, "{content_type:?}: {refused}");
        }
        // JSON from a foreign origin (a page whose preflight a browser would not pass, or a
        // client that forges the header) is refused too.
        let (status, _) = answer(
            service
                .http
                .post(service.url("/api/jobs"))
                .header("origin", "http://127.0.0.1:1")
                .json(&spec)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 403);
        assert_eq!(
            service.jobs().await,
            Vec::<Value>::new(),
            "no job was created"
        );

        // The service's own origin (the dashboard) starts the job.
        let (status, job) = answer(
            service
                .http
                .post(service.url("/api/jobs"))
                .header("origin", &own_origin)
                .json(&spec)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 202, "{job}");
        let id = job["id"].clone();
        service
            .wait_for(&id, "running", |j| j["state"] == "running")
            .await;

        // Cross-site attempts to stop or steer it change nothing.
        let cancel = format!("/api/jobs/{id}/cancel");
        let attempts = [
            (
                Method::POST,
                cancel.clone(),
                Some("http://evil.example"),
                None,
                "{}",
            ),
            (Method::POST, cancel.clone(), None, None, ""),
            (Method::POST, cancel.clone(), None, Some("text/plain"), "{}"),
            (
                Method::POST,
                format!("/api/jobs/{id}/pause"),
                None,
                Some("application/x-www-form-urlencoded"),
                "",
            ),
            (
                Method::PATCH,
                format!("/api/jobs/{id}"),
                Some("http://evil.example"),
                Some("application/json"),
                r#"{"workers": 9}"#,
            ),
            (
                Method::PATCH,
                format!("/api/jobs/{id}"),
                None,
                Some("text/plain"),
                r#"{"rate": 1000000}"#,
            ),
            (
                Method::PUT,
                "/api/throttle".to_string(),
                None,
                None,
                r#"{"rate": 1}"#,
            ),
        ];
        for (method, path, origin, content_type, body) in attempts {
            let mut request = service
                .http
                .request(method.clone(), service.url(&path))
                .body(body);
            if let Some(origin) = origin {
                request = request.header("origin", origin);
            }
            if let Some(content_type) = content_type {
                request = request.header("content-type", content_type);
            }
            let (status, refused) = answer(request.send().await.unwrap()).await;
            let expected = if origin.is_some() { 403 } else { 415 };
            assert_eq!(
                status, expected,
                "{method} {path} {origin:?} {content_type:?}: {refused}"
            );
        }
        let job = service.job(&id).await;
        assert_eq!(job["state"], "running", "{job}");
        assert_eq!(job["workers"], 1);
        assert_eq!(job["limits"]["rate"], 20.0);
        let (_, global) = service.get("/api/throttle").await;
        assert_eq!(global, json!({"rate": null, "rate_bytes": null}));
        // Reads from a foreign page are refused as well.
        let (status, _) = answer(
            service
                .http
                .get(service.url("/api/jobs"))
                .header("origin", "http://evil.example")
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 403);

        // The bodiless commands work with the JSON content type, with no body or `{}`.
        let (status, paused) = answer(
            service
                .http
                .post(service.url(&format!("/api/jobs/{id}/pause")))
                .header("content-type", "application/json")
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(
            (status, &paused["state"]),
            (200, &json!("paused")),
            "{paused}"
        );
        let (status, refused) = service
            .post(&format!("/api/jobs/{id}/resume"), json!({"now": true}))
            .await;
        assert_eq!(status, 400, "a command takes no parameters: {refused}");
        let (status, cancelled) = service.post(&cancel, json!({})).await;
        assert_eq!(status, 200, "{cancelled}");
        let job = service
            .wait_for(&id, "cancelled", |j| j["state"] == "cancelled")
            .await;
        assert_eq!(copied(&env, &d).await, count(&job));
        assert_eq!(service.jobs().await.len(), 1, "only the one job");
    });
}

fn count(job: &Value) -> u64 {
    job["progress"]["docs"].as_u64().unwrap_or(0)
}

#[test]
fn rebinding_host_names_are_refused() {
    let service = Serve::default()
        .arg("--allowed-host")
        .arg("ferry.test")
        .start();
    TestEnv::start().run(|env| async move {
        let (spec, d) = slow_spec(&env, "rebind").await;
        let port = service.port();
        let with_host = |method: Method, path: &str, host: &str| {
            service
                .http
                .request(method, service.url(path))
                .header("host", host)
        };
        for host in [
            format!("attacker.example:{port}"),
            "attacker.example".into(),
            format!("localhost.attacker.example:{port}"),
            format!("ferry.test.attacker.example:{port}"),
        ] {
            let (status, refused) = answer(
                with_host(Method::GET, "/api/jobs", &host)
                    .send()
                    .await
                    .unwrap(),
            )
            .await;
            assert!(status == 421, "{host}: {status} {refused}");
            assert!(
                refused["error"]
                    .as_str()
                    .unwrap()
                    .contains("--allowed-host"),
                "{refused}"
            );
            for path in ["/", "/metrics", "/api/openapi.json", "/web/app.mjs"] {
                let response = with_host(Method::GET, path, &host).send().await.unwrap();
                assert_eq!(response.status(), 421, "{host} {path}");
            }
            let (status, _) = answer(
                with_host(Method::POST, "/api/jobs", &host)
                    .json(&spec)
                    .send()
                    .await
                    .unwrap(),
            )
            .await;
            assert_eq!(status, 421);
        }
        assert_eq!(
            service.jobs().await,
            Vec::<Value>::new(),
            "nothing was started"
        );
        assert!(collection_names(&env.dst_client().await, &d)
            .await
            .is_empty());

        // Names that cannot be rebound, and the one the operator allowed.
        for host in [
            format!("localhost:{port}"),
            format!("127.0.0.1:{port}"),
            format!("ferry.test:{port}"),
            "FERRY.TEST".into(),
        ] {
            let response = with_host(Method::GET, "/api/jobs", &host)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200, "{host}");
        }
        // Same origin under the allowed name (as behind a reverse proxy).
        let (status, job) = answer(
            with_host(Method::POST, "/api/jobs", "ferry.test")
                .header("origin", "https://ferry.test")
                .json(&spec)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 202, "{job}");
        let (status, _) = service
            .post(&format!("/api/jobs/{}/cancel", job["id"]), json!({}))
            .await;
        assert_eq!(status, 200);
    });
}

/// A service whose token is in a file.
fn with_token_file(dir: &std::path::Path) -> Service {
    let path = dir.join("token");
    std::fs::write(&path, format!("{TOKEN}\n")).unwrap();
    Serve {
        state: Some(dir.join("jobs.json")),
        args: vec![
            "--auth-token-file".into(),
            path.to_string_lossy().into_owned(),
        ],
        token: Some(TOKEN.into()),
        ..Serve::default()
    }
    // A process of its own, so that its whole log can be searched for the token.
    .spawn()
}

#[test]
fn a_token_guards_the_api_and_the_metrics_and_is_never_shown() {
    let dir = tempfile::tempdir().unwrap();
    let service = with_token_file(dir.path());
    TestEnv::start().run(|env| async move {
        let (spec, d) = slow_spec(&env, "token").await;
        let tries = [
            ("no token", None),
            ("wrong token", Some("Bearer s3cret-Token-0123456789abcdeX")),
            ("a prefix of it", Some("Bearer s3cret-Token")),
            ("another scheme", Some("Basic czNjcmV0LVRva2Vu")),
            ("in the wrong header", None),
        ];
        for (what, authorization) in tries {
            for (method, path, body) in [
                (Method::GET, "/api/jobs", None),
                (Method::GET, "/metrics", None),
                (Method::GET, "/api/openapi.json", None),
                (Method::GET, "/api/jobs/1", None),
                (Method::POST, "/api/jobs", Some(&spec)),
                (Method::PUT, "/api/throttle", Some(&json!({"rate": 5}))),
            ] {
                let mut request = service.http.request(method.clone(), service.url(path));
                if let Some(body) = body {
                    request = request.json(body);
                }
                if let Some(authorization) = authorization {
                    request = request.header("authorization", authorization);
                }
                if what == "in the wrong header" {
                    request = request.header("x-api-token", TOKEN);
                }
                let response = request.send().await.unwrap();
                assert_eq!(
                    response
                        .headers()
                        .get("www-authenticate")
                        .map(|v| v.to_str().unwrap()),
                    Some("Bearer"),
                    "{what}: {method} {path}"
                );
                let (status, refused) = answer(response).await;
                assert_eq!(status, 401, "{what}: {method} {path}: {refused}");
            }
        }
        // Nothing was created or changed by any of them.
        assert_eq!(service.jobs().await, Vec::<Value>::new());
        let (_, global) = service.get("/api/throttle").await;
        assert_eq!(global["rate"], Value::Null);
        assert!(collection_names(&env.dst_client().await, &d)
            .await
            .is_empty());

        // The dashboard's page loads without it: the page asks for the token.
        for path in ["/", "/web/app.mjs"] {
            let response = service.http.get(service.url(path)).send().await.unwrap();
            assert_eq!(response.status(), 200, "{path}");
        }
        // With the token, everything works; the document says a token is needed.
        let (status, job) = service.post("/api/jobs", spec.clone()).await;
        assert_eq!(status, 202, "{job}");
        let (status, metrics) = service.get("/metrics").await;
        assert_eq!(status, 200);
        let (status, openapi) = service.get("/api/openapi.json").await;
        assert_eq!(status, 200);
        assert_eq!(
            openapi["components"]["securitySchemes"]["bearer"]["scheme"],
            "bearer"
        );
        assert!(openapi["paths"]["/api/jobs"]["get"]["responses"]["401"].is_object());
        assert!(openapi["paths"]["/"]["get"]["responses"]["401"].is_null());
        let (status, _) = service
            .post(&format!("/api/jobs/{}/cancel", job["id"]), json!({}))
            .await;
        assert_eq!(status, 200);
        service
            .wait_for(&job["id"], "cancelled", |j| j["state"] == "cancelled")
            .await;

        // The token is nowhere: not in answers, the page, the history or the log.
        let page = service
            .http
            .get(service.url("/"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let app = service
            .http
            .get(service.url("/web/app.mjs"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let history = std::fs::read_to_string(dir.path().join("jobs.json")).unwrap();
        let (_, jobs) = service.get("/api/jobs").await;
        for (name, text) in [
            ("jobs", jobs.to_string()),
            ("metrics", metrics.to_string()),
            ("openapi", openapi.to_string()),
            ("page", page),
            ("app", app),
            ("history", history),
            ("log", service.log()),
        ] {
            assert!(!text.contains(TOKEN), "the token is in the {name}");
            assert!(
                !text.contains("s3cret-Token"),
                "part of the token is in the {name}"
            );
        }
    });
}

#[test]
fn the_token_may_come_from_the_environment() {
    let service = Serve {
        env: vec![("MONGOFERRY_API_TOKEN".into(), TOKEN.into())],
        token: Some(TOKEN.into()),
        ..Serve::default()
    }
    .spawn();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let (status, _) = answer(
            service
                .http
                .get(service.url("/api/jobs"))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 401);
        assert_eq!(service.jobs().await, Vec::<Value>::new());
        assert!(!service.log().contains(TOKEN));
    });
}

/// `mongoferry serve` with `args` that must refuse to start: its status and message.
fn refused_serve(args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_mongoferry"));
    command
        .arg("serve")
        .args(["--no-state", "--shutdown-timeout", "1"])
        .args(args)
        .env_remove("MONGOFERRY_API_TOKEN")
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    mongoferry::testkit::kill_with_parent(&mut command);
    let mut child = command.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("serve {args:?} did not refuse to start: it is serving");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn serve_refuses_an_address_beyond_loopback_without_a_token() {
    // Nothing is exposed: each of these exits before it opens the port.
    for listen in ["0.0.0.0:0", "[::]:0"] {
        let (status, message) = refused_serve(&["--listen", listen], &[]);
        assert_eq!(status, 2, "{listen}: {message}");
        assert!(message.contains("refusing to serve"), "{message}");
        assert!(message.contains("--auth-token-file"), "{message}");
        assert!(message.contains("--insecure-no-auth"), "{message}");
        assert!(!message.contains("serving on"), "{message}");
    }
    // Tokens that cannot be used are refused without being shown.
    let dir = tempfile::tempdir().unwrap();
    let short = dir.path().join("short");
    std::fs::write(&short, "hunter2\n").unwrap();
    let short = short.to_str().unwrap();
    let (status, message) = refused_serve(&["--auth-token-file", short], &[]);
    assert_eq!(status, 2, "{message}");
    assert!(message.contains("at least 16"), "{message}");
    assert!(!message.contains("hunter2"), "{message}");
    let (status, message) = refused_serve(&["--auth-token-file", "/nonexistent/token"], &[]);
    assert_eq!(status, 2, "{message}");
    assert!(message.contains("/nonexistent/token"), "{message}");
    let both = dir.path().join("token");
    std::fs::write(&both, TOKEN).unwrap();
    let (status, message) = refused_serve(
        &["--auth-token-file", both.to_str().unwrap()],
        &[("MONGOFERRY_API_TOKEN", TOKEN)],
    );
    assert_eq!(status, 2, "{message}");
    assert!(message.contains("not both"), "{message}");
    assert!(!message.contains(TOKEN), "{message}");
    let (status, message) = refused_serve(&["--allowed-host", "https://ferry.test/"], &[]);
    assert_eq!(status, 2, "{message}");
}

#[test]
fn serve_refuses_a_credentials_key_it_cannot_use_without_showing_it() {
    let dir = tempfile::tempdir().unwrap();
    let short = dir.path().join("short.key");
    std::fs::write(&short, "hunter2\n").unwrap();
    let short = short.to_str().unwrap();
    let (status, message) = refused_serve(&["--credentials-key-file", short], &[]);
    assert_eq!(status, 2, "{message}");
    assert!(message.contains("credentials key file"), "{message}");
    assert!(message.contains("at least 16"), "{message}");
    assert!(!message.contains("hunter2"), "{message}");
    let (status, message) = refused_serve(&[], &[("MONGOFERRY_CREDENTIALS_KEY", "hunter2")]);
    assert_eq!(status, 2, "{message}");
    assert!(message.contains("MONGOFERRY_CREDENTIALS_KEY"), "{message}");
    assert!(!message.contains("hunter2"), "{message}");
    let key = "a-long-enough-credentials-key";
    let (status, message) = refused_serve(
        &["--credentials-key-file", short],
        &[("MONGOFERRY_CREDENTIALS_KEY", key)],
    );
    assert_eq!(status, 2, "{message}");
    assert!(message.contains("not both"), "{message}");
    assert!(!message.contains(key), "{message}");
    let (status, message) = refused_serve(&["--lease-seconds", "0"], &[]);
    assert_eq!(status, 2, "{message}");
}

#[test]
fn oversized_and_slow_requests_get_clear_answers() {
    let service = Serve::default().arg("--client-timeout").arg("1").start();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let address = service.base.trim_start_matches("http://").to_string();
        // Over 1 MiB, declared or streamed: 413, and nothing is created. A declared length over
        // the limit is answered before any of the body is read, so a raw connection that sends
        // only the head always reads the 413.
        let mut declared = tokio::net::TcpStream::connect(&address).await.unwrap();
        declared
            .write_all(
                format!(
                    "POST /api/jobs HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                    2 << 20
                )
                .as_bytes(),
            )
            .await
            .unwrap();
        // The answer may come in more than one read: read until the connection ends.
        let mut reply = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), declared.read_to_end(&mut reply)).await.expect("an answer, not a hang").unwrap();
        let reply = String::from_utf8_lossy(&reply);
        assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");
        assert!(reply.contains("larger than 1048576 bytes"), "{reply}");
        let big = format!(r#"{{"from": "mongodb://a", "to": "mongodb://b", "namespaces": ["a.b"], "filter": {{"x": "{}"}}}}"#, "x".repeat(1 << 20));
        let chunks: Vec<Result<String, std::io::Error>> = big
            .as_bytes()
            .chunks(64 * 1024)
            .map(|c| Ok(String::from_utf8_lossy(c).into_owned()))
            .collect();
        let streamed = reqwest::Body::wrap_stream(futures::stream::iter(chunks));
        let sent = service.http.post(service.url("/api/jobs")).header("content-type", "application/json").body(streamed).send().await;
        // The service answers 413 as soon as the limit is passed and closes the connection; a
        // client still sending then sees the connection end, before it reads the answer
        // (IncompleteMessage) or while it writes (a broken pipe or a reset).
        match sent {
            Ok(response) => {
                let (status, refused) = answer(response).await;
                assert_eq!(status, 413, "{refused}");
            }
            Err(e) => {
                let seen = format!("{e:?}");
                assert!(
                    e.is_request() && ["IncompleteMessage", "BrokenPipe", "ConnectionReset"].iter().any(|end| seen.contains(end)),
                    "{seen}"
                );
            }
        }
        assert_eq!(service.jobs().await, Vec::<Value>::new());

        // A body that never comes: 408 after the client timeout, not a hang.
        let mut slow = tokio::net::TcpStream::connect(&address).await.unwrap();
        slow.write_all(
            format!("POST /api/jobs HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"from\"").as_bytes(),
        )
        .await
        .unwrap();
        let started = Instant::now();
        let mut reply = vec![0; 4096];
        let n = tokio::time::timeout(Duration::from_secs(10), slow.read(&mut reply)).await.expect("an answer, not a hang").unwrap();
        let reply = String::from_utf8_lossy(&reply[..n]);
        assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
        assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
        // A request head that never ends: the connection is closed (there is no request to answer).
        let mut slow = tokio::net::TcpStream::connect(&address).await.unwrap();
        slow.write_all(b"GET /api/jobs HTTP/1.1\r\nHost: 127").await.unwrap();
        let started = Instant::now();
        let mut reply = vec![0; 4096];
        let n = tokio::time::timeout(Duration::from_secs(10), slow.read(&mut reply)).await.expect("closed, not a hang").unwrap_or(0);
        assert_eq!(n, 0, "{}", String::from_utf8_lossy(&reply[..n]));
        assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
        assert_eq!(service.jobs().await, Vec::<Value>::new());
    });
}

#[test]
fn event_streams_are_bounded() {
    let service = Serve::default().arg("--max-event-streams").arg("2").start();
    TestEnv::start().run(|env| async move {
        let (spec, _) = slow_spec(&env, "streams").await;
        let (status, job) = service.post("/api/jobs", spec).await;
        assert_eq!(status, 202, "{job}");
        let events = format!("/api/jobs/{}/events", job["id"]);
        let first = service.request(Method::GET, &events).send().await.unwrap();
        let second = service.request(Method::GET, &events).send().await.unwrap();
        assert_eq!(
            (first.status().as_u16(), second.status().as_u16()),
            (200, 200)
        );
        let third = service.request(Method::GET, &events).send().await.unwrap();
        assert_eq!(third.headers().get("retry-after").unwrap(), "5");
        let (status, refused) = answer(third).await;
        assert_eq!(status, 429, "{refused}");
        assert!(
            refused["error"].as_str().unwrap().contains("at most 2"),
            "{refused}"
        );
        // A stream given up frees its place.
        drop(first);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let again = service.request(Method::GET, &events).send().await.unwrap();
            if again.status() == 200 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the closed stream's place was not freed"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let (status, _) = service
            .post(&format!("/api/jobs/{}/cancel", job["id"]), json!({}))
            .await;
        assert_eq!(status, 200);
        drop(second);
    });
}

/// A self-signed certificate for `localhost` and 127.0.0.1, written as PEM files in `dir`:
/// (certificate path, key path, certificate PEM).
fn self_signed(dir: &std::path::Path) -> (String, String, String) {
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap();
    let cert = certified.cert.pem();
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, &cert).unwrap();
    std::fs::write(&key_path, certified.signing_key.serialize_pem()).unwrap();
    (
        cert_path.to_string_lossy().into_owned(),
        key_path.to_string_lossy().into_owned(),
        cert,
    )
}

#[test]
fn https_with_a_certificate_and_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, pem) = self_signed(dir.path());
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, TOKEN).unwrap();
    let service = Serve {
        args: vec![
            "--tls-cert".into(),
            cert.clone(),
            "--tls-key".into(),
            key.clone(),
            "--auth-token-file".into(),
            token_file.to_string_lossy().into_owned(),
        ],
        token: Some(TOKEN.into()),
        trust: Some(pem.into_bytes()),
        ..Serve::default()
    }
    .start();
    assert!(
        service.base.starts_with("https://127.0.0.1:"),
        "{}",
        service.base
    );
    TestEnv::start().run(|env| async move {
        let (spec, _) = slow_spec(&env, "tls").await;
        let (status, job) = service.post("/api/jobs", spec).await;
        assert_eq!(status, 202, "{job}");
        let (status, _) = service
            .post(&format!("/api/jobs/{}/cancel", job["id"]), json!({}))
            .await;
        assert_eq!(status, 200);
        // The token is checked over TLS as well.
        let (status, _) = answer(
            service
                .http
                .get(service.url("/api/jobs"))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 401);
        // Plain HTTP on the same port gets no answer; a client that does not trust the
        // certificate does not connect.
        let plain = service.url("/api/jobs").replace("https://", "http://");
        assert!(reqwest::get(&plain)
            .await
            .map(|r| r.status() != 200)
            .unwrap_or(true));
        let untrusting = reqwest::Client::builder()
            .tls_built_in_root_certs(false)
            .build()
            .unwrap();
        assert!(untrusting
            .get(service.url("/api/jobs"))
            .send()
            .await
            .is_err());
        assert_eq!(service.jobs().await.len(), 1);
    });
    // Files that are not a certificate and its key stop the service before it starts.
    let (status, message) = refused_serve(&["--tls-cert", &cert, "--tls-key", &cert], &[]);
    assert_eq!(status, 2, "{message}");
    assert!(message.contains("private key"), "{message}");
    let stray = tempfile::tempdir().unwrap();
    let (_, other_key, _) = self_signed(stray.path());
    let (status, message) = refused_serve(&["--tls-cert", &cert, "--tls-key", &other_key], &[]);
    assert_eq!(status, 2, "{message}");
    assert!(message.contains("cannot be used together"), "{message}");
    let (status, message) = refused_serve(&["--tls-cert", &cert], &[]);
    assert_eq!(status, 2, "--tls-cert needs --tls-key: {message}");
}

#[test]
fn jobs_reach_only_the_clusters_allowed() {
    let env = TestEnv::start();
    // The test servers' own hosts, as the operator would list them.
    let mut serve = Serve::default();
    for uri in [&env.src, &env.dst] {
        for endpoint in mongoferry::service::clusters::endpoints(uri).unwrap() {
            serve
                .args
                .extend(["--allow-cluster".into(), endpoint.to_string()]);
        }
    }
    let service = serve.start();
    env.run(|env| async move {
        let (s, d) = (env.src_db("allow"), env.dst_db("allow"));
        insert_raw(&env.src_client().await, &s, "c", &sample_docs(500, 64)).await;
        let namespaces = json!([format!("{s}.c:{d}.c")]);
        // A server of our own on loopback, but not in the list: it must never hear a thing.
        let trap = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let trap_port = trap.local_addr().unwrap().port();
        let trap_uri = format!("mongodb://127.0.0.1:{trap_port}/?directConnection=true");
        let tries = [
            (
                env.src.clone(),
                trap_uri.clone(),
                vec![format!(
                    "to: host 127.0.0.1:{trap_port} is not in --allow-cluster"
                )],
            ),
            (
                trap_uri.clone(),
                env.dst.clone(),
                vec![format!(
                    "from: host 127.0.0.1:{trap_port} is not in --allow-cluster"
                )],
            ),
            (
                env.src.replacen(
                    "mongodb://",
                    &format!("mongodb://127.0.0.1:{trap_port},"),
                    1,
                ),
                env.dst.clone(),
                vec![format!(
                    "from: host 127.0.0.1:{trap_port} is not in --allow-cluster"
                )],
            ),
            (
                env.src.clone(),
                "mongodb+srv://user:pw@cluster0.evil.example/db".into(),
                vec!["to: mongodb+srv name cluster0.evil.example is not in --allow-cluster".into()],
            ),
            (
                env.src.clone(),
                format!("{}&proxyHost=127.0.0.1&proxyPort={trap_port}", env.dst),
                vec![
                    format!("to: proxy host 127.0.0.1:{trap_port} is not in --allow-cluster"),
                    // And this build of the driver takes no proxy at all.
                    format!(
                        "to: {}&proxyHost=127.0.0.1&proxyPort={trap_port} is not a valid \
                         MongoDB URI: cannot specify proxyhost if socks5-proxy feature is not \
                         enabled",
                        env.dst
                    ),
                ],
            ),
            // Read as the driver would read it: the scheme's case and spaces change no host.
            (
                env.src.clone(),
                format!(" MONGODB://127.0.0.1:{trap_port}/?directConnection=true"),
                vec![format!(
                    "to: host 127.0.0.1:{trap_port} is not in --allow-cluster"
                )],
            ),
            (
                "mongodb://[::1]:27017".into(),
                "mongodb://evil.example".into(),
                vec![
                    "from: host [::1]:27017 is not in --allow-cluster".into(),
                    "to: host evil.example:27017 is not in --allow-cluster".into(),
                ],
            ),
        ];
        for (from, to, expected) in tries {
            let started = Instant::now();
            let (status, refused) = service
                .post(
                    "/api/jobs",
                    json!({"from": from, "to": to, "namespaces": namespaces}),
                )
                .await;
            assert_eq!(status, 400, "{refused}");
            let problems: Vec<String> = refused["problems"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p.as_str().unwrap().to_string())
                .collect();
            assert_eq!(problems, expected);
            assert!(
                started.elapsed() < Duration::from_secs(2),
                "refused at once, without a lookup"
            );
            assert!(!refused.to_string().contains(":pw@"), "{refused}");
        }
        assert_eq!(
            service.jobs().await,
            Vec::<Value>::new(),
            "nothing was started"
        );
        let knocked = tokio::time::timeout(Duration::from_millis(500), trap.accept()).await;
        assert!(
            knocked.is_err(),
            "the service connected to a host outside the list"
        );

        // The allowed servers work as before.
        let (status, job) = service
            .post(
                "/api/jobs",
                json!({"from": env.src, "to": env.dst, "namespaces": namespaces}),
            )
            .await;
        assert_eq!(status, 202, "{job}");
        service
            .wait_for(&job["id"], "completed", |j| j["state"] == "completed")
            .await;
        assert_eq!(assert_same(&env, (&s, "c"), (&d, "c")).await, 500);
    });
    let (status, message) = refused_serve(&["--allow-cluster", "*"], &[]);
    assert_eq!(status, 2, "{message}");
    assert!(message.contains("leave out --allow-cluster"), "{message}");
}

/// The password every malformed URI of [`secret_never_shown`] carries.
const PASSWORD: &str = "S3cretPw!x";

/// URIs that no entry point may take, each carrying [`PASSWORD`] in a shape of its own: no
/// scheme, a misspelt or half scheme, bad percent-encoding, spaces around and characters a
/// password must escape, an option the driver refuses, no host.
fn malformed_uris() -> Vec<String> {
    [
        "u:S3cretPw!x@127.0.0.1:9/db",
        "MONGODB:/u:S3cretPw!x@127.0.0.1:9/db",
        "mongdb://u:S3cretPw!x@127.0.0.1:9",
        "mongodb://u:S3cretPw!x%zz@127.0.0.1:9",
        " mongodb://u:S3cretPw!x#\"/@127.0.0.1:9/db ",
        "mongodb://u:S3cretPw!x@127.0.0.1:9/?authMechanism=BOGUS",
        "mongodb://u:S3cretPw!x@",
    ]
    .map(String::from)
    .to_vec()
}

/// Whether `text` holds [`PASSWORD`], or the most of it a reader could use.
fn leaks(text: &str) -> bool {
    text.contains(PASSWORD) || text.contains(&PASSWORD[..8])
}

#[test]
fn secret_never_shown() {
    TestEnv::start().run(|env| async move {
        let dir = tempfile::tempdir().unwrap();
        let (src, dst) = (env.src.clone(), env.dst.clone());
        let ns = format!("{}.c:{}.c", env.src_db("leak"), env.dst_db("leak"));
        let mut runs: Vec<Vec<String>> = Vec::new();
        for bad in malformed_uris() {
            for mode in ["copy", "sync", "move", "verify", "plan"] {
                for (from, to) in [(&bad, &dst), (&src, &bad)] {
                    runs.push(
                        [mode, "--from", from, "--to", to, "--ns", &ns]
                            .map(String::from)
                            .to_vec(),
                    );
                }
            }
            runs.push(
                ["sample", "--to", &bad, "--ns", "db.c", "--count", "1"]
                    .map(String::from)
                    .to_vec(),
            );
            runs.push(
                [
                    "copy", "--from", &src, "--to", &dst, "--ns", &ns, "--state", &bad,
                ]
                .map(String::from)
                .to_vec(),
            );
            runs.push(
                ["serve", "--listen", "127.0.0.1:0", "--state", &bad]
                    .map(String::from)
                    .to_vec(),
            );
            runs.push(
                [
                    "serve",
                    "--listen",
                    "127.0.0.1:0",
                    "--no-state",
                    "--allow-cluster",
                    &bad,
                ]
                .map(String::from)
                .to_vec(),
            );
            let journal = dir.path().join("journal").display().to_string();
            runs.push(
                ["journal", "replay", &journal, "--to", &bad]
                    .map(String::from)
                    .to_vec(),
            );
        }
        // URIs where a namespace, a filter, an exclusion or a number is expected.
        let uri = "mongodb://u:S3cretPw!x@127.0.0.1:9/db.c";
        for (flag, value) in [
            ("--ns", uri),
            ("--ns", "u:S3cretPw!x@h.c"),
            ("--filter", uri),
            ("--exclude", "u:S3cretPw!x@h"),
            ("--workers", uri),
            ("--strategy", uri),
        ] {
            let mut argv = vec!["copy", "--from", &src, "--to", &dst];
            if flag != "--ns" {
                argv.extend(["--ns", &ns]);
            }
            argv.extend([flag, value]);
            runs.push(argv.into_iter().map(String::from).collect());
        }
        for argv in &runs {
            let args: Vec<&str> = argv.iter().map(String::as_str).collect();
            let out = mongoferry_in(dir.path(), &args, &[], Duration::from_secs(60));
            let text = format!("{}{}", stdout(&out), stderr(&out));
            assert_eq!(out.status.code(), Some(2), "{argv:?}: {text}");
            assert!(text.contains("error"), "{argv:?} said nothing: {text}");
            assert!(!leaks(&text), "{argv:?} showed the password: {text}");
        }
        // The same through the state's environment variable, for a copy and a service.
        for bad in malformed_uris() {
            let copy = ["copy", "--from", &src, "--to", &dst, "--ns", &ns];
            let serve = ["serve", "--listen", "127.0.0.1:0"];
            for args in [&copy[..], &serve[..]] {
                let out = mongoferry_in(
                    dir.path(),
                    args,
                    &[("MONGOFERRY_STATE", &bad)],
                    Duration::from_secs(60),
                );
                let text = format!("{}{}", stdout(&out), stderr(&out));
                assert_eq!(
                    out.status.code(),
                    Some(2),
                    "MONGOFERRY_STATE={bad:?}: {text}"
                );
                assert!(!leaks(&text), "MONGOFERRY_STATE={bad:?}: {text}");
            }
        }
        // Well-formed once read (an upper-case scheme, spaces), but nothing answers there: the
        // run fails (status 1) and says where, without the password.
        let unreachable = " MONGODB://u:S3cretPw!x@127.0.0.1:9/db ";
        for mut args in [
            vec!["verify", "--from", unreachable, "--to", &dst, "--ns", &ns],
            vec![
                "copy",
                "--from",
                &src,
                "--to",
                &dst,
                "--ns",
                &ns,
                "--state",
                unreachable,
            ],
        ] {
            args.extend(["--connect-timeout", "0.5"]);
            let out = mongoferry_in(dir.path(), &args, &[], Duration::from_secs(60));
            let text = format!("{}{}", stdout(&out), stderr(&out));
            assert_eq!(out.status.code(), Some(1), "{args:?}: {text}");
            assert!(text.contains("u:***@127.0.0.1:9"), "{args:?}: {text}");
            assert!(!leaks(&text), "{args:?}: {text}");
        }
        let names = names_under(dir.path());
        assert!(
            !names.iter().any(|n| leaks(n) || n.contains('@')),
            "a file named after a URI: {names:?}"
        );

        // The API: jobs, plans, the throttle, and a path.
        let service = Serve::with_state(&dir.path().join("jobs.json")).spawn();
        let spec = |from: &str, to: &str| json!({"from": from, "to": to, "namespaces": [ns]});
        let mut requests: Vec<(Method, String, Value)> = Vec::new();
        for bad in malformed_uris() {
            for path in ["/api/jobs", "/api/plan"] {
                requests.push((Method::POST, path.into(), spec(&bad, &dst)));
                requests.push((Method::POST, path.into(), spec(&src, &bad)));
            }
        }
        for body in [
            json!({"from": src, "to": dst, "namespaces": [uri]}),
            json!({"from": src, "to": dst, "namespaces": [ns], "filter": uri}),
            json!({"from": src, "to": dst, "namespaces": [ns], "exclude": ["u:S3cretPw!x@h"]}),
            json!({"from": src, "to": dst, "namespaces": [ns], "workers": uri}),
            {
                let mut named = spec(&src, &dst);
                named[uri] = json!(1);
                named
            },
            json!({"from": [uri], "to": dst, "namespaces": [ns]}),
        ] {
            requests.push((Method::POST, "/api/jobs".into(), body.clone()));
            requests.push((Method::POST, "/api/plan".into(), body));
        }
        requests.push((Method::PUT, "/api/throttle".into(), json!({"rate": uri})));
        requests.push((Method::GET, "/api/jobs/u:S3cretPw!x@h".into(), Value::Null));
        for (method, path, body) in requests {
            let (status, answer) = match body {
                Value::Null => service.send(method.clone(), &path, None).await,
                body => {
                    service
                        .send(method.clone(), &path, Some(body.clone()))
                        .await
                }
            };
            assert!(
                (400..500).contains(&status),
                "{method} {path}: {status} {answer}"
            );
            assert!(!leaks(&answer.to_string()), "{method} {path}: {answer}");
        }
        assert_eq!(service.jobs().await, Vec::<Value>::new(), "nothing started");
        let log = service.log();
        assert!(!leaks(&log), "the service logged the password: {log}");
        let names = names_under(dir.path());
        assert!(!names.iter().any(|n| leaks(n)), "{names:?}");
    });
}
