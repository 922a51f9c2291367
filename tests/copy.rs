//! The copy engine against a real MongoDB-compatible server: documents of every shape arrive
//! byte-identical, re-copies replace instead of duplicating, namespaces map as asked.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use mongodb::bson::{doc, rawdoc, spec::BinarySubtype, Binary, RawDocumentBuf};
use mongoferry::engine::Strategy;
use mongoferry::run::copy::{self, CopySummary};
use mongoferry::spec::{Filter, JobSpec};
use tokio_util::sync::CancellationToken;

fn spec(
    env: &TestEnv,
    namespaces: Vec<String>,
    workers: usize,
    batch_size: usize,
    strategy: Strategy,
) -> JobSpec {
    let mut spec = JobSpec::new(&env.src, &env.dst, &[]);
    spec.endpoints.namespaces = namespaces;
    spec.endpoints.connect_timeout_secs = Some(20.0);
    JobSpec {
        workers: Some(workers),
        batch_size: Some(batch_size),
        strategy: Some(strategy),
        ..spec
    }
}

async fn copy_with(
    env: &TestEnv,
    namespaces: Vec<String>,
    strategy: Strategy,
    filter: Option<&str>,
    batch_size: usize,
) -> CopySummary {
    let mut spec = spec(env, namespaces, 3, batch_size, strategy);
    spec.endpoints.filter = filter.map(|f| f.parse::<Filter>().expect("a JSON object"));
    let spec = spec.validate().expect("valid spec");
    copy::prepare(&spec, common::memory_store())
        .await
        .expect("prepare copy")
        .run(CancellationToken::new())
        .await
        .expect("copy succeeds")
}

fn copies_every_bson_type(strategy: Strategy) {
    TestEnv::start().run(|env| async move {
        let (s, d) = (env.src_db("types"), env.dst_db("types"));
        let docs = every_type_documents();
        insert_raw(&env.src_client().await, &s, "all", &docs).await;
        // Batches of 3 make the engine cut the mixed-type `_id` sequence in several places.
        let summary = copy_with(&env, vec![format!("{s}.all:{d}.all")], strategy, None, 3).await;
        assert_eq!(summary.docs, docs.len() as u64);
        let n = assert_same(&env, (&s, "all"), (&d, "all")).await;
        assert_eq!(n, docs.len());
    });
}

#[test]
fn copies_every_bson_type_streaming() {
    copies_every_bson_type(Strategy::Stream);
}

#[test]
fn copies_every_bson_type_by_id() {
    copies_every_bson_type(Strategy::Ids);
}

#[test]
fn copies_dollar_and_dotted_field_names_and_replaces_them() {
    TestEnv::start().run(|env| async move {
        let (s, d) = (env.src_db("names"), env.dst_db("names"));
        let docs = vec![
            rawdoc! { "_id": 1, "a.b": 1, "nested": { "x.y": { "$inner": 2 } } },
            rawdoc! { "_id": 2, "$top": "dollar at the top", "plain": true },
            rawdoc! { "_id": 3, "nested": { "$price": 9.5, "a.b.c": [1, 2] } },
        ];
        let src = env.src_client().await;
        let mut accepted = Vec::new();
        for doc in docs {
            // Keep only the shapes this server accepts at all.
            let c = src.database(&s).collection::<RawDocumentBuf>("weird");
            if c.insert_one(&doc).await.is_ok() {
                accepted.push(doc);
            }
        }
        eprintln!("the server accepted {} of 3 shapes", accepted.len());
        assert!(
            accepted.len() >= 2,
            "server should accept dotted names at least"
        );
        for strategy in [Strategy::Stream, Strategy::Ids] {
            // The second round finds every document present and must replace, not duplicate.
            copy_with(
                &env,
                vec![format!("{s}.weird:{d}.weird")],
                strategy,
                None,
                2,
            )
            .await;
            let n = assert_same(&env, (&s, "weird"), (&d, "weird")).await;
            assert_eq!(n, accepted.len());
        }
    });
}

#[test]
fn copies_documents_up_to_the_size_limit() {
    TestEnv::start().run(|env| async move {
        let (s, d) = (env.src_db("big"), env.dst_db("big"));
        let limit = 16 * 1024 * 1024;
        let big = |id: i32, fill: u8| {
            let mut doc = rawdoc! { "_id": id };
            // 16 MiB minus the _id, the field header and a small margin for the server's own.
            doc.append(
                "blob",
                mongodb::bson::RawBson::Binary(Binary {
                    subtype: BinarySubtype::Generic,
                    bytes: vec![fill; limit - 64],
                }),
            );
            doc
        };
        let docs = vec![
            big(1, b'a'),
            rawdoc! { "_id": 2, "small": true },
            big(3, b'c'),
        ];
        assert!(docs[0].as_bytes().len() > limit - 100);
        insert_raw(&env.src_client().await, &s, "big", &docs).await;
        for strategy in [Strategy::Stream, Strategy::Ids] {
            copy_with(&env, vec![format!("{s}.big:{d}.big")], strategy, None, 500).await;
            assert_eq!(assert_same(&env, (&s, "big"), (&d, "big")).await, 3);
        }
    });
}

#[test]
fn overwrites_existing_documents_without_duplicates() {
    TestEnv::start().run(|env| async move {
        let (s, d) = (env.src_db("over"), env.dst_db("over"));
        let docs: Vec<_> = (0..1000)
            .map(|i| rawdoc! { "_id": i, "v": format!("source {i}"), "n": i })
            .collect();
        insert_raw(&env.src_client().await, &s, "c", &docs).await;
        // The destination holds a stale copy of some documents and one document of its own.
        let stale: Vec<_> = (0..1000)
            .step_by(7)
            .map(|i| rawdoc! { "_id": i, "v": "stale", "extra": [1, 2, 3] })
            .chain([rawdoc! { "_id": "destination only" }])
            .collect();
        insert_raw(&env.dst_client().await, &d, "c", &stale).await;
        for strategy in [Strategy::Ids, Strategy::Stream] {
            copy_with(&env, vec![format!("{s}.c:{d}.c")], strategy, None, 64).await;
            let dst = dump(&env.dst_client().await, &d, "c").await;
            assert_eq!(dst.len(), 1001, "copied docs replace, never duplicate");
            let src = dump(&env.src_client().await, &s, "c").await;
            for (a, b) in src.iter().zip(&dst) {
                assert_eq!(a.as_bytes(), b.as_bytes());
            }
            assert_eq!(
                as_doc(&dst[1000]).get_str("_id").unwrap(),
                "destination only"
            );
        }
    });
}

#[test]
fn a_recopy_replaces_a_number_id_stored_as_another_type() {
    TestEnv::start().run(|env| async move {
        let (s, d) = (env.src_db("retype"), env.dst_db("retype"));
        let five: mongodb::bson::Decimal128 = "5".parse().unwrap();
        let docs = [
            rawdoc! { "_id": five, "v": "source" },
            rawdoc! { "_id": 6, "v": "source" },
        ];
        insert_raw(&env.src_client().await, &s, "c", &docs).await;
        // An earlier copy left `NumberLong(5)`: the same `_id` to the server, which refuses
        // to change its type in place (`immutable field '_id'`).
        let stale = [
            rawdoc! { "_id": 5_i64, "v": "stale" },
            rawdoc! { "_id": 6, "v": "stale" },
        ];
        insert_raw(&env.dst_client().await, &d, "c", &stale).await;
        let summary = copy_with(
            &env,
            vec![format!("{s}.c:{d}.c")],
            Strategy::Stream,
            None,
            64,
        )
        .await;
        assert_eq!(summary.failed, 0, "nothing refused");
        assert_eq!(assert_same(&env, (&s, "c"), (&d, "c")).await, 2);
    });
}

#[test]
fn creates_empty_collections_and_maps_namespaces() {
    TestEnv::start().run(|env| async move {
        let (s, d) = (env.src_db("shop"), env.dst_db("archive"));
        let src = env.src_client().await;
        src.database(&s).create_collection("empty").await.unwrap();
        insert_raw(
            &src,
            &s,
            "orders",
            &[rawdoc! { "_id": 1 }, rawdoc! { "_id": 2 }],
        )
        .await;
        insert_raw(&src, &s, "customers", &[rawdoc! { "_id": "c1" }]).await;

        // db.* copies every collection, keeping names, into another database.
        let summary = copy_with(&env, vec![format!("{s}.*:{d}")], Strategy::Stream, None, 10).await;
        assert_eq!(summary.docs, 3);
        assert_eq!(
            collection_names(&env.dst_client().await, &d).await,
            ["customers", "empty", "orders"]
        );
        for c in ["customers", "empty", "orders"] {
            assert_same(&env, (&s, c), (&d, c)).await;
        }

        // Several --ns, each renamed.
        let d2 = env.dst_db("renamed");
        copy_with(
            &env,
            vec![
                format!("{s}.orders:{d2}.o"),
                format!("{s}.customers:{d2}.c"),
            ],
            Strategy::Ids,
            None,
            10,
        )
        .await;
        assert_eq!(
            collection_names(&env.dst_client().await, &d2).await,
            ["c", "o"]
        );
        assert_same(&env, (&s, "orders"), (&d2, "o")).await;
        assert_same(&env, (&s, "customers"), (&d2, "c")).await;
    });
}

#[test]
fn filter_selects_source_documents() {
    TestEnv::start().run(|env| async move {
        let (s, d) = (env.src_db("f"), env.dst_db("f"));
        let docs: Vec<_> = (0..300)
            .map(|i| rawdoc! { "_id": i as i64, "status": if i % 3 == 0 { "closed" } else { "open" }, "n": i })
            .collect();
        insert_raw(&env.src_client().await, &s, "orders", &docs).await;
        for strategy in [Strategy::Stream, Strategy::Ids] {
            let summary = copy_with(
                &env,
                vec![format!("{s}.orders:{d}.{strategy}")],
                strategy,
                Some(r#"{"status": "closed", "n": {"$lt": {"$numberLong": "150"}}}"#),
                16,
            )
            .await;
            assert_eq!(summary.docs, 50);
            let got = dump(&env.dst_client().await, &d, &strategy.to_string()).await;
            let want: Vec<_> = docs
                .iter()
                .filter(|doc| {
                    let doc = as_doc(doc);
                    doc.get_str("status").unwrap() == "closed" && doc.get_i32("n").unwrap() < 150
                })
                .collect();
            assert_eq!(got.len(), want.len());
            for (a, b) in want.iter().zip(&got) {
                assert_eq!(a.as_bytes(), b.as_bytes());
            }
        }
    });
}

#[test]
fn refused_documents_become_dead_letters_and_the_rest_is_copied() {
    TestEnv::start().run(|env| async move {
        let (s, d) = (env.src_db("uniq"), env.dst_db("uniq"));
        let docs: Vec<_> = (0..200)
            .map(|i| rawdoc! { "_id": i, "k": i % 150 })
            .collect();
        insert_raw(&env.src_client().await, &s, "c", &docs).await;
        // A unique index on the destination that the source data violates.
        let dst = env.dst_client().await;
        dst.database(&d)
            .collection::<RawDocumentBuf>("c")
            .create_index(
                mongodb::IndexModel::builder()
                    .keys(doc! { "k": 1 })
                    .options(
                        mongodb::options::IndexOptions::builder()
                            .unique(true)
                            .build(),
                    )
                    .build(),
            )
            .await
            .unwrap();
        let store = std::sync::Arc::new(mongoferry::state::MemoryStore::default());
        // One worker writes the batches in `_id` order, so the first of each key wins.
        let spec = spec(&env, vec![format!("{s}.c:{d}.c")], 1, 20, Strategy::Stream)
            .validate()
            .unwrap();
        let summary = tokio::time::timeout(
            Duration::from_secs(60),
            copy::prepare(&spec, store.clone())
                .await
                .unwrap()
                .run(CancellationToken::new()),
        )
        .await
        .expect("the job ends")
        .expect("refused documents do not fail the job");
        assert_eq!((summary.docs, summary.failed), (150, 50));
        // The first document of each key is at the destination, the others are kept.
        let copied = dump(&dst, &d, "c").await;
        assert_eq!(copied.len(), 150);
        assert_eq!(copied, docs[..150].to_vec());
        let letters = store.dead_letters();
        let mut ids: Vec<i64> = letters
            .iter()
            .map(|l| l.id["$numberInt"].as_str().unwrap().parse().unwrap())
            .collect();
        ids.sort();
        assert_eq!(ids, (150..200).collect::<Vec<i64>>());
        for letter in &letters {
            assert_eq!(letter.code, Some(11000), "{letter:?}");
            assert!(letter.reason.contains("duplicate key"), "{letter:?}");
            assert_eq!(letter.ns, format!("{d}.c"));
            assert!(letter.document.get("k").is_some(), "the document is kept");
        }
    });
}

#[test]
fn copying_twice_is_idempotent_and_counts_match() {
    TestEnv::start().run(|env| async move {
        let (s, d) = (env.src_db("twice"), env.dst_db("twice"));
        let docs = sample_docs(2500, 300);
        insert_raw(&env.src_client().await, &s, "c", &docs).await;
        let first = copy_with(
            &env,
            vec![format!("{s}.c:{d}.c")],
            Strategy::Stream,
            None,
            500,
        )
        .await;
        let second = copy_with(
            &env,
            vec![format!("{s}.c:{d}.c")],
            Strategy::Stream,
            None,
            500,
        )
        .await;
        assert_eq!((first.docs, second.docs), (2500, 2500));
        assert_eq!(
            first.bytes,
            docs.iter().map(|d| d.as_bytes().len() as u64).sum::<u64>()
        );
        assert_eq!(assert_same(&env, (&s, "c"), (&d, "c")).await, 2500);
    });
}

#[test]
fn cancel_stops_the_job_and_joins_every_task() {
    TestEnv::start().run(|env| async move {
        let (s, d) = (env.src_db("cancel"), env.dst_db("cancel"));
        let docs = sample_docs(20_000, 512);
        insert_raw(&env.src_client().await, &s, "c", &docs).await;
        let spec = spec(&env, vec![format!("{s}.c:{d}.c")], 2, 50, Strategy::Ids)
            .validate()
            .unwrap();
        let prepared = copy::prepare(&spec, common::memory_store()).await.unwrap();
        let stats = prepared.stats();
        let cancel = CancellationToken::new();
        let job = tokio::spawn(prepared.run(cancel.clone()));
        while stats.snapshot().docs == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        cancel.cancel();
        let outcome = tokio::time::timeout(Duration::from_secs(30), job)
            .await
            .expect("cancel ends the job promptly")
            .unwrap();
        assert!(matches!(
            outcome,
            Err(mongoferry::engine::CopyError::Stopped)
        ));
        let copied = stats.snapshot().docs;
        assert!(copied < 20_000, "stopped early, copied {copied}");
        // Nothing keeps writing after the job returned.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let n = env
            .dst_client()
            .await
            .database(&d)
            .collection::<RawDocumentBuf>("c")
            .count_documents(doc! {})
            .await
            .unwrap();
        assert_eq!(n, copied, "every counted document is written, nothing more");
        let _ = Arc::strong_count(&stats);
    });
}

/// A sharded destination (its shard key recorded in `config.collections`, as a router keeps it):
/// every upsert names the shard key. On this unsharded test server that shows as a document whose
/// shard key value changed since its earlier copy: its upsert no longer matches the old version,
/// and the server refuses the new one as a duplicate `_id`, where an upsert by `_id` alone would
/// have replaced it.
#[test]
fn upserts_into_a_sharded_destination_name_the_shard_key() {
    if std::env::var_os("MONGOFERRY_TEST_URI").is_some() {
        // A real deployment's `config` database is the server's own.
        return;
    }
    TestEnv::start().run(|env| async move {
        let (s, d) = (env.src_db("sharded"), env.dst_db("sharded"));
        let docs: Vec<_> = (0..100)
            .map(|i| rawdoc! { "_id": i, "region": if i % 2 == 0 { "eu" } else { "us" }, "v": "new" })
            .collect();
        insert_raw(&env.src_client().await, &s, "c", &docs).await;
        let dst = env.dst_client().await;
        dst.database("config")
            .collection::<mongodb::bson::Document>("collections")
            .insert_one(doc! { "_id": format!("{d}.c"), "key": { "region": 1 } })
            .await
            .unwrap();
        // Earlier copies: 0..10 with the same region (replaced), 10 with another one.
        let stale: Vec<_> = (0..10)
            .map(|i| rawdoc! { "_id": i, "region": if i % 2 == 0 { "eu" } else { "us" }, "v": "old" })
            .chain([rawdoc! { "_id": 10, "region": "us", "v": "old" }])
            .collect();
        insert_raw(&dst, &d, "c", &stale).await;
        let store = std::sync::Arc::new(mongoferry::state::MemoryStore::default());
        let spec = spec(&env, vec![format!("{s}.c:{d}.c")], 2, 25, Strategy::Stream)
            .validate()
            .unwrap();
        let summary = copy::prepare(&spec, store.clone())
            .await
            .unwrap()
            .run(CancellationToken::new())
            .await
            .unwrap();
        assert_eq!((summary.docs, summary.failed), (99, 1));
        let copied = dump(&dst, &d, "c").await;
        assert_eq!(copied.len(), 100);
        for (i, doc) in copied.iter().enumerate() {
            if i == 10 {
                assert_eq!(doc, &stale[10], "the old version stays, the new one is kept aside");
            } else {
                assert_eq!(doc, &docs[i]);
            }
        }
        let letters = store.dead_letters();
        assert_eq!(letters.len(), 1);
        assert_eq!(letters[0].code, Some(11000), "{:?}", letters[0]);
        assert_eq!(letters[0].document["region"], "eu");
    });
}

/// `readers: 3` reads three namespaces at once into the one queue: while the copy runs, several
/// of them are part-way at the same moment (one reader finishes a namespace before it starts the
/// next), and every namespace arrives byte-equal. A killed run with readers part-way through
/// several namespaces resumes each from its own watermark.
#[test]
fn readers_copy_several_namespaces_at_once_and_resume_each() {
    TestEnv::start().run(|env| async move {
        let (s, d) = (env.src_db("readers"), env.dst_db("readers"));
        let src = env.src_client().await;
        const PER_NS: i64 = 1_500;
        for coll in ["a", "b", "c", "e"] {
            insert_raw(&src, &s, coll, &sample_docs(PER_NS, 200)).await;
        }
        let namespaces = vec![format!("{s}.*:{d}.*")];
        let mut spec = spec(&env, namespaces, 2, 50, Strategy::Stream);
        spec.readers = Some(3);
        spec.rate = Some(3_000.0);
        let spec = spec.validate().unwrap();
        let prepared = copy::prepare(&spec, memory_store()).await.unwrap();
        let stats = prepared.stats();
        let job = tokio::spawn(prepared.run(CancellationToken::new()));
        let mut most_at_once = 0;
        while !job.is_finished() {
            let part_way = stats
                .snapshot()
                .namespaces
                .iter()
                .filter(|n| n.docs > 0 && !n.finished)
                .count();
            most_at_once = most_at_once.max(part_way);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let summary = job.await.unwrap().unwrap();
        assert_eq!(summary.docs, 4 * PER_NS as u64);
        assert!(
            most_at_once >= 2,
            "at most {most_at_once} namespace part-way at once"
        );
        for coll in ["a", "b", "c", "e"] {
            assert_same(&env, (&s, coll), (&d, coll)).await;
        }

        // Killed with three namespaces part-way, then run again: each resumes from its own
        // watermark, and nothing is missing or doubled.
        let (s2, d2) = (env.src_db("readers2"), env.dst_db("readers2"));
        for coll in ["a", "b", "c"] {
            insert_raw(&src, &s2, coll, &sample_docs(3_000, 200)).await;
        }
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state.json");
        let ns = format!("{s2}.*:{d2}.*");
        let argv = [
            "copy",
            "--from",
            &env.src,
            "--to",
            &env.dst,
            "--ns",
            &ns,
            "--readers",
            "3",
            "--batch-size",
            "100",
            "--rate",
            "2000",
            "--quiet",
            "--state",
            state.to_str().unwrap(),
        ];
        // Killed once its checkpoint has two namespaces part-way.
        let ended = kill_when(&argv, Duration::from_secs(30), || part_way(&state) >= 2).await;
        assert!(!ended, "the copy ended before it was killed");
        assert!(
            part_way(&state) >= 2,
            "never two namespaces part-way within 30 s"
        );
        let out = mongoferry(&argv, Duration::from_secs(60));
        assert!(out.status.success(), "{}", stderr(&out));
        for coll in ["a", "b", "c"] {
            assert_same(&env, (&s2, coll), (&d2, coll)).await;
        }
    });
}
