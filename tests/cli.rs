//! The `mongoferry copy` command line: summaries, exit statuses and one clear line per failure,
//! with passwords never printed.

mod common;

use std::time::{Duration, Instant};

use common::*;
use mongodb::bson::rawdoc;
use mongoferry::testkit::TestServer;

const LIMIT: Duration = Duration::from_secs(60);

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[test]
fn copy_prints_a_json_summary_and_copies() {
    TestEnv::start().run(|env| async move {
        let (s, d) = (env.src_db("cli"), env.dst_db("cli"));
        let docs = sample_docs(1234, 200);
        insert_raw(&env.src_client().await, &s, "orders", &docs).await;
        insert_raw(&env.src_client().await, &s, "customers", &docs[..10]).await;
        let out = mongoferry_async(
            args(&[
                "copy",
                "--from",
                &env.src,
                "--to",
                &env.dst,
                "--ns",
                &format!("{s}.orders:{d}.orders"),
                "--ns",
                &format!("{s}.customers:{d}.people"),
                "--workers",
                "3",
                "--batch-size",
                "100",
                "--json",
            ]),
            LIMIT,
        )
        .await;
        assert!(out.status.success(), "stderr: {}", stderr(&out));
        let summary: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
        assert_eq!(summary["docs"], 1244);
        assert_eq!(
            summary["namespaces"][0]["destination"],
            format!("{d}.orders")
        );
        assert_eq!(summary["namespaces"][1]["docs"], 10);
        assert_eq!(summary["workers"], 3);
        assert!(summary["docs_per_sec"].as_f64().unwrap() > 0.0);
        assert_same(&env, (&s, "orders"), (&d, "orders")).await;
        assert_same(&env, (&s, "customers"), (&d, "people")).await;

        // Without --json: a readable summary on stdout.
        let out = mongoferry_async(
            args(&[
                "copy",
                "--from",
                &env.src,
                "--to",
                &env.dst,
                "--ns",
                &format!("{s}.customers:{d}.people"),
            ]),
            LIMIT,
        )
        .await;
        assert!(out.status.success(), "stderr: {}", stderr(&out));
        assert!(stdout(&out).contains("copied 10 docs"), "{}", stdout(&out));
    });
}

#[test]
fn a_namespace_without_destination_keeps_its_name() {
    TestEnv::start().run(|env| async move {
        let s = env.src_db("keep");
        insert_raw(
            &env.src_client().await,
            &s,
            "c",
            &[rawdoc! { "_id": 1 }, rawdoc! { "_id": 2 }],
        )
        .await;
        let out = mongoferry_async(
            args(&[
                "copy",
                "--from",
                &env.src,
                "--to",
                &env.dst,
                "--ns",
                &format!("{s}.c"),
                "--json",
            ]),
            LIMIT,
        )
        .await;
        if env.src == env.dst {
            // One shared server (MONGOFERRY_TEST_URI): copying a namespace onto itself is refused.
            assert_eq!(out.status.code(), Some(2));
            assert!(stderr(&out).contains("onto itself"), "{}", stderr(&out));
            return;
        }
        assert!(out.status.success(), "{}", stderr(&out));
        let summary: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
        assert_eq!(summary["namespaces"][0]["destination"], format!("{s}.c"));
        assert_same(&env, (&s, "c"), (&s, "c")).await;
    });
}

/// A command line that must fail: its exit status and what its error line says.
struct Case {
    argv: Vec<String>,
    status: i32,
    says: Vec<String>,
}

/// Runs a copy that must fail; returns (exit code, the error line).
async fn failing(list: Vec<String>) -> (i32, String) {
    let started = Instant::now();
    let out = mongoferry_async(list, LIMIT).await;
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "failure took {:?}",
        started.elapsed()
    );
    assert!(!out.status.success());
    let err = stderr(&out);
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(lines.len(), 1, "exactly one error line: {err}");
    (out.status.code().unwrap(), lines[0].to_string())
}

#[test]
fn clear_errors_for_bad_input() {
    TestEnv::start().run(|env| async move {
        let s = env.src_db("e");
        insert_raw(&env.src_client().await, &s, "c", &[rawdoc! { "_id": 1 }]).await;
        let ns = format!("{s}.c:{}.c", env.dst_db("e"));
        let missing = format!("{s}.missing:{}.missing", env.dst_db("e"));
        let empty_db = format!("{}.*:{}", env.src_db("nothing"), env.dst_db("nothing"));
        // A server that is not there: bounded by --connect-timeout.
        let dead = "mongodb://127.0.0.1:9/?directConnection=true";
        let (src, dst) = (env.src.as_str(), env.dst.as_str());
        let case =
            |from: &str, to: &str, ns: &str, extra: &[&str], status: i32, says: &[&str]| Case {
                argv: [&["copy", "--from", from, "--to", to, "--ns", ns], extra]
                    .concat()
                    .iter()
                    .map(|a| a.to_string())
                    .collect(),
                status,
                says: says.iter().map(|p| p.to_string()).collect(),
            };
        let not_found = format!("namespace {s}.missing not found on the source");
        let did_you_mean = format!("not found on the source; did you mean {s}.c?");
        let cases = [
            case(
                dead,
                dst,
                &ns,
                &["--connect-timeout", "2"],
                1,
                &["source server", "unreachable"],
            ),
            case(
                src,
                dead,
                &ns,
                &["--connect-timeout", "2"],
                1,
                &["destination server", "unreachable"],
            ),
            case(src, dst, &missing, &[], 1, &[&not_found]),
            // A typo gets the close name the source has: a collection, or a database.
            case(src, dst, &format!("{s}.d"), &[], 1, &[&did_you_mean]),
            case(src, dst, &format!("{s}x.c"), &[], 1, &[&did_you_mean]),
            case(src, dst, &empty_db, &[], 1, &["has no collections"]),
            // Malformed filter: refused before connecting.
            case(
                src,
                dst,
                &ns,
                &["--filter", "{status: }"],
                2,
                &["filter is not valid JSON"],
            ),
            // A filter the server rejects.
            case(
                src,
                dst,
                &ns,
                &["--filter", r#"{"$bogus": 1}"#],
                1,
                &["bad filter", "$bogus"],
            ),
            case(
                src,
                dst,
                &ns,
                &["--filter", r#"{"status": {"$bogus": 1}}"#],
                1,
                &["bad filter", "$bogus"],
            ),
            // Every problem of the command line at once.
            case(
                "http://nope",
                dst,
                "nodot",
                &["--workers", "0"],
                2,
                &["from:", "nodot", "workers"],
            ),
            // The same server, however its URI is written: never a copy onto itself.
            case(
                &format!(" {}", src.replacen("mongodb://", "MONGODB://", 1)),
                src,
                &format!("{s}.c"),
                &[],
                2,
                &["would copy onto itself"],
            ),
            case(
                "mongodb://",
                dst,
                &ns,
                &[],
                2,
                &["from: mongodb:// is not a valid MongoDB URI"],
            ),
        ];
        for Case { argv, status, says } in cases {
            let (code, line) = failing(argv).await;
            assert_eq!(code, status, "{line}");
            for part in says {
                assert!(line.contains(&part), "{part:?} missing in {line}");
            }
        }
        // Every failure above is found before anything is written: not even an empty
        // collection is left at the destination.
        let left = env
            .dst_client()
            .await
            .database(&env.dst_db("e"))
            .list_collection_names()
            .await
            .unwrap();
        assert!(left.is_empty(), "left at the destination: {left:?}");
    });
}

#[test]
fn auth_failure_is_reported_without_the_password() {
    let secure = TestServer::start_with(&["--auth"]).expect("start auth server");
    TestEnv::start().run(|env| async move {
        let password = "s3cr3t-Pa55word";
        let uri = format!(
            "mongodb://mallory:{password}@127.0.0.1:{}/?directConnection=true",
            secure.port
        );
        let out = mongoferry_async(
            args(&[
                "copy",
                "--from",
                &uri,
                "--to",
                &env.dst,
                "--ns",
                "a.b:c.d",
                "--connect-timeout",
                "5",
            ]),
            LIMIT,
        )
        .await;
        assert_eq!(out.status.code(), Some(1));
        let text = format!("{}{}", stdout(&out), stderr(&out));
        assert!(
            text.contains("authentication to the source server"),
            "{text}"
        );
        assert!(text.contains("mallory:***@"), "{text}");
        assert!(!text.contains(password), "password leaked: {text}");
    });
}

#[test]
fn sigterm_stops_the_copy_with_status_130() {
    TestEnv::start().run(|env| async move {
        let (s, d) = (env.src_db("term"), env.dst_db("term"));
        let docs = sample_docs(20_000, 256);
        insert_raw(&env.src_client().await, &s, "c", &docs).await;
        let ns = format!("{s}.c:{d}.c");
        // The `ids` strategy with small batches is slow on the test server: plenty of time.
        let argv = [
            "copy",
            "--from",
            &env.src,
            "--to",
            &env.dst,
            "--ns",
            &ns,
            "--strategy",
            "ids",
            "--batch-size",
            "20",
            "--workers",
            "1",
        ];
        let data = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_mongoferry"))
            .args(argv)
            .env("XDG_DATA_HOME", data.path())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let dst = env.dst_client().await;
        let coll = dst.database(&d).collection::<mongodb::bson::Document>("c");
        let deadline = Instant::now() + Duration::from_secs(30);
        while coll.estimated_document_count().await.unwrap_or(0) == 0 {
            assert!(Instant::now() < deadline, "the copy never started");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // SAFETY: sending a signal to our own child process.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("copy did not stop within 30 s of SIGTERM");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let mut err = String::new();
        std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
        assert_eq!(status.code(), Some(130), "{err}");
        assert!(err.contains("interrupted"), "{err}");
        let copied = coll.count_documents(mongodb::bson::doc! {}).await.unwrap();
        assert!(copied > 0 && copied < 20_000, "stopped part way: {copied}");
    });
}

#[test]
fn rate_limits_the_copy() {
    TestEnv::start().run(|env| async move {
        let (s, d) = (env.src_db("rate"), env.dst_db("rate"));
        let docs = sample_docs(3_000, 200);
        insert_raw(&env.src_client().await, &s, "c", &docs).await;
        let ns = format!("{s}.c:{d}.c");
        let out = mongoferry_async(
            args(&[
                "copy",
                "--from",
                &env.src,
                "--to",
                &env.dst,
                "--ns",
                &ns,
                "--rate",
                "1000",
                "--batch-size",
                "50",
                "--json",
            ]),
            LIMIT,
        )
        .await;
        assert!(out.status.success(), "{}", stderr(&out));
        let summary: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
        let seconds = summary["seconds"].as_f64().unwrap();
        // 3,000 docs at 1,000 docs/s: about 3 s (the first batch passes at once).
        assert!((2.7..4.5).contains(&seconds), "took {seconds} s");
        assert_same(&env, (&s, "c"), (&d, "c")).await;
        let out = mongoferry_async(
            args(&[
                "copy", "--from", &env.src, "--to", &env.dst, "--ns", &ns, "--rate", "0",
            ]),
            LIMIT,
        )
        .await;
        assert_eq!(out.status.code(), Some(2));
        assert!(
            stderr(&out).contains("rate: must be 0.001 to"),
            "{}",
            stderr(&out)
        );
    });
}

/// Numbers outside what the code can honour are refused before anything starts (status 2),
/// whichever command takes them.
#[test]
fn numbers_out_of_range_are_refused_with_status_2() {
    let data = tempfile::tempdir().unwrap();
    let journal = data.path().join("journal");
    let journal = journal.to_str().unwrap();
    let copy = |extra: &[&str]| -> Vec<String> {
        [
            &[
                "copy",
                "--from",
                "mongodb://127.0.0.1:9",
                "--to",
                "mongodb://127.0.0.1:10",
            ],
            &["--ns", "a.b"][..],
            extra,
        ]
        .concat()
        .iter()
        .map(|a| a.to_string())
        .collect()
    };
    let owned = |argv: &[&str]| argv.iter().map(|a| a.to_string()).collect::<Vec<_>>();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (copy(&["--rate", "1e-308"]), "--rate: must be 0.001 to"),
        (
            copy(&["--rate-bytes", "1e-308"]),
            "--rate-bytes: must be 1 to",
        ),
        (copy(&["--rate", "NaN"]), "--rate: must be"),
        (
            copy(&["--connect-timeout", "inf"]),
            "--connect-timeout: must be",
        ),
        (
            copy(&["--adaptive-target-ms", "1e-300"]),
            "--adaptive-target-ms: must be",
        ),
        (copy(&["--batch-size", "0"]), "--batch-size: must be 1 to"),
        (
            copy(&["--max-document-bytes", "0"]),
            "--max-document-bytes: must be",
        ),
        (
            owned(&[
                "journal",
                "replay",
                journal,
                "--to",
                "mongodb://127.0.0.1:10",
            ])
            .into_iter()
            .chain(owned(&["--rate", "1e-308"]))
            .collect(),
            "--rate: must be",
        ),
        (
            owned(&[
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--no-state",
                "--shutdown-timeout",
                "inf",
            ]),
            "--shutdown-timeout: must be",
        ),
        (
            owned(&[
                "sample",
                "--to",
                "mongodb://127.0.0.1:10",
                "--ns",
                "a.b",
                "--doc-size",
                "0",
            ]),
            "--doc-size: must be",
        ),
    ];
    for (argv, says) in cases {
        let args: Vec<&str> = argv.iter().map(String::as_str).collect();
        let out = mongoferry(&args, LIMIT);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{argv:?}: {err}");
        assert!(err.contains(says), "{argv:?}: {says:?} missing in {err}");
        assert!(!err.contains("panicked"), "{argv:?}: {err}");
    }
}

#[test]
fn a_job_of_views_alone_is_never_already_complete() {
    TestEnv::start().run(|env| async move {
        let s = env.src_db("views");
        let src = env.src_client().await;
        let db = src.database(&s);
        db.collection::<mongodb::bson::Document>("c")
            .insert_one(mongodb::bson::doc! { "_id": 1 })
            .await
            .unwrap();
        db.run_command(mongodb::bson::doc! { "create": "v", "viewOn": "c", "pipeline": [] })
            .await
            .unwrap();
        let ns = format!("{s}.v:{}.v", env.dst_db("views"));
        let out = mongoferry(
            &[
                "copy",
                "--from",
                &env.src,
                "--to",
                &env.dst,
                "--ns",
                &ns,
                "--no-state",
            ],
            LIMIT,
        );
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(
            !stderr(&out).contains("already complete"),
            "{}",
            stderr(&out)
        );
        let dst = env.dst_client().await;
        assert_eq!(
            common::collection_names(&dst, &env.dst_db("views")).await,
            vec!["v".to_string()]
        );
    });
}

/// Each `--flag` a subcommand's `--help` lists: its name, whether the help says what it does,
/// whether it takes a value.
fn flags_in_help(help: &str) -> Vec<(String, bool, bool)> {
    let lines: Vec<&str> = help.lines().collect();
    let mut flags = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        let trimmed = trimmed
            .strip_prefix("-")
            .filter(|t| t.chars().next().is_some_and(|c| c.is_ascii_alphabetic()))
            .and_then(|t| t.get(1..)?.strip_prefix(", "))
            .unwrap_or(trimmed);
        let Some(rest) = trimmed.strip_prefix("--") else {
            continue;
        };
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
            .collect();
        // Described on the same line (after the value's name) or on the next, indented.
        let after = &rest[name.len()..];
        let takes_value = after.starts_with(" <");
        let after = match after.trim_start().strip_prefix('<') {
            Some(value) => value.split_once('>').map_or("", |(_, r)| r),
            None => after,
        };
        let next = lines.get(i + 1).map_or("", |l| l.trim());
        let described = !after.trim().is_empty() || (!next.is_empty() && !next.starts_with('-'));
        flags.push((format!("--{name}"), described, takes_value));
    }
    flags
}

/// A valid value for each flag that takes one (out-of-range values would be refused for
/// themselves, not for the flag).
fn valid_value(flag: &str) -> &'static str {
    match flag {
        "--filter" => "{}",
        "--strategy" => "stream",
        "--verify" => "report",
        "--indexes" => "after",
        "--block-writes" => "source",
        "--on-history-lost" => "reconcile",
        "--memory-limit" | "--journal-segment-bytes" => "67108864",
        "--lease-seconds" => "30",
        "--doc-size" => "1024",
        "--adaptive-target-ms" | "--adaptive-interval-ms" => "1000",
        "--exclude" => "x.y",
        "--state" => "state.db",
        "--journal" => "journal",
        "--max-load" | "--critical-load" => "source:connections.current>1",
        "--throttle-url" => "http://127.0.0.1:9/",
        "--guard-interval-ms" => "1000",
        // Files the test writes into the directory the runs start in.
        "--transform" => "transform.json",
        "--transform-key-file" => "transform.key",
        _ => "1",
    }
}

/// Whatever `<command> --help` lists, that command accepts, and says what it does: no flag
/// that clap rejects ("unexpected argument") or that the job then refuses (a problem naming
/// the flag). Each run is refused up front (a destination in `admin`), so nothing connects.
#[test]
fn every_flag_the_help_lists_is_accepted_and_described() {
    let dir = tempfile::tempdir().unwrap();
    let run = |argv: &[&str]| mongoferry_in(dir.path(), argv, &[], Duration::from_secs(20));
    std::fs::write(
        dir.path().join("transform.json"),
        r#"{"db.c": [{"drop": "x"}]}"#,
    )
    .unwrap();
    std::fs::write(
        dir.path().join("transform.key"),
        "a key of sixteen bytes or more",
    )
    .unwrap();
    let job = [
        "--from",
        "mongodb://127.0.0.1:9",
        "--to",
        "mongodb://127.0.0.1:8",
        "--ns",
        "admin.c",
    ];
    let sample = ["--to", "mongodb://127.0.0.1:9", "--ns", "admin.c"];
    let commands: [(&[&str], &[&str]); 12] = [
        (&["copy"], &job),
        (&["sync"], &job),
        (&["move"], &job),
        (&["reconcile"], &job),
        (&["plan"], &job),
        (&["verify"], &job),
        (&["sample"], &sample),
        (&["serve"], &[]),
        (&["journal", "inspect"], &[]),
        (&["journal", "replay"], &[]),
        (&["journal", "export"], &[]),
        (&["report"], &[]),
    ];
    let mut checked = 0;
    for (command, required) in commands {
        let out = run(&[command, &["--help"]].concat());
        assert!(out.status.success(), "{command:?} --help: {}", stderr(&out));
        let flags = flags_in_help(&stdout(&out));
        assert!(flags.len() >= 2, "{command:?}: {flags:?}");
        for (flag, described, _) in &flags {
            assert!(described, "{command:?} --help: {flag} has no description");
        }
        if required.is_empty() {
            // serve would start, the journal commands need a journal, report a history: help only.
            continue;
        }
        let base: Vec<&str> = [command, required].concat();
        let out = run(&base);
        assert_eq!(out.status.code(), Some(2), "{base:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("admin"), "{base:?}: {}", stderr(&out));
        for (flag, _, takes_value) in &flags {
            if flag == "--help" || required.contains(&flag.as_str()) {
                continue;
            }
            let mut argv = base.clone();
            argv.push(flag);
            if *takes_value {
                argv.push(valid_value(flag));
            }
            if flag.starts_with("--adaptive-") && flag != "--adaptive-target-ms" {
                argv.extend(["--adaptive-target-ms", "1000"]);
            }
            // A move verifies only as a rehearsal: the source keeps what was moved.
            if command == ["move"] && flag == "--verify" {
                argv.push("--keep-source");
            }
            if flag == "--critical-load-hibernate-secs" {
                argv.extend(["--critical-load", "source:connections.current>1"]);
            }
            if flag == "--journal-segment-bytes" {
                argv.extend(["--journal", "journal"]);
            }
            let tried = run(&argv);
            let err = stderr(&tried);
            assert_eq!(tried.status.code(), Some(2), "{argv:?}: {err}");
            for clap_refusal in ["unexpected argument", "cannot be used with", "not allowed"] {
                assert!(!err.contains(clap_refusal), "{argv:?}: {err}");
            }
            // The reverse of a job takes that job's namespaces: --ns is refused with it.
            if flag == "--reverse-of" {
                assert!(err.contains("--ns: --reverse-of"), "{argv:?}: {err}");
                checked += 1;
                continue;
            }
            // Refused by the job, rather than by the parser.
            assert!(!err.contains(&format!("{flag}:")), "{argv:?}: {err}");
            // Only the problem every run has.
            assert!(err.contains("admin"), "{argv:?}: {err}");
            checked += 1;
        }
    }
    assert!(checked > 60, "only {checked} flags tried");
}

/// A copy run again with `--journal` after it completed without one journals nothing, and
/// says how to get everything into the journal.
#[test]
fn a_complete_copy_run_again_with_a_journal_says_what_restart_would_do() {
    TestEnv::start().run(|env| async move {
        let (s, d) = (env.src_db("j"), env.dst_db("j"));
        insert_raw(&env.src_client().await, &s, "c", &sample_docs(20, 100)).await;
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state.db");
        let ns = format!("{s}.c:{d}.c");
        let argv = |journal: bool| {
            let mut list = args(&[
                "copy",
                "--from",
                &env.src,
                "--to",
                &env.dst,
                "--ns",
                &ns,
                "--state",
                state.to_str().unwrap(),
                "--quiet",
            ]);
            if journal {
                list.extend(args(&["--journal", dir.path().join("j").to_str().unwrap()]));
            }
            list
        };
        let out = mongoferry_async(argv(false), LIMIT).await;
        assert!(out.status.success(), "{}", stderr(&out));
        let out = mongoferry_async(argv(true), LIMIT).await;
        let err = stderr(&out);
        assert!(out.status.success(), "{err}");
        assert!(err.contains("journaled nothing"), "{err}");
        assert!(err.contains("--restart to copy (and journal)"), "{err}");
    });
}
