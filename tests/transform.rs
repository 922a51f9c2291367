//! Transforms end to end against real test servers: masked copies whose `hmac` keeps references
//! consistent across collections and runs, verified as masked, journaled as written, refused up
//! front when the file is wrong, and a move that needs its flag.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use mongodb::bson::{doc, Bson, Document};
use serde_json::json;

const KEY: &str = "a-test-key-of-32-bytes-0123456789";

/// The example transform, in a file of `dir`.
fn transform_file(dir: &Path, db: &str) -> String {
    let path = dir.join("masks.json");
    let text = json!({
        format!("{db}.customers"): [
            {"drop": "internal.notes"},
            {"rename": "tel", "to": "phone"},
            {"hmac": "email"},
            {"redact": "ssn"},
            {"set": "env", "value": "staging"},
        ],
        format!("{db}.*"): [{"hmac": "customer_id"}],
    });
    std::fs::write(&path, text.to_string()).unwrap();
    path.display().to_string()
}

fn key_file(dir: &Path, key: &str) -> String {
    let path = dir.join(format!("key-{}", key.len()));
    std::fs::write(&path, format!("{key}\n")).unwrap();
    path.display().to_string()
}

fn customers(n: i64) -> Vec<mongodb::bson::RawDocumentBuf> {
    (0..n)
        .map(|i| {
            let doc = doc! {
                "_id": i, "customer_id": 1_000 + i, "email": format!("c{i}@example.com"),
                "tel": format!("555-{i:04}"), "ssn": format!("{i:09}"),
                "internal": { "notes": "vip", "tier": (i % 3) as i32 },
            };
            mongodb::bson::RawDocumentBuf::from_document(&doc).unwrap()
        })
        .collect()
}

fn orders(n: i64) -> Vec<mongodb::bson::RawDocumentBuf> {
    (0..n)
        .map(|i| {
            let doc = doc! { "_id": i, "customer_id": 1_000 + (i % 50), "total": i as f64 * 1.5 };
            mongodb::bson::RawDocumentBuf::from_document(&doc).unwrap()
        })
        .collect()
}

fn run(argv: &[&str]) -> std::process::Output {
    mongoferry(argv, Duration::from_secs(60))
}

/// `command` from the test's source to its destination, on `ns`, with `more` flags.
fn job(command: &str, env: &TestEnv, ns: &str, more: &[&str]) -> std::process::Output {
    let mut argv = vec![command, "--from", &env.src, "--to", &env.dst, "--ns", ns];
    argv.extend(more);
    run(&argv)
}

#[test]
fn a_masked_copy_keeps_references_consistent_verifies_and_journals_what_it_wrote() {
    TestEnv::start().run(|env| async move {
        let (s, d) = (env.src_db("mask"), env.dst_db("mask"));
        let src = env.src_client().await;
        insert_raw(&src, &s, "customers", &customers(50)).await;
        insert_raw(&src, &s, "orders", &orders(200)).await;
        let dir = tempfile::tempdir().unwrap();
        let transform = transform_file(dir.path(), &s);
        let key = key_file(dir.path(), KEY);
        let journal = dir.path().join("journal").display().to_string();
        let state = dir.path().join("state.db").display().to_string();
        let ns = format!("{s}.*:{d}");
        let copy = |to_db: &str, key: &str, journal: Option<&str>| {
            let ns = format!("{s}.*:{to_db}");
            let mut argv = vec![
                "copy",
                "--from",
                &env.src,
                "--to",
                &env.dst,
                "--ns",
                &ns,
                "--state",
                &state,
                "--transform",
                &transform,
                "--transform-key-file",
                key,
                "--quiet",
            ]
            .into_iter()
            .map(String::from)
            .collect::<Vec<_>>();
            if let Some(journal) = journal {
                argv.extend(["--journal".to_string(), journal.to_string()]);
            }
            argv
        };
        let argv = copy(&d, &key, Some(&journal));
        let out = run(&argv.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(out.status.success(), "{}", stderr(&out));
        let dst = env.dst_client().await;
        let masked = dump(&dst, &d, "customers").await;
        assert_eq!(masked.len(), 50);
        let first = as_doc(&masked[0]);
        assert!(first
            .get("internal")
            .unwrap()
            .as_document()
            .unwrap()
            .get("notes")
            .is_none());
        assert_eq!(
            first.get_document("internal").unwrap().get_i32("tier"),
            Ok(0)
        );
        assert!(first.get("tel").is_none());
        assert_eq!(first.get_str("phone"), Ok("555-0000"));
        assert_eq!(first.get_str("ssn"), Ok("REDACTED"));
        assert_eq!(first.get_str("env"), Ok("staging"));
        let email = first.get_str("email").unwrap();
        assert!(email.len() == 64 && !email.contains('@'), "{email}");
        // The customer's masked id is the same in orders: the references hold.
        let masked_id = first.get_i64("customer_id").unwrap();
        assert_ne!(masked_id, 1_000);
        let orders_of_first = dst
            .database(&d)
            .collection::<Document>("orders")
            .count_documents(doc! { "customer_id": masked_id })
            .await
            .unwrap();
        assert_eq!(orders_of_first, 4, "orders 0, 50, 100, 150");
        // verify --transform: equal as masked; without it, every document differs.
        let verify = |extra: &[&str]| {
            let mut argv = vec![
                "verify",
                "--from",
                &env.src,
                "--to",
                &env.dst,
                "--ns",
                &ns,
                "--documents-only",
                "--json",
            ];
            argv.extend(extra);
            run(&argv)
        };
        let out = verify(&["--transform", &transform, "--transform-key-file", &key]);
        assert!(out.status.success(), "{} {}", stdout(&out), stderr(&out));
        let out = verify(&[]);
        assert_eq!(out.status.code(), Some(3));
        // A planted difference in the masked copy is found.
        dst.database(&d)
            .collection::<Document>("customers")
            .update_one(doc! { "_id": 7 }, doc! { "$set": { "ssn": "123-45-6789" } })
            .await
            .unwrap();
        let out = verify(&["--transform", &transform, "--transform-key-file", &key]);
        assert_eq!(out.status.code(), Some(3), "{}", stdout(&out));
        let report: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
        assert_eq!(report["different"], 1, "{report}");
        // A reconcile compares through the transform: it writes only the planted difference
        // (back to the masked value) and a source change.
        src.database(&s)
            .collection::<Document>("customers")
            .update_one(
                doc! { "_id": 9 },
                doc! { "$set": { "email": "changed@example.com" } },
            )
            .await
            .unwrap();
        let out = job(
            "reconcile",
            &env,
            &ns,
            &[
                "--state",
                &state,
                "--transform",
                &transform,
                "--transform-key-file",
                &key,
                "--json",
                "--quiet",
            ],
        );
        assert!(out.status.success(), "{}", stderr(&out));
        let summary: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
        assert_eq!(summary["reconcile"]["written"], 2, "{summary}");
        assert_eq!(summary["reconcile"]["equal"], 248, "{summary}");
        let out = verify(&["--transform", &transform, "--transform-key-file", &key]);
        assert!(out.status.success(), "{}", stdout(&out));
        // The journal holds what was written: replayed elsewhere, the masked documents.
        let replayed = env.dst_db("replayed");
        let mapping = format!("{d}.*:{replayed}");
        let out = run(&[
            "journal", "replay", &journal, "--to", &env.dst, "--ns", &mapping,
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
        let again = dump(&dst, &replayed, "customers").await;
        assert_eq!(as_doc(&again[0]), first);
        // Replayed through a transform whose patterns match what it holds, they would be
        // masked twice: refused, and the journal says why.
        let again = dir.path().join("again.json");
        let steps = json!({ format!("{d}.*"): [{"hmac": "customer_id"}] });
        std::fs::write(&again, steps.to_string()).unwrap();
        let twice = env.dst_db("twice");
        let mapping = format!("{d}.*:{twice}");
        let out = run(&[
            "journal",
            "replay",
            &journal,
            "--to",
            &env.dst,
            "--ns",
            &mapping,
            "--transform",
            again.to_str().unwrap(),
            "--transform-key-file",
            &key,
        ]);
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(
            stderr(&out).contains("transformed twice"),
            "{}",
            stderr(&out)
        );
        assert!(!dst.list_database_names().await.unwrap().contains(&twice));
        let out = run(&["journal", "inspect", &journal]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(
            stdout(&out).contains(
                "transformed (replay without --transform): segment-000001.mfj by transform "
            ),
            "{}",
            stdout(&out)
        );
        // Another run with the same key masks the same; another key, differently.
        let other_db = env.dst_db("again");
        let argv = copy(&other_db, &key, None);
        let out = run(&argv.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(out.status.success(), "{}", stderr(&out));
        let same = as_doc(&dump(&dst, &other_db, "customers").await[0]);
        assert_eq!(same.get("email"), first.get("email"));
        let other_key = key_file(dir.path(), "another-key-of-some-length-42");
        let third_db = env.dst_db("third");
        let argv = copy(&third_db, &other_key, None);
        let out = run(&argv.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(out.status.success(), "{}", stderr(&out));
        let third = as_doc(&dump(&dst, &third_db, "customers").await[0]);
        assert_ne!(third.get("email"), first.get("email"));
        assert_ne!(third.get("customer_id"), Some(&Bson::Int64(masked_id)));
    });
}

#[test]
fn a_rerun_with_another_transform_or_key_copies_again_instead_of_continuing() {
    TestEnv::start().run(|env| async move {
        let (s, d) = (env.src_db("remask"), env.dst_db("remask"));
        insert_raw(&env.src_client().await, &s, "customers", &customers(30)).await;
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state.db").display().to_string();
        let ns = format!("{s}.customers:{d}.customers");
        let write = |name: &str, steps: serde_json::Value| {
            let path = dir.path().join(name);
            std::fs::write(
                &path,
                json!({ format!("{s}.customers"): steps }).to_string(),
            )
            .unwrap();
            path.display().to_string()
        };
        let redacting = write("redact.json", json!([{"redact": "ssn"}]));
        let hashing = write("hmac.json", json!([{"hmac": "ssn"}]));
        let (key, other_key) = (
            key_file(dir.path(), KEY),
            key_file(dir.path(), "another-key-of-some-length-42"),
        );
        let copy = |transform: &str, key: &str| {
            let out = job(
                "copy",
                &env,
                &ns,
                &[
                    "--state",
                    &state,
                    "--transform",
                    transform,
                    "--transform-key-file",
                    key,
                    "--json",
                    "--quiet",
                ],
            );
            assert!(out.status.success(), "{}", stderr(&out));
            let summary: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
            (
                summary["docs"].as_u64().unwrap(),
                summary["job_key"].clone(),
            )
        };
        let dst = env.dst_client().await;
        let ssn = || async {
            as_doc(&dump(&dst, &d, "customers").await[3])
                .get("ssn")
                .cloned()
        };

        let (docs, redacted_job) = copy(&redacting, &key);
        assert_eq!(docs, 30);
        assert_eq!(ssn().await, Some(Bson::String("REDACTED".into())));
        // The same transform again: the same job, already complete.
        assert_eq!(copy(&redacting, &key), (0, redacted_job.clone()));
        // A changed transform is another job: everything is written its way, rather than the
        // old checkpoint saying there is nothing left to do.
        let (docs, hashed_job) = copy(&hashing, &key);
        assert_eq!(docs, 30);
        assert_ne!(hashed_job, redacted_job);
        let hashed = ssn().await;
        assert!(
            matches!(&hashed, Some(Bson::String(h)) if h.len() == 64),
            "{hashed:?}"
        );
        // So is the same transform with another key; the key itself is nowhere in the state.
        let (docs, other_job) = copy(&hashing, &other_key);
        assert_eq!(docs, 30);
        assert_ne!(other_job, hashed_job);
        assert_ne!(ssn().await, hashed);
        // The key of a transform without `hmac` steps does not matter.
        assert_eq!(copy(&redacting, &other_key), (0, redacted_job));
        for secret in [KEY, "another-key-of-some-length-42"] {
            let state_dir = dir.path().join("state.db");
            let kept: Vec<String> = files_holding(dir.path(), secret.as_bytes())
                .into_iter()
                .filter(|f| f.starts_with(state_dir.to_str().unwrap()))
                .collect();
            assert_eq!(kept, Vec::<String>::new(), "the key in the state");
        }
        // Nor is a transform taken by a reverse sync, which writes back to the source.
        let out = run(&[
            "sync",
            "--reverse-of",
            "0123456789abcdef",
            "--from",
            &env.dst,
            "--to",
            &env.src,
            "--state",
            &state,
            "--transform",
            &hashing,
            "--transform-key-file",
            &key,
        ]);
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(
            stderr(&out).contains("--transform: --reverse-of"),
            "{}",
            stderr(&out)
        );
    });
}

#[test]
fn a_bad_transform_is_refused_before_anything_is_written_naming_file_namespace_and_step() {
    TestEnv::start().run(|env| async move {
        let (s, d) = (env.src_db("bad"), env.dst_db("bad"));
        insert_raw(&env.src_client().await, &s, "customers", &customers(5)).await;
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state.db").display().to_string();
        let ns = format!("{s}.customers:{d}.customers");
        let key = key_file(dir.path(), KEY);
        let pattern = format!("{s}.customers");
        let cases = [
            (
                "{not json".to_string(),
                vec!["bad.json", "key must be a string"],
            ),
            (
                json!({&pattern: [{"drop": "a"}, {"mask": "email"}]}).to_string(),
                vec!["bad.json", &pattern, "step 2", "unknown step"],
            ),
            (
                json!({&pattern: [{"drop": "_id"}]}).to_string(),
                vec![
                    "bad.json",
                    &pattern,
                    "step 1",
                    "`_id` cannot be transformed",
                ],
            ),
        ];
        for (text, expected) in &cases {
            let file = dir.path().join("bad.json");
            std::fs::write(&file, text).unwrap();
            let file = file.display().to_string();
            let out = job(
                "copy",
                &env,
                &ns,
                &[
                    "--state",
                    &state,
                    "--transform",
                    &file,
                    "--transform-key-file",
                    &key,
                ],
            );
            assert_eq!(out.status.code(), Some(2), "{text}: {}", stderr(&out));
            for part in expected {
                assert!(
                    stderr(&out).contains(part),
                    "{text}: {part} in {}",
                    stderr(&out)
                );
            }
        }
        // hmac without a key.
        let file = dir.path().join("hmac.json");
        std::fs::write(&file, json!({&pattern: [{"hmac": "email"}]}).to_string()).unwrap();
        let file = file.display().to_string();
        let out = job(
            "copy",
            &env,
            &ns,
            &["--state", &state, "--transform", &file],
        );
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(
            stderr(&out).contains("hmac email` needs a key"),
            "{}",
            stderr(&out)
        );
        // A move refuses a transform without its flag, and with it moves the masked copies.
        let out = job(
            "move",
            &env,
            &ns,
            &[
                "--state",
                &state,
                "--transform",
                &file,
                "--transform-key-file",
                &key,
            ],
        );
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(
            stderr(&out).contains("--allow-transform-move"),
            "{}",
            stderr(&out)
        );
        let dst = env.dst_client().await;
        assert!(
            collection_names(&dst, &d).await.is_empty(),
            "nothing written"
        );
        let out = job(
            "move",
            &env,
            &ns,
            &[
                "--state",
                &state,
                "--transform",
                &file,
                "--transform-key-file",
                &key,
                "--allow-transform-move",
            ],
        );
        assert!(out.status.success(), "{}", stderr(&out));
        let moved = dump(&dst, &d, "customers").await;
        assert_eq!(moved.len(), 5);
        assert!(as_doc(&moved[0]).get_str("email").unwrap().len() == 64);
        let src = env.src_client().await;
        assert!(
            dump(&src, &s, "customers").await.is_empty(),
            "the originals are gone"
        );
    });
}

#[test]
fn a_sync_writes_only_masked_values_as_the_source_changes() {
    TestEnv::start().run(|env| async move {
        let (s, d) = (env.src_db("msync"), env.dst_db("msync"));
        let src = env.src_client().await;
        insert_raw(&src, &s, "customers", &customers(20)).await;
        let dir = tempfile::tempdir().unwrap();
        let transform = transform_file(dir.path(), &s);
        let key = key_file(dir.path(), KEY);
        let state = dir.path().join("state.db").display().to_string();
        let ns = format!("{s}.customers:{d}.customers");
        let argv = [
            "sync",
            "--from",
            &env.src,
            "--to",
            &env.dst,
            "--ns",
            &ns,
            "--state",
            &state,
            "--transform",
            &transform,
            "--transform-key-file",
            &key,
            "--until-caught-up",
            "--quiet",
        ];
        let out = run(&argv);
        assert!(out.status.success(), "{}", stderr(&out));
        // Changes to a masked field, an insert and a replacement.
        let c = src.database(&s).collection::<Document>("customers");
        c.update_one(
            doc! { "_id": 3 },
            doc! { "$set": { "email": "new@example.com", "ssn": "999" } },
        )
        .await
        .unwrap();
        c.insert_one(doc! { "_id": 100, "email": "late@example.com", "tel": "1" })
            .await
            .unwrap();
        c.replace_one(
            doc! { "_id": 4 },
            doc! { "email": "r@example.com", "ssn": 5 },
        )
        .await
        .unwrap();
        let mut again = argv.to_vec();
        again.push("--json");
        let out = run(&again);
        assert!(out.status.success(), "{}", stderr(&out));
        // The continuous verification compares through the transform: nothing to repair.
        let summary: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
        let verification = &summary["sync"]["verification"];
        assert_eq!(verification["mismatches"], 0, "{summary}");
        let dst = env.dst_client().await;
        for doc in dump(&dst, &d, "customers").await {
            let doc = as_doc(&doc);
            let email = doc.get_str("email").unwrap();
            assert!(!email.contains('@'), "{doc}");
            assert!(doc.get("tel").is_none(), "{doc}");
            assert!(
                matches!(doc.get("ssn"), None | Some(Bson::Null))
                    || doc.get_str("ssn") == Ok("REDACTED"),
                "{doc}"
            );
        }
        let out = job(
            "verify",
            &env,
            &ns,
            &[
                "--documents-only",
                "--transform",
                &transform,
                "--transform-key-file",
                &key,
            ],
        );
        assert!(out.status.success(), "{}", stdout(&out));
    });
}

#[test]
fn plan_lists_each_namespaces_steps_and_a_pattern_that_matches_nothing() {
    TestEnv::start().run(|env| async move {
        let (s, d) = (env.src_db("tplan"), env.dst_db("tplan"));
        let src = env.src_client().await;
        insert_raw(&src, &s, "customers", &customers(3)).await;
        insert_raw(&src, &s, "orders", &orders(3)).await;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plan.json");
        let text = json!({
            format!("{s}.customers"): [{"drop": "internal.notes"}, {"hmac": "email"}],
            format!("{s}.*"): [{"redact": "ssn"}],
            "nowhere.*": [{"drop": "x"}],
        });
        std::fs::write(&path, text.to_string()).unwrap();
        let file = path.display().to_string();
        let ns = format!("{s}.*:{d}");
        let out = job("plan", &env, &ns, &["--transform", &file]);
        let text = stdout(&out);
        assert!(
            text.contains(&format!(
                "transform of {s}.customers: drop internal.notes, hmac email, redact ssn"
            )),
            "{text}"
        );
        assert!(
            text.contains(&format!("transform of {s}.orders: redact ssn")),
            "{text}"
        );
        assert!(
            text.contains("note: transform pattern nowhere.* matches no namespace of the job"),
            "{text}"
        );
        assert!(
            text.contains("problem: the transform's hmac steps need a key"),
            "{text}"
        );
        let key = key_file(dir.path(), KEY);
        let out = job(
            "plan",
            &env,
            &ns,
            &["--transform", &file, "--transform-key-file", &key, "--json"],
        );
        let plan: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
        assert_eq!(plan["blocked"], false, "{plan}");
        let customers = &plan["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["source"] == format!("{s}.customers"))
            .cloned()
            .unwrap();
        assert_eq!(
            customers["transform"],
            json!(["drop internal.notes", "hmac email", "redact ssn"])
        );
        assert!(
            collection_names(&env.dst_client().await, &d)
                .await
                .is_empty(),
            "a plan writes nothing"
        );
    });
}

#[test]
fn a_replay_transforms_a_journal_of_plain_writes() {
    TestEnv::start().run(|env| async move {
        let (s, d) = (env.src_db("trep"), env.dst_db("trep"));
        insert_raw(&env.src_client().await, &s, "customers", &customers(10)).await;
        let dir = tempfile::tempdir().unwrap();
        let journal = dir.path().join("journal").display().to_string();
        let state = dir.path().join("state.db").display().to_string();
        let ns = format!("{s}.customers:{d}.customers");
        let out = job(
            "copy",
            &env,
            &ns,
            &["--state", &state, "--journal", &journal, "--quiet"],
        );
        assert!(out.status.success(), "{}", stderr(&out));
        // The journal's namespace is the destination's: the transform names it.
        let path = dir.path().join("replay.json");
        let text = json!({ format!("{d}.customers"): [{"redact": "ssn"}, {"drop": "tel"}] });
        std::fs::write(&path, text.to_string()).unwrap();
        let file = path.display().to_string();
        let masked = env.dst_db("trep_masked");
        let mapping = format!("{d}.customers:{masked}.customers");
        let out = run(&[
            "journal",
            "replay",
            &journal,
            "--to",
            &env.dst,
            "--ns",
            &mapping,
            "--transform",
            &file,
            "--quiet",
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
        let replayed = dump(&env.dst_client().await, &masked, "customers").await;
        assert_eq!(replayed.len(), 10);
        for doc in replayed {
            let doc = as_doc(&doc);
            assert_eq!(doc.get_str("ssn"), Ok("REDACTED"), "{doc}");
            assert!(doc.get("tel").is_none(), "{doc}");
            assert!(
                doc.get_str("email").unwrap().contains('@'),
                "untouched: {doc}"
            );
        }
    });
}

#[test]
fn a_service_job_takes_a_transform_and_the_services_key() {
    let dir = tempfile::tempdir().unwrap();
    let key = key_file(dir.path(), KEY);
    let with_key = common::service::Serve::with_state(&dir.path().join("jobs.json"))
        .arg("--transform-key-file")
        .arg(&key)
        .start();
    let without_key = common::service::Service::start(&dir.path().join("other.json"));
    TestEnv::start().run(|env| async move {
        let (s, d) = (env.src_db("tsvc"), env.dst_db("tsvc"));
        insert_raw(&env.src_client().await, &s, "customers", &customers(20)).await;
        let pattern = format!("{s}.customers");
        let body = json!({
            "from": env.src, "to": env.dst, "namespaces": [format!("{s}.customers:{d}.customers")],
            "transform": { &pattern: [{"hmac": "email"}, {"redact": "ssn"}] },
        });
        let (status, refused) = without_key.post("/api/jobs", body.clone()).await;
        assert_eq!(status, 400, "{refused}");
        assert!(
            refused.to_string().contains("need the service's key"),
            "{refused}"
        );
        let mut bad = body.clone();
        bad["transform"] = json!({ &pattern: [{"drop": "_id"}] });
        let (status, refused) = with_key.post("/api/jobs", bad).await;
        assert_eq!(status, 400, "{refused}");
        assert!(refused.to_string().contains("step 1"), "{refused}");
        let (status, job) = with_key.post("/api/jobs", body.clone()).await;
        assert_eq!(status, 202, "{job}");
        let job = with_key
            .wait_for(&job["id"], "the copy", |j| j["state"] == "completed")
            .await;
        assert_eq!(
            job["spec"]["transform"][&pattern][0]["hmac"], "email",
            "{job}"
        );
        let copied = dump(&env.dst_client().await, &d, "customers").await;
        assert_eq!(copied.len(), 20);
        let first = as_doc(&copied[0]);
        assert_eq!(first.get_str("email").unwrap().len(), 64, "{first}");
        assert_eq!(first.get_str("ssn"), Ok("REDACTED"), "{first}");
        // A transformed sync cannot be reversed: its destination holds masked documents, and
        // writing them back would overwrite the originals. Committed, it says so in its
        // checkpoint, which the command line's --reverse-of reads.
        let synced = format!("{s}.customers:{d}.synced");
        let mut sync = body.clone();
        sync["mode"] = json!("sync");
        sync["namespaces"] = json!([synced]);
        let (status, job) = with_key.post("/api/jobs", sync.clone()).await;
        assert_eq!(status, 202, "{job}");
        let id = job["id"].clone();
        with_key
            .wait_for(&id, "ready to commit", |j| j["can_commit"]["ok"] == true)
            .await;
        let (status, job) = with_key
            .post(&format!("/api/jobs/{id}/commit"), json!({}))
            .await;
        assert_eq!(status, 200, "{job}");
        with_key
            .wait_for(&id, "the commit", |j| j["state"] == "completed")
            .await;
        let (status, refused) = with_key
            .post(&format!("/api/jobs/{id}/reverse"), json!({}))
            .await;
        assert_eq!(status, 409, "{refused}");
        assert!(refused.to_string().contains("has a transform"), "{refused}");
        assert!(with_key.stop(), "the service stops cleanly");
        let mut forward = mongoferry::spec::JobSpec::new(&env.src, &env.dst, &[]);
        forward.endpoints.namespaces = vec![synced];
        forward.mode = Some(mongoferry::spec::Mode::Sync);
        forward.transform = Some(serde_json::from_value(sync["transform"].clone()).unwrap());
        let mut forward = forward.validate().unwrap();
        forward.transform_key = Some(mongoferry::engine::transform::HmacKey::new(KEY.as_bytes()));
        let job_key = forward.job_key().0 .0;
        let state = dir.path().join("copy-state.db").display().to_string();
        let out = run(&[
            "sync",
            "--reverse-of",
            &job_key,
            "--from",
            &env.dst,
            "--to",
            &env.src,
            "--state",
            &state,
        ]);
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(stderr(&out).contains("has a transform"), "{}", stderr(&out));
        assert_eq!(
            count_docs(&env.src_client().await, &s, "customers").await,
            20,
            "the source is untouched"
        );
        // The key is nowhere in what the service kept, only in its own file.
        assert_eq!(files_holding(dir.path(), KEY.as_bytes()), vec![key]);
    });
}

/// The files under `dir` (recursively) whose bytes contain `needle`.
fn files_holding(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(files_holding(&path, needle));
        } else if std::fs::read(&path)
            .unwrap_or_default()
            .windows(needle.len())
            .any(|w| w == needle)
        {
            found.push(path.display().to_string());
        }
    }
    found
}
