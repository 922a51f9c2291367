//! `mongoferry reconcile`: the destination made equal to the source by writing only what
//! differs, against real test servers. Every comparison reads both sides with clients of its
//! own, byte for byte.

mod common;

use std::hash::{Hash, Hasher};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::{dump, insert_raw, mongoferry, stderr, stdout, TestEnv};
use futures::future::BoxFuture;
use futures::FutureExt;
use mongodb::bson::{doc, rawdoc, Bson, Document, RawDocumentBuf};
use mongodb::Client;
use mongoferry::engine::CopyError;
use mongoferry::mongo::{Namespace, Side};
use mongoferry::run::compare::{read, Find};
use mongoferry::run::copy::{self, CopySummary};
use mongoferry::run::digest::{Digest, RangeDigest};
use mongoferry::spec::{JobSpec, Mode};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// `n` documents with nested fields and arrays, `_id` 0 to n-1.
fn nested_docs(n: i32) -> Vec<RawDocumentBuf> {
    (0..n)
        .map(|i| {
            rawdoc! {
                "_id": i,
                "name": format!("customer {i}"),
                "address": { "city": "Lyon", "geo": { "lat": 45.76, "zip": i } },
                "tags": ["a", "b", i],
            }
        })
        .collect()
}

/// The same documents on both sides.
async fn copied(env: &TestEnv, (s, d): (&str, &str), docs: &[RawDocumentBuf]) -> (Client, Client) {
    let (src, dst) = (env.src_client().await, env.dst_client().await);
    insert_raw(&src, s, "c", docs).await;
    insert_raw(&dst, d, "c", docs).await;
    (src, dst)
}

/// Runs `reconcile` with `extra` flags and `--json`: (exit status, summary).
fn reconcile(env: &TestEnv, (s, d): (&str, &str), state: &Path, extra: &[&str]) -> (i32, Value) {
    let ns = format!("{s}.c:{d}.c");
    let state = state.join("state.db");
    let mut argv = vec![
        "reconcile",
        "--from",
        &env.src,
        "--to",
        &env.dst,
        "--ns",
        &ns,
        "--state",
        state.to_str().unwrap(),
        "--json",
        "--quiet",
    ];
    argv.extend(extra);
    let out = mongoferry(&argv, Duration::from_secs(90));
    let summary = serde_json::from_str(stdout(&out).trim())
        .unwrap_or_else(|e| panic!("{e}: {} {}", stdout(&out), stderr(&out)));
    (out.status.code().unwrap_or(-1), summary)
}

/// Plants differences of every kind at the destination of 2,000 documents: 10 missing, 10
/// changed (top-level, nested and in an array), one whose `_id` changed number type, and 6
/// extras (one of them an `_id` of another type than its source twin). Returns (missing,
/// different, extra).
async fn plant_differences(dst: &Client, d: &str) -> (u64, u64, u64) {
    let c = dst.database(d).collection::<Document>("c");
    c.delete_many(doc! { "_id": { "$gte": 100, "$lt": 110 } })
        .await
        .unwrap();
    for i in 200..204 {
        c.update_one(doc! { "_id": i }, doc! { "$set": { "name": "changed" } })
            .await
            .unwrap();
    }
    for i in 300..303 {
        c.update_one(
            doc! { "_id": i },
            doc! { "$set": { "address.geo.zip": -1 } },
        )
        .await
        .unwrap();
    }
    for i in 400..403 {
        c.update_one(doc! { "_id": i }, doc! { "$push": { "tags": "extra" } })
            .await
            .unwrap();
    }
    // `_id` 7 as an Int64: the same `_id` to the server, another document byte for byte.
    let seven = c.find_one(doc! { "_id": 7 }).await.unwrap().unwrap();
    c.delete_one(doc! { "_id": 7 }).await.unwrap();
    let mut seven_long = seven.clone();
    seven_long.insert("_id", Bson::Int64(7));
    c.insert_one(seven_long).await.unwrap();
    for i in 0..5 {
        c.insert_one(doc! { "_id": 10_000 + i, "only": "here" })
            .await
            .unwrap();
    }
    c.insert_one(doc! { "_id": "5", "a": "string twin" })
        .await
        .unwrap();
    (10, 11, 6)
}

#[test]
fn a_reconcile_writes_exactly_what_differs_and_deletes_extras_only_when_asked() {
    TestEnv::start().run(|env| async move {
        let (s, d) = (env.src_db("rec"), env.dst_db("rec"));
        let (_, dst) = copied(&env, (&s, &d), &nested_docs(2_000)).await;
        let (missing, different, extra) = plant_differences(&dst, &d).await;
        let data = tempfile::tempdir().unwrap();

        // Without --delete-extra: everything written, extras kept and reported (status 3).
        let (status, summary) = reconcile(&env, (&s, &d), data.path(), &[]);
        let r = &summary["reconcile"];
        assert_eq!(status, 3, "{summary}");
        assert_eq!(r["missing"], missing, "{r}");
        assert_eq!(r["different"], different, "{r}");
        assert_eq!(r["extra"], extra, "{r}");
        assert_eq!(r["written"], missing + different, "{r}");
        assert_eq!(r["deleted"], 0, "{r}");
        assert_eq!(r["equal"], 2_000 - missing - different, "{r}");
        assert_eq!(r["compared"], 2_000 + extra, "{r}");
        assert_eq!(r["first_extra"].as_array().unwrap().len() as u64, extra);
        let left = dump(&dst, &d, "c").await;
        assert_eq!(left.len() as u64, 2_000 + extra);

        // A second run starts over (a reconcile is never "already complete") and deletes them.
        let (status, summary) = reconcile(&env, (&s, &d), data.path(), &["--delete-extra"]);
        let r = &summary["reconcile"];
        assert_eq!(status, 0, "{summary}");
        assert_eq!(
            (r["written"].as_u64(), r["deleted"].as_u64()),
            (Some(0), Some(extra)),
            "{r}"
        );
        assert_eq!(r["equal"], 2_000, "{r}");
        assert_eq!(common::assert_same(&env, (&s, "c"), (&d, "c")).await, 2_000);

        // Level: nothing to write.
        let (status, summary) = reconcile(&env, (&s, &d), data.path(), &["--delete-extra"]);
        let r = &summary["reconcile"];
        assert_eq!(status, 0, "{summary}");
        assert_eq!(
            (r["written"].as_u64(), r["deleted"].as_u64()),
            (Some(0), Some(0))
        );
        assert_eq!(r["equal"], 2_000, "{r}");
    });
}

#[test]
fn a_reconcile_fills_an_empty_destination_and_makes_its_indexes_and_options_equal() {
    TestEnv::start().run(|env| async move {
        let (s, d) = (env.src_db("recs"), env.dst_db("recs"));
        let (src, dst) = (env.src_client().await, env.dst_client().await);
        src.database(&s)
            .create_collection("c")
            .validator(doc! { "name": { "$exists": true } })
            .await
            .unwrap();
        insert_raw(&src, &s, "c", &nested_docs(300)).await;
        src.database(&s)
            .run_command(doc! { "createIndexes": "c", "indexes": [
            { "key": { "name": 1 }, "name": "by_name" } ] })
            .await
            .unwrap();
        // The destination has the collection without the validator, with an index the source
        // lacks, and a third of the documents.
        dst.database(&d).create_collection("c").await.unwrap();
        insert_raw(&dst, &d, "c", &nested_docs(100)).await;
        dst.database(&d)
            .run_command(doc! { "createIndexes": "c", "indexes": [
            { "key": { "tags": 1 }, "name": "by_tags" } ] })
            .await
            .unwrap();
        let data = tempfile::tempdir().unwrap();
        let (status, summary) = reconcile(&env, (&s, &d), data.path(), &[]);
        assert_eq!(status, 0, "{summary}");
        assert_eq!(summary["reconcile"]["written"], 200, "{summary}");
        assert_eq!(summary["reconcile"]["equal"], 100, "{summary}");
        common::assert_same(&env, (&s, "c"), (&d, "c")).await;
        let out = mongoferry(
            &[
                "verify",
                "--from",
                &env.src,
                "--to",
                &env.dst,
                "--ns",
                &format!("{s}.c:{d}.c"),
            ],
            Duration::from_secs(60),
        );
        assert!(out.status.success(), "{}", stdout(&out));
    });
}

#[test]
fn a_reconcile_killed_part_way_is_finished_by_a_rerun_without_writing_again() {
    TestEnv::start().run(|env| async move {
        let (s, d) = (env.src_db("reck"), env.dst_db("reck"));
        let docs = nested_docs(6_000);
        let (_, dst) = copied(&env, (&s, &d), &docs).await;
        // Every third document differs at the destination.
        let c = dst.database(&d).collection::<Document>("c");
        c.update_many(
            doc! { "$expr": { "$eq": [{ "$mod": ["$_id", 3] }, 0] } },
            doc! { "$set": { "name": "stale" } },
        )
        .await
        .unwrap();
        let data = tempfile::tempdir().unwrap();
        let state = data.path().join("state.db");
        let ns = format!("{s}.c:{d}.c");
        let argv = [
            "reconcile",
            "--from",
            &env.src,
            "--to",
            &env.dst,
            "--ns",
            &ns,
            "--state",
            state.to_str().unwrap(),
            "--rate",
            "1500",
            "--batch-size",
            "50",
            "--quiet",
        ];
        let ended = common::kill_when(&argv, Duration::from_secs(60), || {
            common::part_way(&state) > 0
        })
        .await;
        assert!(!ended, "the reconcile ended before it could be killed");
        // What is left to do, as an independent comparison sees it.
        let out = mongoferry(
            &[
                "verify", "--from", &env.src, "--to", &env.dst, "--ns", &ns, "--json",
            ],
            Duration::from_secs(60),
        );
        let left: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
        let left = left["different"].as_u64().unwrap();
        assert!(0 < left && left < 2_000, "{left} of 2,000 still differ");
        let (status, summary) = reconcile(&env, (&s, &d), data.path(), &[]);
        assert_eq!(status, 0, "{summary}");
        assert_eq!(summary["resumed"], true, "{summary}");
        assert!(summary["skipped"].as_u64() > Some(0), "{summary}");
        // Only what the first run had not written is written again.
        assert_eq!(summary["reconcile"]["written"], left, "{summary}");
        common::assert_same(&env, (&s, "c"), (&d, "c")).await;
    });
}

#[test]
fn a_reconcile_refuses_drop_and_options_it_cannot_change_in_place() {
    TestEnv::start().run(|env| async move {
        let (s, d) = (env.src_db("recr"), env.dst_db("recr"));
        let (src, dst) = (env.src_client().await, env.dst_client().await);
        src.database(&s)
            .create_collection("c")
            .capped(true)
            .size(1 << 20)
            .await
            .unwrap();
        dst.database(&d).create_collection("c").await.unwrap();
        insert_raw(&src, &s, "c", &nested_docs(10)).await;
        let data = tempfile::tempdir().unwrap();
        let ns = format!("{s}.c:{d}.c");
        let state = data.path().join("state.db");
        let base = [
            "reconcile",
            "--from",
            &env.src,
            "--to",
            &env.dst,
            "--ns",
            &ns,
            "--state",
            state.to_str().unwrap(),
        ];
        let out = mongoferry(&base, Duration::from_secs(60));
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        assert!(
            stderr(&out).contains("cannot be changed in place"),
            "{}",
            stderr(&out)
        );
        let dropped = mongoferry(&[&base[..], &["--drop"]].concat(), Duration::from_secs(60));
        assert_eq!(dropped.status.code(), Some(2), "{}", stderr(&dropped));
        assert!(stderr(&dropped).contains("--drop"), "{}", stderr(&dropped));
        assert!(dump(&dst, &d, "c").await.is_empty(), "nothing was written");
        let copy_flag = mongoferry(
            &[
                "copy",
                "--from",
                &env.src,
                "--to",
                &env.dst,
                "--ns",
                &ns,
                "--delete-extra",
            ],
            Duration::from_secs(30),
        );
        assert_eq!(copy_flag.status.code(), Some(2), "{}", stderr(&copy_flag));
    });
}

/// A digest computed by reading the documents, as a server would compute it on its side:
/// exact (every byte, in `_id` order), over whole collections and ranges alike. `lies`: every
/// digest agrees, whatever the documents (to show that what a digest calls equal is not read).
struct ReadingDigest {
    lies: bool,
}

impl RangeDigest for ReadingDigest {
    fn digest<'a>(
        &'a self,
        (side, client): (Side, &'a Client),
        ns: &'a Namespace,
        find: &'a Find,
        _whole: bool,
    ) -> BoxFuture<'a, Result<Option<Digest>, CopyError>> {
        async move {
            let docs = read(client, (side, ns), find.clone(), "digest").await?;
            let mut hasher = std::hash::DefaultHasher::new();
            for (_, doc) in &docs {
                doc.as_bytes().hash(&mut hasher);
            }
            let hash = match self.lies {
                true => "same".to_string(),
                false => format!("{:016x}", hasher.finish()),
            };
            Ok(Some(Digest {
                docs: docs.len() as u64,
                hash,
            }))
        }
        .boxed()
    }

    fn ranges(&self) -> bool {
        true
    }
}

async fn reconcile_with(env: &TestEnv, (s, d): (&str, &str), lies: bool) -> CopySummary {
    let mut spec = JobSpec::new(&env.src, &env.dst, &[&format!("{s}.c:{d}.c")]);
    spec.mode = Some(Mode::Reconcile);
    let spec = spec.validate().unwrap();
    copy::prepare(&spec, common::memory_store())
        .await
        .unwrap()
        .with_digests(Arc::new(ReadingDigest { lies }))
        .run(CancellationToken::new())
        .await
        .unwrap()
}

#[test]
fn ranges_whose_digests_agree_are_not_read() {
    TestEnv::start().run(|env| async move {
        let (s, d) = (env.src_db("recd"), env.dst_db("recd"));
        let (_, dst) = copied(&env, (&s, &d), &nested_docs(20_000)).await;
        let c = dst.database(&d).collection::<Document>("c");
        c.update_many(
            doc! { "_id": { "$gte": 15_000, "$lt": 15_030 } },
            doc! { "$set": { "name": "stale" } },
        )
        .await
        .unwrap();
        // A digest that lies: nothing is read, nothing written; the differences stay.
        let summary = reconcile_with(&env, (&s, &d), true).await;
        let r = summary.reconcile.unwrap();
        assert_eq!(
            (r.written, r.digested, r.equal),
            (0, 20_000, 20_000),
            "{r:?}"
        );
        assert_eq!(dump(&dst, &d, "c").await.len(), 20_000);
        // An exact one: the whole collection differs, so it is split in ranges of about
        // 10,000 documents; only the one that holds the differences is read.
        let summary = reconcile_with(&env, (&s, &d), false).await;
        let r = summary.reconcile.unwrap();
        assert_eq!((r.written, r.equal), (30, 19_970), "{r:?}");
        assert!(
            (5_000..=15_000).contains(&r.digested),
            "about half proven by digest: {r:?}"
        );
        common::assert_same(&env, (&s, "c"), (&d, "c")).await;
    });
}

#[test]
fn a_reconcile_in_partitions_read_at_once_counts_the_same() {
    TestEnv::start().run(|env| async move {
        let (s, d) = (env.src_db("recp"), env.dst_db("recp"));
        let (_, dst) = copied(&env, (&s, &d), &nested_docs(2_000)).await;
        let (missing, different, extra) = plant_differences(&dst, &d).await;
        let data = tempfile::tempdir().unwrap();
        let flags = [
            "--delete-extra",
            "--readers",
            "3",
            "--partition-docs",
            "400",
        ];
        let (status, summary) = reconcile(&env, (&s, &d), data.path(), &flags);
        let r = &summary["reconcile"];
        assert_eq!(status, 0, "{summary}");
        assert!(
            summary["namespaces"][0]["partitions"].as_u64() > Some(1),
            "{summary}"
        );
        assert_eq!(r["written"], missing + different, "{r}");
        assert_eq!(r["deleted"], extra, "{r}");
        assert_eq!(r["equal"], 2_000 - missing - different, "{r}");
        assert_eq!(common::assert_same(&env, (&s, "c"), (&d, "c")).await, 2_000);
    });
}

/// SecantusDB walks document-valued `_id`s in the order of their bytes (`{k: 256}` before
/// `{k: 1}`), not MongoDB's. Pages cut by MongoDB's order would pair the wrong documents, and
/// the extras they seem to find are not extras: the reconcile stops, and deletes nothing.
#[test]
fn a_server_that_sorts_ids_out_of_mongodb_order_stops_a_reconcile_before_it_deletes() {
    TestEnv::start().run(|env| async move {
        let (s, d) = (env.src_db("reco"), env.dst_db("reco"));
        let docs: Vec<RawDocumentBuf> = [1, 256, 2, 512]
            .iter()
            .map(|&k| rawdoc! { "_id": { "k": k }, "v": k })
            .collect();
        let (_, dst) = copied(&env, (&s, &d), &docs).await;
        insert_raw(&dst, &d, "c", &[rawdoc! { "_id": { "k": 3 }, "v": 0 }]).await;
        let ns = format!("{s}.c:{d}.c");
        let out = mongoferry(
            &[
                "reconcile",
                "--from",
                &env.src,
                "--to",
                &env.dst,
                "--ns",
                &ns,
                "--delete-extra",
                "--quiet",
            ],
            Duration::from_secs(60),
        );
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        assert!(
            stderr(&out).contains("which MongoDB sorts before it"),
            "{}",
            stderr(&out)
        );
        let left = dump(&dst, &d, "c").await;
        assert_eq!(left.len(), 5, "nothing deleted: {left:?}");
    });
}
