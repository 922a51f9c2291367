//! The dashboard's files as the service serves them: from the binary, each with its type, the
//! page naming nothing the binary does not hold, the API beside it unchanged. (What the page does
//! in a browser is tested by `web/tests/`, run by `scripts/test.sh`.)

use std::future::IntoFuture;
use std::path::Path;
use std::time::Duration;

use mongoferry::service::api::{router, ApiOptions};
use mongoferry::service::manager::JobManager;

/// The API and dashboard of a service without history, on a free port; stopped when dropped.
struct Served {
    base: String,
    http: reqwest::Client,
    task: tokio::task::JoinHandle<()>,
}

impl Served {
    async fn start() -> Served {
        let manager = JobManager::open(
            None,
            std::sync::Arc::new(mongoferry::state::MemoryStore::default()),
            None,
        )
        .expect("a manager without history");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let server = axum::serve(listener, router(manager, ApiOptions::default())).into_future();
        let task = tokio::spawn(async move {
            let _ = server.await;
        });
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        Served { base, http, task }
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap()
    }

    async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

fn web_file(path: &str) -> Vec<u8> {
    std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("web").join(path)).unwrap()
}

/// Values of `attribute="…"` in an HTML text.
fn attribute_values<'a>(html: &'a str, attribute: &str) -> Vec<&'a str> {
    let needle = format!(" {attribute}=\"");
    html.match_indices(&needle)
        .map(|(at, _)| {
            let rest = &html[at + needle.len()..];
            &rest[..rest.find('"').unwrap()]
        })
        .collect()
}

fn header<'a>(response: &'a reqwest::Response, name: &str) -> &'a str {
    response
        .headers()
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .unwrap()
}

#[tokio::test]
async fn the_page_is_served_from_the_binary_with_everything_it_names() {
    let served = Served::start().await;
    let page = served.get("/").await;
    assert_eq!(page.status(), 200);
    assert_eq!(header(&page, "content-type"), "text/html; charset=utf-8");
    let policy = header(&page, "content-security-policy").to_string();
    assert!(policy.starts_with("default-src 'self'"), "{policy}");
    assert!(policy.contains("script-src 'self'"), "{policy}");
    let html = page.text().await.unwrap();
    assert!(
        html.as_bytes() == web_file("index.html"),
        "/ differs from web/index.html"
    );

    let mut assets: Vec<&str> = attribute_values(&html, "src");
    assets.extend(attribute_values(&html, "href"));
    assert!(assets.len() >= 5, "{assets:?}");
    for target in assets {
        // Offline: only this service's own paths and the page's own screens.
        assert!(
            target.starts_with('/') && !target.starts_with("//") || target.starts_with('#'),
            "the page names {target}, which is not on this service"
        );
        let Some(file) = target.strip_prefix("/web/") else {
            continue;
        };
        let response = served.get(target).await;
        assert_eq!(response.status(), 200, "{target}");
        let expected_type = match file.rsplit('.').next().unwrap() {
            "mjs" | "js" => "text/javascript; charset=utf-8",
            "css" => "text/css; charset=utf-8",
            "svg" => "image/svg+xml",
            other => panic!("unexpected asset type {other}"),
        };
        assert_eq!(header(&response, "content-type"), expected_type, "{target}");
        assert_eq!(header(&response, "x-content-type-options"), "nosniff");
        // Compared without printing: the files are long.
        let served_bytes = response.bytes().await.unwrap();
        assert!(
            served_bytes == web_file(file),
            "{target} differs from web/{file}: the binary is stale"
        );
    }

    // The script's own import and the chart library's licence are served too.
    let app = served.get("/web/app.mjs").await.text().await.unwrap();
    assert!(app.contains("from \"./render.mjs\""));
    assert_eq!(served.get("/web/render.mjs").await.status(), 200);
    let licence = served.get("/web/vendor/uPlot.LICENSE").await;
    assert_eq!(licence.status(), 200);
    assert!(licence.text().await.unwrap().contains("MIT License"));
    served.stop().await;
}

#[tokio::test]
async fn unknown_files_are_json_404s_and_the_api_is_unchanged() {
    let served = Served::start().await;
    for path in [
        "/web/nope.js",
        "/web/../Cargo.toml",
        "/web/%2e%2e/Cargo.toml",
        "/web/",
        "/index.html",
    ] {
        let response = served.get(path).await;
        assert_eq!(response.status(), 404, "{path}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert!(body["error"].is_string(), "{path}: {body}");
    }
    let wrong_method = served
        .http
        .post(format!("{}/", served.base))
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_method.status(), 405);

    let jobs = served.get("/api/jobs").await;
    assert_eq!(jobs.status(), 200);
    let body: serde_json::Value = jobs.json().await.unwrap();
    assert_eq!(body, serde_json::json!({ "jobs": [] }));
    assert_eq!(served.get("/api/openapi.json").await.status(), 200);
    assert_eq!(served.get("/metrics").await.status(), 200);
    served.stop().await;
}
