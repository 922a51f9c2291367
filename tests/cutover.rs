//! A sync's cutover against real test servers: writes blocked at a commit (`block_writes`),
//! refused at submit where the server cannot block them.

mod common;

use std::time::Duration;

use common::service::Service;
use common::*;
use serde_json::{json, Value};

/// The body of a sync job from `src` to `dst` (`db.coll` each).
fn sync_spec(env: &TestEnv, src: &str, dst: &str) -> Value {
    json!({
        "from": env.src, "to": env.dst, "namespaces": [format!("{src}:{dst}")], "mode": "sync"
    })
}

#[test]
fn writes_blocked_at_the_commit_are_refused_at_submit_where_the_server_cannot() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start(&dir.path().join("jobs.json"));
    TestEnv::start().run(|env| async move {
        let (s, d) = (env.src_db("block"), env.dst_db("block"));
        insert_raw(&env.src_client().await, &s, "c", &sample_docs(20, 100)).await;
        let dst = env.dst_client().await;
        let written = || async { dst.list_database_names().await.unwrap().contains(&d) };

        // The API: 400, naming the server and what it lacks.
        let mut body = sync_spec(&env, &format!("{s}.c"), &format!("{d}.c"));
        body["block_writes"] = json!("destination");
        let (status, refused) = service.post("/api/jobs", body.clone()).await;
        assert_eq!(status, 400, "{refused}");
        let text = refused.to_string();
        assert!(text.contains("setUserWriteBlockMode"), "{text}");
        assert!(text.contains("the destination mongodb://"), "{text}");
        assert!(service.jobs().await.is_empty(), "no job was started");
        // Only a sync commits.
        body["mode"] = json!("copy");
        let (status, refused) = service.post("/api/jobs", body).await;
        assert_eq!(status, 400, "{refused}");
        assert!(refused.to_string().contains("only a sync job"), "{refused}");

        // The command line: refused before anything is written.
        let out = mongoferry(
            &[
                "sync",
                "--quiet",
                "--no-state",
                "--from",
                &env.src,
                "--to",
                &env.dst,
                "--ns",
                &format!("{s}.c:{d}.c"),
                "--block-writes",
                "both",
            ],
            Duration::from_secs(60),
        );
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        let text = stderr(&out);
        assert!(text.contains("setUserWriteBlockMode"), "{text}");
        assert!(text.contains("nothing was written"), "{text}");
        assert!(text.contains("the source mongodb://"), "{text}");
        assert!(!written().await, "the destination was written");
    });
}
