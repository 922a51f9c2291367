//! The journal end to end: `copy --journal`, then `journal inspect`, `replay` and `export`
//! against real servers; documents compared byte for byte, exports parsed back by independent
//! parsers (pymongo's `bson.json_util`, the bson crate's), damaged journals reported as
//! documented.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use mongodb::bson::{doc, Bson, RawDocumentBuf};
use mongoferry::journal::writer::SegmentWriter;
use mongoferry::journal::JournalConfig;
use mongoferry::service::job::JobState;
use mongoferry::service::manager::JobManager;
use mongoferry::spec::JobSpec;
use serde_json::{json, Value};

const LIMIT: Duration = Duration::from_secs(90);

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn path_str(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

/// Runs `mongoferry copy` of `namespaces` with a journal in `journal`.
async fn copy_journaled(
    env: &TestEnv,
    namespaces: &[String],
    journal: &Path,
    extra: &[&str],
) -> Value {
    let mut list = args(&[
        "copy", "--from", &env.src, "--to", &env.dst, "--json", "--quiet",
    ]);
    for ns in namespaces {
        list.extend(args(&["--ns", ns]));
    }
    list.extend(args(&["--journal", &path_str(journal)]));
    list.extend(args(extra));
    let out = mongoferry_async(list, LIMIT).await;
    assert!(out.status.success(), "copy failed: {}", stderr(&out));
    serde_json::from_str(stdout(&out).trim()).unwrap()
}

async fn inspect_json(journal: &Path) -> (Value, std::process::Output) {
    let out = mongoferry_async(
        args(&["journal", "inspect", &path_str(journal), "--json"]),
        LIMIT,
    )
    .await;
    let report = serde_json::from_str(stdout(&out).trim())
        .unwrap_or_else(|e| panic!("inspect printed no JSON ({e}): {}", stderr(&out)));
    (report, out)
}

/// Documents sorted by their bytes: the same multiset compares equal whatever the write order.
fn sorted(mut docs: Vec<RawDocumentBuf>) -> Vec<RawDocumentBuf> {
    docs.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    docs
}

fn assert_bytes_equal(what: &str, a: Vec<RawDocumentBuf>, b: Vec<RawDocumentBuf>) {
    let (a, b) = (sorted(a), sorted(b));
    assert_eq!(a.len(), b.len(), "{what}: document counts differ");
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(
            x.as_bytes(),
            y.as_bytes(),
            "{what}: documents differ:\n {x:?}\n {y:?}"
        );
    }
}

/// Concatenated BSON documents, split.
fn split_bson(bytes: &[u8]) -> Vec<RawDocumentBuf> {
    let mut docs = vec![];
    let mut at = 0;
    while at < bytes.len() {
        let len = i32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        docs.push(RawDocumentBuf::from_bytes(bytes[at..at + len].to_vec()).unwrap());
        at += len;
    }
    docs
}

fn segments(journal: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(journal)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "mfj"))
        .collect();
    files.sort();
    files
}

#[test]
fn copy_with_journal_then_replay_into_an_empty_destination() {
    TestEnv::start().run(|env| async move {
        let (s, d) = (env.src_db("jr"), env.dst_db("jr"));
        let src = env.src_client().await;
        let types = every_type_documents();
        insert_raw(&src, &s, "all", &types).await;
        insert_raw(&src, &s, "orders", &sample_docs(3000, 1000)).await;
        let tmp = tempfile::tempdir().unwrap();
        let journal = tmp.path().join("journal");
        let summary = copy_journaled(
            &env,
            &[format!("{s}.all:{d}.all"), format!("{s}.orders:{d}.orders")],
            &journal,
            &[
                "--workers",
                "3",
                "--batch-size",
                "100",
                "--journal-segment-bytes",
                "4096",
            ],
        )
        .await;
        assert_eq!(summary["docs"], 3016);
        assert_eq!(summary["journal"]["records"], 3016);
        assert_eq!(summary["journal"]["run"], 1);
        let per_doc = summary["journal"]["bytes_per_doc"].as_f64().unwrap();
        assert!(
            per_doc > 0.0 && per_doc < 300.0,
            "compressed below the documents' size: {per_doc}"
        );

        let (report, out) = inspect_json(&journal).await;
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(report["health"], "intact");
        assert_eq!(report["state"], "closed");
        assert_eq!(report["records"], 3016);
        assert_eq!(report["namespaces"][format!("{d}.all")], 16);
        assert_eq!(report["namespaces"][format!("{d}.orders")], 3000);
        assert!(
            report["segments"].as_array().unwrap().len() >= 2,
            "segments roll over: {report}"
        );
        assert!(report["first_ms"].as_i64().unwrap() <= report["last_ms"].as_i64().unwrap());
        let text =
            mongoferry_async(args(&["journal", "inspect", &path_str(&journal)]), LIMIT).await;
        assert!(text.status.success());
        assert!(
            stdout(&text).contains("checksums: intact"),
            "{}",
            stdout(&text)
        );
        assert!(
            stdout(&text).contains(&format!("{d}.orders")),
            "{}",
            stdout(&text)
        );

        // No URI, host or port of either server is in the journal.
        for file in std::fs::read_dir(&journal).unwrap() {
            let bytes = std::fs::read(file.unwrap().path()).unwrap();
            let text = String::from_utf8_lossy(&bytes);
            for needle in ["mongodb://", &env.src[10..], &env.dst[10..]] {
                assert!(!text.contains(needle), "{needle} found in the journal");
            }
        }

        // Into an empty destination: every namespace under its own name.
        let dst = env.dst_client().await;
        dst.database(&d).drop().await.unwrap();
        let out = mongoferry_async(
            args(&[
                "journal",
                "replay",
                &path_str(&journal),
                "--to",
                &env.dst,
                "--json",
                "--workers",
                "3",
                "--batch-size",
                "7",
            ]),
            LIMIT,
        )
        .await;
        assert!(out.status.success(), "{}", stderr(&out));
        let replayed: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
        assert_eq!(replayed["docs"], 3016);
        assert!(replayed["torn_tail"].is_null());
        assert_eq!(assert_same(&env, (&s, "all"), (&d, "all")).await, 16);
        assert_eq!(
            assert_same(&env, (&s, "orders"), (&d, "orders")).await,
            3000
        );

        // Renamed, and again (idempotent): the same documents, not twice as many.
        let other = env.src_db("jr_replayed");
        for _ in 0..2 {
            let out = mongoferry_async(
                args(&[
                    "journal",
                    "replay",
                    &path_str(&journal),
                    "--to",
                    &env.src,
                    "--quiet",
                    "--ns",
                    &format!("{d}.all:{other}.types"),
                    "--rate",
                    "100000",
                ]),
                LIMIT,
            )
            .await;
            assert!(out.status.success(), "{}", stderr(&out));
            assert!(
                stdout(&out).contains("replayed 16 docs"),
                "{}",
                stdout(&out)
            );
        }
        assert_bytes_equal(
            "renamed replay",
            dump(&src, &s, "all").await,
            dump(&src, &other, "types").await,
        );
        assert_eq!(
            collection_names(&src, &other).await,
            vec!["types".to_string()]
        );

        // A namespace the journal does not hold.
        let out = mongoferry_async(
            args(&[
                "journal",
                "replay",
                &path_str(&journal),
                "--to",
                &env.dst,
                "--ns",
                "nope.nothing",
            ]),
            LIMIT,
        )
        .await;
        assert_eq!(out.status.code(), Some(1));
        assert!(
            stderr(&out).contains("namespace nope.nothing is not in journal"),
            "{}",
            stderr(&out)
        );
    });
}

#[test]
fn export_parses_back_byte_equal_with_independent_parsers() {
    TestEnv::start().run(|env| async move {
        let (s, d) = (env.src_db("jx"), env.dst_db("jx"));
        let src = env.src_client().await;
        let types = every_type_documents();
        // pymongo reads `$symbol` as a plain string (the type is deprecated); a copy without it
        // is what pymongo can give back byte for byte.
        let without_symbol: Vec<RawDocumentBuf> = types
            .iter()
            .map(|raw| {
                let mut doc = as_doc(raw);
                doc.remove("symbol");
                RawDocumentBuf::from_document(&doc).unwrap()
            })
            .collect();
        insert_raw(&src, &s, "all", &types).await;
        insert_raw(&src, &s, "nosym", &without_symbol).await;
        let tmp = tempfile::tempdir().unwrap();
        let journal = tmp.path().join("journal");
        copy_journaled(
            &env,
            &[format!("{s}.all:{d}.all"), format!("{s}.nosym:{d}.nosym")],
            &journal,
            &["--batch-size", "5"],
        )
        .await;
        let source_all = dump(&src, &s, "all").await;
        let source_nosym = dump(&src, &s, "nosym").await;
        let export = |ns: String, format: &str, out: Option<PathBuf>| {
            let journal = path_str(&journal);
            let format = format.to_string();
            async move {
                let mut list = args(&[
                    "journal", "export", &journal, "--format", &format, "--ns", &ns,
                ]);
                if let Some(out) = out {
                    list.extend(args(&["--out", &path_str(&out)]));
                }
                let out = mongoferry_async(list, LIMIT).await;
                assert!(out.status.success(), "{}", stderr(&out));
                out
            }
        };

        // NDJSON, parsed back with the bson crate's Extended JSON parser (all types).
        let ndjson = tmp.path().join("all.ndjson");
        export(format!("{d}.all"), "ndjson", Some(ndjson.clone())).await;
        let text = std::fs::read_to_string(&ndjson).unwrap();
        assert!(text.ends_with('\n'));
        let parsed: Vec<RawDocumentBuf> = text
            .lines()
            .map(|line| {
                let value: Value = serde_json::from_str(line).unwrap();
                match Bson::try_from(value).unwrap() {
                    Bson::Document(doc) => RawDocumentBuf::from_document(&doc).unwrap(),
                    other => panic!("not a document: {other:?}"),
                }
            })
            .collect();
        assert_bytes_equal(
            "bson crate parse of the NDJSON export",
            source_all.clone(),
            parsed,
        );
        assert!(text.contains(r#""$numberDouble":"-0.0""#) && text.contains(r#""$numberLong":"#));

        // Without --out the same lines go to stdout.
        let out = export(format!("{d}.all"), "ndjson", None).await;
        assert_eq!(stdout(&out), text);

        // NDJSON, parsed back by pymongo in a separate process.
        let ndjson = tmp.path().join("nosym.ndjson");
        export(format!("{d}.nosym"), "ndjson", Some(ndjson.clone())).await;
        let bson_out = tmp.path().join("pymongo.bson");
        let python = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
        assert!(
            python.exists(),
            "{} missing: run scripts/setup-test-env.sh",
            python.display()
        );
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/extjson_to_bson.py");
        let (ndjson_arg, bson_arg) = (ndjson.clone(), bson_out.clone());
        let parsed = tokio::task::spawn_blocking(move || {
            Command::new(python)
                .arg(script)
                .arg(ndjson_arg)
                .arg(bson_arg)
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        assert!(
            parsed.status.success(),
            "pymongo: {}",
            String::from_utf8_lossy(&parsed.stderr)
        );
        let by_pymongo = split_bson(&std::fs::read(&bson_out).unwrap());
        assert_eq!(by_pymongo.len(), without_symbol.len());
        assert_bytes_equal(
            "pymongo parse of the NDJSON export",
            source_nosym,
            by_pymongo,
        );

        // BSON, as mongorestore and bsondump read it.
        let bson_file = tmp.path().join("all.bson");
        export(format!("{d}.all"), "bson", Some(bson_file.clone())).await;
        assert_bytes_equal(
            "BSON export",
            source_all,
            split_bson(&std::fs::read(&bson_file).unwrap()),
        );

        // Two namespaces and no --ns: which one is for the operator to say.
        let out = mongoferry_async(
            args(&["journal", "export", &path_str(&journal), "--format", "bson"]),
            LIMIT,
        )
        .await;
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(
            stderr(&out).contains("holds 2 namespaces"),
            "{}",
            stderr(&out)
        );
        assert!(stdout(&out).is_empty());
    });
}

#[test]
fn torn_and_corrupt_journals_give_the_documented_errors() {
    TestEnv::start().run(|env| async move {
        let (s, d) = (env.src_db("jd"), env.dst_db("jd"));
        let src = env.src_client().await;
        insert_raw(&src, &s, "docs", &sample_docs(4000, 1000)).await;
        let tmp = tempfile::tempdir().unwrap();
        let journal = tmp.path().join("journal");
        copy_journaled(
            &env,
            &[format!("{s}.docs:{d}.docs")],
            &journal,
            &["--journal-segment-bytes", "4096"],
        )
        .await;
        let files = segments(&journal);
        assert!(
            files.len() >= 3,
            "several frames, one per segment: {files:?}"
        );
        let dst = env.dst_client().await;

        // A flipped bit: reported with file and offset; nothing is replayed or exported.
        let first = files[0].clone();
        let original = std::fs::read(&first).unwrap();
        let mut flipped = original.clone();
        flipped[100] ^= 0x10;
        std::fs::write(&first, &flipped).unwrap();
        let (report, out) = inspect_json(&journal).await;
        assert_eq!(out.status.code(), Some(1));
        assert_eq!(report["health"], "corrupt");
        let expected = format!(
            "{} is corrupt at byte 24: frame payload checksum mismatch",
            first.display()
        );
        assert!(stderr(&out).contains(&expected), "{}", stderr(&out));
        let text =
            mongoferry_async(args(&["journal", "inspect", &path_str(&journal)]), LIMIT).await;
        assert!(
            stdout(&text).contains("checksums: CORRUPT"),
            "{}",
            stdout(&text)
        );
        let replay_db = env.dst_db("jd_replay");
        let out = mongoferry_async(
            args(&[
                "journal",
                "replay",
                &path_str(&journal),
                "--to",
                &env.dst,
                "--ns",
                &format!("{d}.docs:{replay_db}.docs"),
            ]),
            LIMIT,
        )
        .await;
        assert_eq!(out.status.code(), Some(1));
        assert!(stderr(&out).contains(&expected), "{}", stderr(&out));
        assert!(
            !dst.list_database_names()
                .await
                .unwrap()
                .contains(&replay_db),
            "nothing written"
        );
        let export_file = tmp.path().join("out.bson");
        let out = mongoferry_async(
            args(&[
                "journal",
                "export",
                &path_str(&journal),
                "--format",
                "bson",
                "--out",
                &path_str(&export_file),
            ]),
            LIMIT,
        )
        .await;
        assert_eq!(out.status.code(), Some(1));
        assert!(stderr(&out).contains(&expected), "{}", stderr(&out));
        assert!(!export_file.exists());
        std::fs::write(&first, &original).unwrap();

        // A closed journal whose last (sealed) segment was cut or lost is corrupt, not torn:
        // replay and export refuse it before writing anything.
        let last = files.last().unwrap().clone();
        let whole_last = std::fs::read(&last).unwrap();
        let len = whole_last.len() as u64;
        let cut = |to: u64| {
            std::fs::OpenOptions::new()
                .write(true)
                .open(&last)
                .unwrap()
                .set_len(to)
                .unwrap()
        };
        for damage in ["cut", "deleted"] {
            match damage {
                "cut" => cut(len - 100),
                _ => std::fs::remove_file(&last).unwrap(),
            }
            let (report, out) = inspect_json(&journal).await;
            assert_eq!(out.status.code(), Some(1), "{damage}");
            assert_eq!(report["health"], "corrupt", "{damage}: {report}");
            assert!(
                stderr(&out).contains(&last.display().to_string()),
                "{}",
                stderr(&out)
            );
            let out = mongoferry_async(
                args(&[
                    "journal",
                    "replay",
                    &path_str(&journal),
                    "--to",
                    &env.dst,
                    "--ns",
                    &format!("{d}.docs:{replay_db}.docs"),
                ]),
                LIMIT,
            )
            .await;
            assert_eq!(out.status.code(), Some(1), "{damage}: {}", stderr(&out));
            assert!(
                stderr(&out).contains("sealed"),
                "{damage}: {}",
                stderr(&out)
            );
            assert!(
                !dst.list_database_names()
                    .await
                    .unwrap()
                    .contains(&replay_db),
                "{damage}: nothing written"
            );
            let out = mongoferry_async(
                args(&[
                    "journal",
                    "export",
                    &path_str(&journal),
                    "--format",
                    "bson",
                    "--out",
                    &path_str(&export_file),
                ]),
                LIMIT,
            )
            .await;
            assert_eq!(out.status.code(), Some(1), "{damage}: {}", stderr(&out));
            assert!(!export_file.exists(), "{damage}");
            std::fs::write(&last, &whole_last).unwrap();
        }

        // A writer killed mid-frame leaves its segment open and cut: read up to the last whole
        // frame, with a clear message.
        let manifest_path = journal.join("manifest.json");
        let mut manifest: Value =
            serde_json::from_str(&std::fs::read_to_string(&manifest_path).unwrap()).unwrap();
        manifest["state"] = json!("open");
        let segments_listed = manifest["segments"].as_array_mut().unwrap();
        segments_listed.last_mut().unwrap()["state"] = json!("open");
        std::fs::write(&manifest_path, manifest.to_string()).unwrap();
        cut(len - 100);
        let (report, out) = inspect_json(&journal).await;
        assert_eq!(out.status.code(), Some(1));
        assert_eq!(report["health"], "torn");
        let whole = report["records"].as_u64().unwrap();
        assert!(whole > 0 && whole < 4000, "{report}");
        assert_eq!(report["torn_tail"]["records_read"], whole);
        // The cut frame starts at the segment's first frame (byte 24) or, when the writer put
        // several batches' frames into the last segment, at a later one.
        let torn = stderr(&out);
        let at = torn
            .split("has a torn tail at byte ")
            .nth(1)
            .and_then(|rest| rest.split(' ').next())
            .and_then(|offset| offset.parse::<u64>().ok());
        assert!(
            at.is_some_and(|at| at >= 24 && at < len - 100)
                && torn.contains("(frame payload incomplete"),
            "{torn}"
        );
        let out = mongoferry_async(
            args(&[
                "journal",
                "replay",
                &path_str(&journal),
                "--to",
                &env.dst,
                "--json",
                "--ns",
                &format!("{d}.docs:{replay_db}.docs"),
            ]),
            LIMIT,
        )
        .await;
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(
            stderr(&out).contains("warning: journal") && stderr(&out).contains("torn tail"),
            "{}",
            stderr(&out)
        );
        let summary: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
        assert_eq!(summary["docs"], whole);
        assert!(!summary["torn_tail"].is_null());
        assert_eq!(dump(&dst, &replay_db, "docs").await.len() as u64, whole);
        let out = mongoferry_async(
            args(&[
                "journal",
                "export",
                &path_str(&journal),
                "--format",
                "bson",
                "--out",
                &path_str(&export_file),
            ]),
            LIMIT,
        )
        .await;
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(stderr(&out).contains("torn tail"), "{}", stderr(&out));
        assert_eq!(
            split_bson(&std::fs::read(&export_file).unwrap()).len() as u64,
            whole
        );

        // Not a journal at all.
        let out =
            mongoferry_async(args(&["journal", "inspect", &path_str(tmp.path())]), LIMIT).await;
        assert_eq!(out.status.code(), Some(1));
        assert!(
            stderr(&out).contains("is not a mongoferry journal: no manifest.json"),
            "{}",
            stderr(&out)
        );
    });
}

#[test]
fn a_second_run_appends_and_replay_keeps_the_latest_documents() {
    TestEnv::start().run(|env| async move {
        let (s, d) = (env.src_db("jrun"), env.dst_db("jrun"));
        let src = env.src_client().await;
        insert_raw(&src, &s, "docs", &sample_docs(600, 200)).await;
        let tmp = tempfile::tempdir().unwrap();
        let journal = tmp.path().join("journal");
        let ns = [format!("{s}.docs:{d}.docs")];
        copy_journaled(&env, &ns, &journal, &["--batch-size", "10"]).await;
        src.database(&s)
            .collection::<mongodb::bson::Document>("docs")
            .update_many(doc! {}, doc! { "$set": { "status": "second run" } })
            .await
            .unwrap();
        let summary = copy_journaled(&env, &ns, &journal, &["--batch-size", "10"]).await;
        assert_eq!(summary["journal"]["run"], 2);
        let (report, out) = inspect_json(&journal).await;
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(
            (report["runs"].as_u64(), report["records"].as_u64()),
            (Some(2), Some(1200))
        );

        let replay_db = env.dst_db("jrun_replay");
        let out = mongoferry_async(
            args(&[
                "journal",
                "replay",
                &path_str(&journal),
                "--to",
                &env.dst,
                "--quiet",
                "--workers",
                "6",
                "--batch-size",
                "3",
                "--ns",
                &format!("{d}.docs:{replay_db}.docs"),
            ]),
            LIMIT,
        )
        .await;
        assert!(out.status.success(), "{}", stderr(&out));
        let dst = env.dst_client().await;
        assert_bytes_equal(
            "latest documents",
            dump(&src, &s, "docs").await,
            dump(&dst, &replay_db, "docs").await,
        );
    });
}

#[test]
fn a_journal_in_use_fails_the_copy_before_it_writes() {
    TestEnv::start().run(|env| async move {
        let (s, d) = (env.src_db("jlock"), env.dst_db("jlock"));
        insert_raw(&env.src_client().await, &s, "docs", &sample_docs(10, 100)).await;
        let tmp = tempfile::tempdir().unwrap();
        let config = JournalConfig::new(path_str(tmp.path()));
        let held = tokio::task::spawn_blocking(move || SegmentWriter::open(&config).unwrap())
            .await
            .unwrap();
        let out = mongoferry_async(
            args(&[
                "copy",
                "--from",
                &env.src,
                "--to",
                &env.dst,
                "--ns",
                &format!("{s}.docs:{d}.docs"),
                "--journal",
                &path_str(tmp.path()),
            ]),
            LIMIT,
        )
        .await;
        assert_eq!(out.status.code(), Some(1));
        assert!(
            stderr(&out).contains("is being written by another process"),
            "{}",
            stderr(&out)
        );
        assert!(!env
            .dst_client()
            .await
            .list_database_names()
            .await
            .unwrap()
            .contains(&d));
        drop(held);
    });
}

#[test]
fn a_service_job_keeps_a_journal() {
    TestEnv::start().run(|env| async move {
        let (s, d) = (env.src_db("jsvc"), env.dst_db("jsvc"));
        insert_raw(&env.src_client().await, &s, "docs", &sample_docs(700, 200)).await;
        let tmp = tempfile::tempdir().unwrap();
        let journal = tmp.path().join("svc");
        let manager =
            JobManager::open(None, common::memory_store(), Some(tmp.path().into())).unwrap();
        let ns = format!("{s}.docs:{d}.docs");
        let spec = |dir: String| JobSpec {
            workers: Some(2),
            batch_size: Some(50),
            journal: Some(JournalConfig::new(dir)),
            ..JobSpec::new(&env.src, &env.dst, &[&ns])
        };
        let err = manager
            .submit(spec(String::new()))
            .await
            .err()
            .expect("an empty dir is refused");
        assert!(err.to_string().contains("journal.dir"), "{err}");
        // A client names a journal under the service's root; it cannot pick a place of its own.
        let elsewhere = tempfile::tempdir().unwrap();
        for outside in [path_str(elsewhere.path()), "../escape".to_string()] {
            let err = manager.submit(spec(outside.clone())).await.err();
            let err = err.expect("a path outside the root is refused").to_string();
            assert!(err.contains("journal root"), "{outside}: {err}");
        }
        let rootless = JobManager::open(None, common::memory_store(), None).unwrap();
        let err = rootless.submit(spec("svc".into())).await.err().unwrap();
        assert!(err.to_string().contains("--journal-root"), "{err}");
        let (job, started) = manager.submit(spec("svc".into())).await.unwrap();
        assert!(started);
        assert_eq!(job.view().spec.journal.as_ref().unwrap().dir, "svc");
        let mut state = job.watch_state();
        tokio::time::timeout(Duration::from_secs(60), state.wait_for(|s| s.is_final()))
            .await
            .expect("the job ends")
            .unwrap();
        assert_eq!(job.state(), JobState::Completed, "{:?}", job.view().error);
        manager.shutdown(Duration::from_secs(5)).await;
        let (report, out) = inspect_json(&journal).await;
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(report["records"], 700);
        assert_eq!(report["namespaces"][format!("{d}.docs")], 700);
    });
}
