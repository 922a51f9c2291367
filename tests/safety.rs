//! Jobs that would destroy data that exists nowhere else are refused, whatever the spelling: a
//! move onto its own server under another name, swaps and chains on one deployment, wildcards
//! writing two sources into one destination, and the state database as a destination. Each
//! refusal leaves both sides as they were.

mod common;

use std::path::Path;
use std::time::Duration;

use common::service::Serve;
use common::{count_docs, mongoferry_async, stderr, stdout, TestEnv};
use mongodb::bson::{doc, Document};
use mongodb::Client;
use serde_json::json;

const LIMIT: Duration = Duration::from_secs(60);

async fn fill(client: &Client, db: &str, coll: &str, n: i64) {
    let docs: Vec<Document> = (0..n).map(|i| doc! { "_id": i, "coll": coll }).collect();
    client
        .database(db)
        .collection::<Document>(coll)
        .insert_many(docs)
        .await
        .unwrap();
}

async fn run(args: &[&str]) -> std::process::Output {
    mongoferry_async(args.iter().map(|a| a.to_string()).collect(), LIMIT).await
}

/// The test server's port in `uri` (`mongodb://127.0.0.1:P/…`).
fn port(uri: &str) -> &str {
    let rest = uri.split("://").nth(1).unwrap();
    let authority = rest.split(['/', '?']).next().unwrap();
    authority.rsplit(':').next().unwrap()
}

#[test]
fn a_move_onto_its_own_server_under_any_spelling_is_refused() {
    TestEnv::start().run(|env| async move {
        let db = env.src_db("self");
        let src = env.src_client().await;
        fill(&src, &db, "x", 1_000).await;
        let ns = format!("{db}.x");
        let p = port(&env.src);
        let spellings = if env.src == env.dst {
            vec![env.src.clone()]
        } else {
            vec![
                format!("mongodb://localhost:{p}/?directConnection=true"),
                format!("mongodb://127.0.0.1:{p}/?directConnection=true&appName=x"),
                format!("mongodb://127.0.0.1:{p}/admin?directConnection=true"),
                format!("mongodb://127.0.0.1:{p}"),
                format!("mongodb://[::ffff:127.0.0.1]:{p}/?directConnection=true"),
            ]
        };
        for to in &spellings {
            // `verify` too: a namespace compared with itself would prove nothing.
            for command in ["move", "copy", "sync", "verify"] {
                let out = run(&[command, "--from", &env.src, "--to", to, "--ns", &ns]).await;
                assert_eq!(
                    out.status.code(),
                    Some(2),
                    "{command} to {to}: {}",
                    stderr(&out)
                );
                assert!(
                    stderr(&out).contains("would copy onto itself")
                        && stderr(&out).contains("one deployment"),
                    "{command} to {to}: {}",
                    stderr(&out)
                );
                assert_eq!(count_docs(&src, &db, "x").await, 1_000, "{command} to {to}");
            }
            // The plan shows it as the reason the copy would not start.
            let out = run(&[
                "plan", "--from", &env.src, "--to", to, "--ns", &ns, "--json",
            ])
            .await;
            assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
            let plan: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
            assert_eq!(plan["blocked"], true);
            assert!(
                plan["problems"][0]["message"]
                    .as_str()
                    .unwrap()
                    .contains("onto itself"),
                "{plan}"
            );
        }
    });
}

#[test]
fn swaps_and_chains_on_one_deployment_are_refused_and_renames_are_not() {
    TestEnv::start().run(|env| async move {
        let db = env.src_db("swap");
        let src = env.src_client().await;
        for coll in ["s1", "s2", "a", "b"] {
            fill(&src, &db, coll, 300).await;
        }
        let ns = |from: &str, to: &str| format!("{db}.{from}:{db}.{to}");
        // The other spelling of the same server.
        let to = env.src.replace("127.0.0.1", "localhost").replace(
            "directConnection=true",
            "directConnection=true&appName=other",
        );
        for (first, second, refused) in [
            (ns("s1", "s2"), ns("s2", "s1"), "s2"),
            (ns("a", "b"), ns("b", "c"), "b"),
        ] {
            let out = run(&[
                "move", "--from", &env.src, "--to", &to, "--ns", &first, "--ns", &second,
            ])
            .await;
            assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
            let message = stderr(&out);
            assert!(
                message.contains(&format!(
                    "writes into {db}.{refused}, which `{second}` reads"
                )) || message.contains(&format!(
                    "writes into {db}.{refused}, which `{first}` reads"
                )),
                "{message}"
            );
        }
        for coll in ["s1", "s2", "a", "b"] {
            assert_eq!(count_docs(&src, &db, coll).await, 300, "{coll}");
        }
        assert_eq!(count_docs(&src, &db, "c").await, 0);
        // A rename within the deployment moves the documents.
        let archive = env.src_db("archive");
        let rename = format!("{db}.a:{archive}.a");
        let out = run(&[
            "move", "--from", &env.src, "--to", &to, "--ns", &rename, "--quiet",
        ])
        .await;
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(count_docs(&src, &db, "a").await, 0);
        assert_eq!(count_docs(&src, &archive, "a").await, 300);
    });
}

#[test]
fn wildcards_cannot_write_two_sources_into_one_destination() {
    TestEnv::start().run(|env| async move {
        let (p, q) = (env.src_db("p"), env.dst_db("q"));
        let src = env.src_client().await;
        fill(&src, &p, "x", 2_000).await;
        fill(&src, &p, "y", 100).await;
        let all = format!("{p}.*:{q}");
        let one = format!("{p}.y:{q}.x");
        for command in ["move", "copy"] {
            let out = run(&[
                command, "--from", &env.src, "--to", &env.dst, "--ns", &all, "--ns", &one,
            ])
            .await;
            assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
            let message = stderr(&out);
            assert!(
                message.contains(&format!("{p}.x and {p}.y would all be written into {q}.x")),
                "{message}"
            );
            assert!(
                message.contains(&format!("{p}.y is selected by")),
                "{message}"
            );
        }
        assert_eq!(count_docs(&src, &p, "x").await, 2_000);
        assert_eq!(count_docs(&src, &p, "y").await, 100);
        let dst = env.dst_client().await;
        assert_eq!(count_docs(&dst, &q, "x").await, 0);
    });
}

#[test]
fn the_state_database_is_never_a_destination() {
    TestEnv::start().run(|env| async move {
        if env.src == env.dst {
            return; // The source's databases would be the state's deployment too.
        }
        let ferry = env.dst_db("ferry");
        let state = common::with_database(&env.dst, &ferry);
        let (src, dst) = (env.src_client().await, env.dst_client().await);
        fill(&src, &ferry, "c", 200).await;
        // A first copy keeps its checkpoint in the state database.
        let other = env.src_db("other");
        fill(&src, &other, "c", 10).await;
        let kept = format!("{other}.c");
        let out = run(&[
            "copy", "--from", &env.src, "--to", &env.dst, "--ns", &kept, "--state", &state,
            "--quiet",
        ])
        .await;
        assert!(out.status.success(), "{}", stderr(&out));
        let checkpoints = count_docs(&dst, &ferry, "checkpoints").await;
        assert!(checkpoints > 0);
        let all = format!("{ferry}.*");
        let out = run(&[
            "copy", "--from", &env.src, "--to", &env.dst, "--ns", &all, "--state", &state,
            "--drop",
        ])
        .await;
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(
            stderr(&out).contains(&format!("database {ferry}, which keeps this job's state")),
            "{}",
            stderr(&out)
        );
        assert_eq!(count_docs(&dst, &ferry, "checkpoints").await, checkpoints);
        // `plan --state` sees it too.
        let out = run(&[
            "plan", "--from", &env.src, "--to", &env.dst, "--ns", &all, "--state", &state,
        ])
        .await;
        assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
        assert!(stdout(&out).contains("keeps this job's state"), "{}", stdout(&out));

        // A service on a MongoDB state refuses a job into its own database at submit.
        let service = Serve::with_state(Path::new(&state))
            .arg("--allow-cluster")
            .arg(format!("127.0.0.1:{}", port(&env.src)))
            .arg("--allow-cluster")
            .arg(format!("127.0.0.1:{}", port(&env.dst)))
            .start();
        let before = service.jobs().await.len();
        for namespaces in [
            json!([format!("{other}.c:{ferry}.service_jobs")]),
            json!([format!("{other}.*:{ferry}")]),
        ] {
            let (status, body) = service
                .post(
                    "/api/jobs",
                    json!({"from": env.src, "to": env.dst, "namespaces": namespaces, "drop": true}),
                )
                .await;
            assert_eq!(status, 400, "{body}");
            assert!(body.to_string().contains("keeps this job's state"), "{body}");
        }
        let (status, plan) = service
            .post(
                "/api/plan",
                json!({"from": env.src, "to": env.dst, "namespaces": [format!("{other}.*:{ferry}")]}),
            )
            .await;
        assert_eq!(status, 200, "{plan}");
        assert_eq!(plan["blocked"], true, "{plan}");
        assert_eq!(service.jobs().await.len(), before);
        assert!(service.stop());
    });
}

#[test]
fn a_service_refuses_a_move_onto_its_own_server_at_submit() {
    TestEnv::start().run(|env| async move {
        let db = env.src_db("svc");
        let src = env.src_client().await;
        fill(&src, &db, "x", 500).await;
        let p = port(&env.src);
        let service = Serve::default()
            .arg("--allow-cluster")
            .arg(format!("127.0.0.1:{p}"))
            .arg("--allow-cluster")
            .arg(format!("localhost:{p}"))
            .start();
        let to = env.src.replace("127.0.0.1", "localhost");
        let (status, body) = service
            .post(
                "/api/jobs",
                json!({"from": env.src, "to": to, "namespaces": [format!("{db}.x")], "mode": "move"}),
            )
            .await;
        assert_eq!(status, 400, "{body}");
        assert!(body.to_string().contains("onto itself"), "{body}");
        assert!(service.jobs().await.is_empty());
        assert_eq!(count_docs(&src, &db, "x").await, 500);
        assert!(service.stop());
    });
}

/// The property behind every refusal above: for job specs drawn at random (renames, swaps,
/// chains, wildcards, excludes, `--drop`, copies and moves; onto the same server under several
/// spellings, or onto another), every spec that is accepted and run leaves each document that
/// existed before it on one side or the other, byte for byte; every refused one changes nothing.
/// `MONGOFERRY_SAFETY_SPECS` sets how many specs (default 250; thousands for a nightly run) and
/// `MONGOFERRY_SAFETY_SEED` the seed, which a failure prints.
#[test]
fn no_accepted_job_loses_a_document() {
    TestEnv::start().run(|env| async move {
        if env.src == env.dst {
            return; // Spellings of one shared server, and `*`, would reach other tests' data.
        }
        let specs: usize = std::env::var("MONGOFERRY_SAFETY_SPECS")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(250);
        let seed: u64 = std::env::var("MONGOFERRY_SAFETY_SEED")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| fastrand::u64(..));
        println!("MONGOFERRY_SAFETY_SEED={seed}");
        let mut rng = fastrand::Rng::with_seed(seed);
        let (a, b) = (env.src_client().await, env.dst_client().await);
        let dbs: Vec<String> = ["d1", "d2", "d3"].iter().map(|d| env.src_db(d)).collect();
        let p = port(&env.src).to_string();
        let spellings_of_a = [
            env.src.clone(),
            format!("mongodb://localhost:{p}/?directConnection=true"),
            format!("mongodb://127.0.0.1:{p}/admin?directConnection=true&appName=x"),
            format!("mongodb://127.0.0.1:{p}"),
            format!("mongodb://[::ffff:127.0.0.1]:{p}/?directConnection=true"),
        ];
        let (mut accepted, mut refused) = (0, 0);
        let started = std::time::Instant::now();
        for n in 0..specs {
            // The source's d1 and d2 hold two collections each; d3 and the other server are empty.
            for db in &dbs {
                a.database(db).drop().await.unwrap();
                b.database(db).drop().await.unwrap();
            }
            for db in &dbs[..2] {
                for coll in ["c1", "c2"] {
                    let docs: Vec<Document> = (0..8_i64)
                        .map(|i| doc! { "_id": i, "origin": format!("{db}.{coll}#{i}") })
                        .collect();
                    a.database(db)
                        .collection(coll)
                        .insert_many(docs)
                        .await
                        .unwrap();
                }
            }
            let before = everything(&[&a, &b], &dbs).await;
            let spec = random_spec(&mut rng, &dbs, &spellings_of_a, &env.dst);
            let described = format!("{spec:?}");
            let outcome = match spec.validate() {
                Err(e) => Err(e.to_string()),
                Ok(spec) => {
                    match mongoferry::run::copy::prepare(&spec, common::memory_store()).await {
                        Err(e) => Err(e.to_string()),
                        Ok(prepared) => {
                            let cancel = tokio_util::sync::CancellationToken::new();
                            Ok(prepared
                                .run(cancel)
                                .await
                                .map(|_| ())
                                .map_err(|e| e.to_string()))
                        }
                    }
                }
            };
            let after = everything(&[&a, &b], &dbs).await;
            match outcome {
                Err(why) => {
                    refused += 1;
                    assert_eq!(
                        after, before,
                        "spec {n} (seed {seed}) was refused ({why}) yet changed data: {described}"
                    );
                }
                Ok(_) => {
                    accepted += 1;
                    let lost: Vec<&Vec<u8>> =
                        before.iter().filter(|d| !after.contains(*d)).collect();
                    assert!(
                        lost.is_empty(),
                        "spec {n} (seed {seed}) lost {} documents: {described}",
                        lost.len()
                    );
                }
            }
        }
        println!(
            "{specs} specs in {:.1} s: {accepted} accepted and run, {refused} refused",
            started.elapsed().as_secs_f64()
        );
        assert!(
            accepted > specs / 10 && refused > specs / 10,
            "{accepted} accepted, {refused} refused"
        );
    });
}

/// Every document of `dbs` on every server, as raw bytes (a set: one of each).
async fn everything(clients: &[&Client], dbs: &[String]) -> std::collections::BTreeSet<Vec<u8>> {
    let mut all = std::collections::BTreeSet::new();
    for client in clients {
        for db in dbs {
            for coll in common::collection_names(client, db).await {
                for raw in common::dump(client, db, &coll).await {
                    all.insert(raw.into_bytes());
                }
            }
        }
    }
    all
}

/// A job spec over `dbs` (`d1` and `d2` hold `c1` and `c2`; `d3` is empty): one to three
/// mappings, each of a collection, a whole database or `*`, from the first server under any
/// spelling; sometimes an exclude or `--drop`; a copy or a move. To the other server (empty), or
/// to the first one under any spelling: there each mapping writes into the empty `d3`, or into
/// what one of the job's mappings reads (itself: onto itself; another: a swap or a chain). A job
/// writing over other data of the first server is left out: overwriting a destination is what a
/// copy is asked to do.
fn random_spec(
    rng: &mut fastrand::Rng,
    dbs: &[String],
    spellings_of_a: &[String],
    b: &str,
) -> mongoferry::spec::JobSpec {
    enum Source {
        Collection(String, &'static str),
        Database(String),
        Everything,
    }
    let coll = |rng: &mut fastrand::Rng| ["c1", "c2"][rng.usize(..2)];
    let sources: Vec<Source> = (0..rng.usize(1..=3))
        .map(|_| match rng.u8(..10) {
            0..=4 => Source::Collection(dbs[rng.usize(..2)].clone(), coll(rng)),
            5..=8 => Source::Database(dbs[rng.usize(..2)].clone()),
            _ => Source::Everything,
        })
        .collect();
    let from = spellings_of_a[rng.usize(..spellings_of_a.len())].clone();
    let onto_a = rng.bool();
    let to = match onto_a {
        true => spellings_of_a[rng.usize(..spellings_of_a.len())].clone(),
        false => b.to_string(),
    };
    // On the first server, what a mapping may write: the empty d3, or what the job reads whole.
    let read_whole: Vec<String> = sources
        .iter()
        .filter_map(|s| match s {
            Source::Database(db) => Some(db.clone()),
            _ => None,
        })
        .collect();
    let read_colls: Vec<String> = sources
        .iter()
        .filter_map(|s| match s {
            Source::Collection(db, c) => Some(format!("{db}.{c}")),
            _ => None,
        })
        .collect();
    let target_db = |rng: &mut fastrand::Rng| -> String {
        match (onto_a, read_whole.is_empty() || rng.bool()) {
            (false, _) => dbs[rng.usize(..dbs.len())].clone(),
            (true, true) => dbs[2].clone(),
            (true, false) => read_whole[rng.usize(..read_whole.len())].clone(),
        }
    };
    let mappings: Vec<String> = sources
        .iter()
        .map(|source| match source {
            Source::Everything => "*".to_string(),
            Source::Database(db) => format!("{db}.*:{}", target_db(rng)),
            Source::Collection(db, c) if onto_a && rng.u8(..3) == 0 => {
                // Onto itself, or onto a collection another mapping reads.
                format!("{db}.{c}:{}", read_colls[rng.usize(..read_colls.len())])
            }
            Source::Collection(db, c) => format!("{db}.{c}:{}.{}", target_db(rng), coll(rng)),
        })
        .collect();
    let names: Vec<&str> = mappings.iter().map(String::as_str).collect();
    let mut spec = mongoferry::spec::JobSpec::new(&from, &to, &names);
    // An exclude can leave unread a namespace the job writes: only across servers.
    if !onto_a && rng.u8(..4) == 0 {
        let db = &dbs[rng.usize(..2)];
        spec.endpoints.exclude = vec![format!("{db}.{}", coll(rng))];
    }
    spec.drop = rng.u8(..4) == 0;
    if rng.bool() {
        spec.mode = Some(mongoferry::spec::Mode::Move);
    }
    spec
}

#[test]
fn the_servers_own_databases_are_never_written() {
    TestEnv::start().run(|env| async move {
        let db = env.src_db("own");
        fill(&env.src_client().await, &db, "c", 10).await;
        let into_admin = format!("{db}.c:admin.c");
        for args in [
            vec![
                "copy",
                "--from",
                &env.src,
                "--to",
                &env.dst,
                "--ns",
                &into_admin,
            ],
            vec![
                "move",
                "--from",
                &env.src,
                "--to",
                &env.dst,
                "--ns",
                "local.startup_log:x.y",
            ],
            vec![
                "sample", "--to", &env.dst, "--ns", "config.c", "--count", "1", "--drop",
            ],
        ] {
            let out = run(&args).await;
            assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
            assert!(
                stderr(&out).contains("the server's own database"),
                "{}",
                stderr(&out)
            );
        }
        let dst = env.dst_client().await;
        assert_eq!(count_docs(&dst, "admin", "c").await, 0);
        assert_eq!(count_docs(&dst, "config", "c").await, 0);
    });
}
