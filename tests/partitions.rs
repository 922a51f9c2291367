//! Partitions against a real MongoDB-compatible server: a namespace split into `_id` ranges is
//! read by several readers at once, every document exactly once whatever the types of its
//! `_id`s, and a killed job resumes each partition from its own watermark.

mod common;

use std::time::Duration;

use common::*;
use mongodb::bson::{doc, Bson, RawDocumentBuf};
use mongoferry::engine::stats::PartState;
use mongoferry::engine::Strategy;
use mongoferry::run::copy;
use mongoferry::spec::JobSpec;
use tokio_util::sync::CancellationToken;

/// Every type of `_id` the server stores, NaN among them, and many numbers and strings
/// between them so that split points fall inside brackets as well as between them.
fn mixed_id_docs() -> Vec<RawDocumentBuf> {
    let mut docs = every_type_documents();
    let extra: Vec<Bson> = [
        Bson::Double(f64::NAN),
        Bson::Double(f64::NEG_INFINITY),
        Bson::Double(f64::INFINITY),
    ]
    .into_iter()
    .chain((0..120).map(|i| match i % 4 {
        0 => Bson::Int32(i * 10),
        1 => Bson::Double(f64::from(i) * 10.5),
        2 => Bson::String(format!("k{i:04}")),
        _ => Bson::Int64(i64::from(i) * 1_000),
    }))
    .collect();
    for (i, id) in extra.into_iter().enumerate() {
        let body = doc! { "_id": id, "i": i as i64, "pad": "x".repeat(100) };
        docs.push(RawDocumentBuf::from_document(&body).unwrap());
    }
    docs
}

fn partitioned_spec(env: &TestEnv, ns: String, strategy: Strategy) -> JobSpec {
    let mut spec = JobSpec::new(&env.src, &env.dst, &[]);
    spec.endpoints.namespaces = vec![ns];
    spec.endpoints.connect_timeout_secs = Some(20.0);
    JobSpec {
        workers: Some(3),
        readers: Some(3),
        batch_size: Some(7),
        partition_docs: Some(12),
        strategy: Some(strategy),
        ..spec
    }
}

/// Mixed `_id` types over partitions: each document is written exactly once (the job counts
/// what it wrote, which a document read by two partitions would raise), and both sides are
/// byte-equal.
fn mixed_ids_over_partitions(strategy: Strategy) {
    TestEnv::start().run(move |env| async move {
        let (s, d) = (env.src_db("parts"), env.dst_db("parts"));
        let docs = mixed_id_docs();
        insert_raw(&env.src_client().await, &s, "mixed", &docs).await;
        let spec = partitioned_spec(&env, format!("{s}.mixed:{d}.mixed"), strategy);
        let prepared = copy::prepare(&spec.validate().unwrap(), memory_store())
            .await
            .unwrap();
        let stats = prepared.stats();
        let summary = prepared.run(CancellationToken::new()).await.unwrap();
        assert_eq!(summary.docs, docs.len() as u64, "each document once");
        let ns = &stats.snapshot().namespaces[0];
        assert!(
            ns.partitions.len() >= 5,
            "{} partitions",
            ns.partitions.len()
        );
        assert!(ns.partitions.iter().all(|p| p.state == PartState::Complete));
        assert_eq!(
            ns.partitions.iter().map(|p| p.done).sum::<u64>(),
            docs.len() as u64
        );
        assert_eq!(
            assert_same(&env, (&s, "mixed"), (&d, "mixed")).await,
            docs.len()
        );
    });
}

#[test]
fn mixed_ids_over_partitions_streaming() {
    mixed_ids_over_partitions(Strategy::Stream);
}

#[test]
fn mixed_ids_over_partitions_by_id() {
    mixed_ids_over_partitions(Strategy::Ids);
}

/// A partitioned copy killed with `-9` while several partitions are part-way resumes each from
/// its own watermark over the same ranges: the rerun skips what was checkpointed and the
/// destination ends byte-equal.
#[test]
fn a_killed_partitioned_copy_resumes_each_partition() {
    TestEnv::start().run(|env| async move {
        let (s, d) = (env.src_db("partsk"), env.dst_db("partsk"));
        insert_raw(&env.src_client().await, &s, "c", &sample_docs(6_000, 200)).await;
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state.json");
        let ns = format!("{s}.c:{d}.c");
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
            "--partition-docs",
            "1000",
            "--batch-size",
            "100",
            "--rate",
            "2000",
            "--quiet",
            "--state",
            state.to_str().unwrap(),
        ];
        let ended = kill_when(&argv, Duration::from_secs(60), || part_way(&state) >= 2).await;
        assert!(!ended, "the copy ended before it was killed");
        assert!(
            part_way(&state) >= 2,
            "never two partitions part-way within 60 s"
        );
        let ranges = |parts: &[serde_json::Value]| -> Vec<serde_json::Value> {
            parts.iter().map(|p| p["part"].clone()).collect()
        };
        let before = saved_entries(&state);
        assert!(before.len() >= 5, "{} partitions kept", before.len());
        assert!(before.iter().all(|p| p["part"].is_object()), "{before:?}");
        let checkpointed: u64 = before.iter().filter_map(|p| p["done"].as_u64()).sum();

        let out = mongoferry(&argv, Duration::from_secs(90));
        assert!(out.status.success(), "{}", stderr(&out));
        let after = saved_entries(&state);
        assert_eq!(ranges(&after), ranges(&before), "the same ranges are read");
        assert!(after.iter().all(|p| p["complete"] == true));
        assert_eq!(
            after.iter().filter_map(|p| p["done"].as_u64()).sum::<u64>(),
            6_000
        );
        assert!(checkpointed > 0);
        assert_same(&env, (&s, "c"), (&d, "c")).await;
    });
}

/// The two sides of every possible split point, asked of the server: `after(p)` and `up_to(p)`
/// never share a document and together hold them all, whatever the type of `p` (NaN, regex,
/// code, null, MinKey and MaxKey included). Partitions are built from these two queries.
#[test]
fn every_split_point_divides_the_ids_exactly() {
    use mongoferry::mongo::bson_order::{after, up_to};
    TestEnv::start().run(|env| async move {
        let s = env.src_db("split");
        let docs = mixed_id_docs();
        let client = env.src_client().await;
        insert_raw(&client, &s, "mixed", &docs).await;
        let coll = client
            .database(&s)
            .collection::<mongodb::bson::Document>("mixed");
        let total = docs.len() as u64;
        for doc in &docs {
            let point = doc.get("_id").unwrap().unwrap().to_raw_bson();
            let (above, below) = (after(&point), up_to(&point));
            let count = |filter| coll.count_documents(filter);
            let (a, b) = (
                count(above.clone()).await.unwrap(),
                count(below.clone()).await.unwrap(),
            );
            let both = count(doc! { "$and": [above.clone(), below.clone()] })
                .await
                .unwrap();
            assert_eq!(
                (a + b, both),
                (total, 0),
                "split at {point:?}: {above} / {below}"
            );
        }
    });
}

/// A partitioned copy with a journal and `--verify`: the verify finds both sides equal, and the
/// journal replayed into an empty database gives the same documents. A partitioned sync
/// follows the writes made during its initial copy and converges.
#[test]
fn partitions_work_with_the_journal_verify_and_sync() {
    TestEnv::start().run(|env| async move {
        let owned = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let limit = Duration::from_secs(90);
        let (s, d) = (env.src_db("partsj"), env.dst_db("partsj"));
        let src = env.src_client().await;
        insert_raw(&src, &s, "c", &sample_docs(3_000, 200)).await;
        let dir = tempfile::tempdir().unwrap();
        let journal = dir.path().join("journal");
        let state = dir.path().join("state.json");
        let (journal_arg, state_arg) = (journal.to_str().unwrap(), state.to_str().unwrap());
        let ns = format!("{s}.c:{d}.c");
        let partitioned = [
            "--readers",
            "3",
            "--partition-docs",
            "400",
            "--batch-size",
            "50",
        ];
        let copy = [
            &["copy", "--from", &env.src, "--to", &env.dst, "--ns", &ns][..],
            &partitioned,
            &[
                "--journal",
                journal_arg,
                "--verify",
                "--json",
                "--quiet",
                "--state",
                state_arg,
            ],
        ]
        .concat();
        let out = mongoferry_async(owned(&copy), limit).await;
        assert!(out.status.success(), "{}", stderr(&out));
        let summary: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
        assert_eq!(summary["docs"], 3_000, "{summary}");
        assert_eq!(summary["verify"]["identical"], true, "{summary}");
        assert!(
            summary["namespaces"][0]["partitions"].as_u64() >= Some(5),
            "{summary}"
        );

        let replayed = env.dst_db("partsj_replayed");
        let out = mongoferry_async(
            owned(&[
                "journal",
                "replay",
                journal_arg,
                "--to",
                &env.dst,
                "--ns",
                &format!("{d}.c:{replayed}.c"),
                "--quiet",
            ]),
            limit,
        )
        .await;
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(assert_same(&env, (&s, "c"), (&replayed, "c")).await, 3_000);

        // A sync whose initial copy is partitioned, with writes going on meanwhile.
        let (s2, d2) = (env.src_db("partss"), env.dst_db("partss"));
        insert_raw(&src, &s2, "c", &sample_docs(3_000, 200)).await;
        let ns2 = format!("{s2}.c:{d2}.c");
        let sync = [
            &["sync", "--from", &env.src, "--to", &env.dst, "--ns", &ns2][..],
            &partitioned,
            &[
                "--rate",
                "1500",
                "--until-caught-up",
                "--quiet",
                "--state",
                state_arg,
            ],
        ]
        .concat();
        let running = tokio::spawn(mongoferry_async(owned(&sync), limit));
        let coll = src.database(&s2).collection::<mongodb::bson::Document>("c");
        for i in 0..300_i64 {
            coll.update_one(doc! { "_id": i * 7 }, doc! { "$set": { "touched": i } })
                .await
                .unwrap();
            coll.insert_one(doc! { "_id": 100_000 + i, "late": true })
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
        let out = running.await.unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        // Caught up once; again, after the last write.
        let out = mongoferry_async(owned(&sync), limit).await;
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(assert_same(&env, (&s2, "c"), (&d2, "c")).await, 3_300);
    });
}

/// Refused documents over partitions become dead letters, each once, while the rest is
/// copied; and a move over partitions leaves the source without the documents and the
/// destination with them, byte-equal.
#[test]
fn partitions_keep_refused_documents_and_move() {
    TestEnv::start().run(|env| async move {
        let (s, d) = (env.src_db("partsr"), env.dst_db("partsr"));
        let src = env.src_client().await;
        // Every tenth document is too large for the limit below.
        let docs: Vec<RawDocumentBuf> = (0..1_000_i64)
            .map(|i| {
                let pad = "x".repeat(if i % 10 == 0 { 2_000 } else { 100 });
                RawDocumentBuf::from_document(&doc! { "_id": i, "pad": pad }).unwrap()
            })
            .collect();
        insert_raw(&src, &s, "c", &docs).await;
        let mut spec = partitioned_spec(&env, format!("{s}.c:{d}.c"), Strategy::Stream);
        spec.partition_docs = Some(100);
        spec.max_document_bytes = Some(1_000);
        let store = std::sync::Arc::new(mongoferry::state::MemoryStore::default());
        let prepared = copy::prepare(&spec.validate().unwrap(), store.clone())
            .await
            .unwrap();
        let stats = prepared.stats();
        let summary = prepared.run(CancellationToken::new()).await.unwrap();
        assert_eq!((summary.docs, summary.failed), (900, 100));
        assert!(stats.snapshot().namespaces[0].partitions.len() >= 5);
        let mut refused: Vec<String> = store
            .dead_letters()
            .iter()
            .map(|l| l.id["$numberLong"].as_str().unwrap().to_string())
            .collect();
        refused.sort_by_key(|id| id.parse::<i64>().unwrap());
        let expected: Vec<String> = (0..100).map(|i| (i * 10).to_string()).collect();
        assert_eq!(refused, expected, "each refused document kept once");

        let (s2, d2) = (env.src_db("partsm"), env.dst_db("partsm"));
        let moved = sample_docs(1_500, 200);
        insert_raw(&src, &s2, "c", &moved).await;
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state.db");
        let ns = format!("{s2}.c:{d2}.c");
        let argv = [
            "move",
            "--from",
            &env.src,
            "--to",
            &env.dst,
            "--ns",
            &ns,
            "--readers",
            "2",
            "--partition-docs",
            "300",
            "--quiet",
            "--state",
            state.to_str().unwrap(),
        ];
        let out = mongoferry(&argv, Duration::from_secs(90));
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(
            dump(&src, &s2, "c").await.is_empty(),
            "the source keeps nothing"
        );
        assert_eq!(dump(&env.dst_client().await, &d2, "c").await, moved);
    });
}
