//! The schema comes along: every index kind and collection kind the test server has, views,
//! option conflicts, `--drop`, `--exclude`, `--ns '*'`, and `verify` of the schema.

mod common;

use std::time::Duration;

use common::*;
use futures::TryStreamExt;
use mongodb::bson::{doc, rawdoc, Document};
use mongodb::Client;
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(90);

fn argv(list: &[&str]) -> Vec<String> {
    list.iter().map(|a| a.to_string()).collect()
}

async fn command(client: &Client, db: &str, command: Document) {
    client
        .database(db)
        .run_command(command.clone())
        .await
        .unwrap_or_else(|e| panic!("{command}: {e}"));
}

/// `listCollections` of `db` as the server reports it: name -> (type, options), the view's
/// `viewOn` given back under the source's name by `rename`.
async fn collections(client: &Client, db: &str) -> Vec<(String, String, Document)> {
    let specs: Vec<Document> = client
        .database(db)
        .run_cursor_command(doc! { "listCollections": 1 })
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let mut found: Vec<_> = specs
        .into_iter()
        .map(|s| {
            (
                s.get_str("name").unwrap().to_string(),
                s.get_str("type").unwrap_or("collection").to_string(),
                s.get_document("options").cloned().unwrap_or_default(),
            )
        })
        .collect();
    found.sort_by(|a, b| a.0.cmp(&b.0));
    found
}

/// `listIndexes` of a collection as the server reports it, without `v` and `ns`, by name.
async fn indexes(client: &Client, db: &str, coll: &str) -> Vec<Document> {
    let mut found: Vec<Document> = client
        .database(db)
        .run_cursor_command(doc! { "listIndexes": coll })
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    for index in &mut found {
        index.remove("v");
        index.remove("ns");
    }
    found.sort_by(|a, b| a.get_str("name").unwrap().cmp(b.get_str("name").unwrap()));
    found
}

#[test]
fn every_index_and_collection_kind_arrives_as_the_source_has_it() {
    TestEnv::start().run(|env| async move {
        let (s, d) = (env.src_db("kinds"), env.dst_db("kinds"));
        let src = env.src_client().await;
        let docs: Vec<_> = (0..300)
            .map(|i| {
                rawdoc! {
                    "_id": i, "a": i % 50, "b": i, "name": format!("N{}", i % 7),
                    "created": mongodb::bson::DateTime::from_millis(1_700_000_000_000 + i),
                    "loc": { "type": "Point", "coordinates": [i as f64 / 10.0, 1.0] },
                    "pt": [i as f64 / 100.0, 2.0], "x": { "y": i },
                }
            })
            .collect();
        insert_raw(&src, &s, "orders", &docs).await;
        for index in [
            doc! { "key": { "a": 1, "b": -1 }, "name": "a_b_unique_partial", "unique": true,
                   "partialFilterExpression": { "a": { "$gt": 5 } } },
            doc! { "key": { "created": 1 }, "name": "created_ttl", "expireAfterSeconds": 3_153_600_000_i64 },
            doc! { "key": { "name": 1 }, "name": "name_sparse_ci", "sparse": true,
                   "collation": { "locale": "en", "strength": 2 } },
            doc! { "key": { "loc": "2dsphere" }, "name": "loc_2dsphere" },
            doc! { "key": { "pt": "2d" }, "name": "pt_2d" },
            doc! { "key": { "$**": 1 }, "name": "wildcard_x", "wildcardProjection": { "x": 1 } },
            doc! { "key": { "b": 1 }, "name": "b_hidden", "hidden": true },
        ] {
            command(&src, &s, doc! { "createIndexes": "orders", "indexes": [index] }).await;
        }
        // A validator the source applies "moderate"ly, and a document it let in before it.
        command(&src, &s, doc! { "create": "people" }).await;
        insert_raw(&src, &s, "people", &[rawdoc! { "_id": 1, "nameless": true }]).await;
        command(&src, &s, doc! {
            "collMod": "people",
            "validator": { "$jsonSchema": { "required": ["name"] } },
            "validationLevel": "strict", "validationAction": "error",
        })
        .await;
        insert_raw(&src, &s, "people", &[rawdoc! { "_id": 2, "name": "Ann" }]).await;
        command(&src, &s, doc! { "create": "words", "collation": { "locale": "fr", "strength": 1 } }).await;
        command(&src, &s, doc! { "create": "log", "capped": true, "size": 1_048_576, "max": 1000 }).await;
        command(&src, &s, doc! { "create": "clustered",
            "clusteredIndex": { "key": { "_id": 1 }, "unique": true, "name": "by_id" } }).await;
        command(&src, &s, doc! { "create": "metrics",
            "timeseries": { "timeField": "t", "metaField": "m", "granularity": "minutes" },
            "expireAfterSeconds": 3_153_600_000_i64 }).await;
        command(&src, &s, doc! { "create": "audited", "changeStreamPreAndPostImages": { "enabled": true } }).await;
        for coll in ["words", "log", "clustered", "audited"] {
            insert_raw(&src, &s, coll, &sample_docs(50, 100)).await;
        }
        let t = mongodb::bson::DateTime::from_millis(1_700_000_000_000);
        let measurements: Vec<_> = (0..40)
            .map(|i| rawdoc! { "_id": i, "t": t, "m": { "sensor": i % 3 }, "v": i })
            .collect();
        insert_raw(&src, &s, "metrics", &measurements).await;
        command(&src, &s, doc! { "create": "big_orders", "viewOn": "orders",
            "pipeline": [{ "$match": { "b": { "$gt": 100 } } }] }).await;

        let out = mongoferry_async(
            argv(&["copy", "--from", &env.src, "--to", &env.dst, "--ns", &format!("{s}.*:{d}"),
                   "--json", "--no-state"]),
            LIMIT,
        )
        .await;
        assert!(out.status.success(), "{}", stderr(&out));
        let summary: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
        assert_eq!(summary["schema"]["indexes_built"], 7, "{summary}");
        assert_eq!(summary["schema"]["views"], serde_json::json!([format!("{d}.big_orders")]));

        let dst = env.dst_client().await;
        // listCollections: the same names, kinds and options.
        let (a, b) = (collections(&src, &s).await, collections(&dst, &d).await);
        assert_eq!(a.len(), 8, "{a:?}");
        assert_eq!(a, b, "collections and their options");
        // listIndexes: the same, index by index, on every collection.
        for (name, kind, _) in &a {
            if kind == "view" {
                continue;
            }
            assert_eq!(indexes(&src, &s, name).await, indexes(&dst, &d, name).await, "{name}");
            let n = assert_same(&env, (&s, name), (&d, name)).await;
            assert!(n > 0, "{name} has documents");
        }
        // The validator is in force at the destination, and the copy went past it.
        let refused = dst
            .database(&d)
            .collection::<Document>("people")
            .insert_one(doc! { "_id": 3 })
            .await;
        assert!(refused.is_err(), "the destination validates");
        // verify: documents and schema identical.
        let out = mongoferry_async(
            argv(&["verify", "--from", &env.src, "--to", &env.dst, "--ns", &format!("{s}.*:{d}"),
                   "--json"]),
            LIMIT,
        )
        .await;
        let report: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
        assert_eq!(out.status.code(), Some(0), "{report}");
        assert_eq!(report["schema"], serde_json::json!([]));
    });
}

#[test]
fn a_destination_with_other_options_stops_the_copy_unless_it_is_dropped() {
    TestEnv::start().run(|env| async move {
        let (s, d) = (env.src_db("conflict"), env.dst_db("conflict"));
        let src = env.src_client().await;
        command(
            &src,
            &s,
            doc! { "create": "words", "collation": { "locale": "en", "strength": 2 } },
        )
        .await;
        insert_raw(&src, &s, "words", &sample_docs(100, 100)).await;
        let dst = env.dst_client().await;
        command(
            &dst,
            &d,
            doc! { "create": "words", "collation": { "locale": "fr" } },
        )
        .await;
        insert_raw(&dst, &d, "words", &[rawdoc! { "_id": "old" }]).await;
        let ns = format!("{s}.words:{d}.words");
        let copy = |extra: &[&str]| {
            let mut list = argv(&[
                "copy",
                "--from",
                &env.src,
                "--to",
                &env.dst,
                "--ns",
                &ns,
                "--json",
                "--no-state",
            ]);
            list.extend(argv(extra));
            mongoferry_async(list, LIMIT)
        };
        let out = copy(&[]).await;
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(
            err.contains(&format!("{d}.words exists with other options")),
            "{err}"
        );
        assert!(err.contains("option collation"), "{err}");
        assert!(err.contains("--drop"), "{err}");
        let kept = dump(&dst, &d, "words").await;
        assert_eq!(kept.len(), 1, "nothing was written");

        let out = copy(&["--drop"]).await;
        assert!(out.status.success(), "{}", stderr(&out));
        let summary: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
        assert_eq!(
            summary["schema"]["dropped"],
            serde_json::json!([format!("{d}.words")])
        );
        assert_eq!(collections(&src, &s).await, collections(&dst, &d).await);
        assert_eq!(assert_same(&env, (&s, "words"), (&d, "words")).await, 100);
    });
}

#[test]
fn indexes_before_after_or_none_and_a_refused_index_leaves_the_others_built() {
    TestEnv::start().run(|env| async move {
        let s = env.src_db("ix");
        let src = env.src_client().await;
        insert_raw(&src, &s, "c", &sample_docs(500, 100)).await;
        for index in [
            doc! { "key": { "qty": 1 }, "name": "qty_1" },
            doc! { "key": { "status": 1, "price": -1 }, "name": "status_price" },
            doc! { "key": { "name": 1 }, "name": "name_unique", "unique": true },
        ] {
            command(&src, &s, doc! { "createIndexes": "c", "indexes": [index] }).await;
        }
        let copy = |dst_db: String, extra: Vec<String>| {
            let mut list = argv(&[
                "copy",
                "--from",
                &env.src,
                "--to",
                &env.dst,
                "--json",
                "--no-state",
                "--ns",
            ]);
            list.push(format!("{s}.c:{dst_db}.c"));
            list.extend(extra);
            mongoferry_async(list, LIMIT)
        };
        let dst = env.dst_client().await;
        let names = |list: Vec<Document>| -> Vec<String> {
            list.iter()
                .map(|i| i.get_str("name").unwrap().to_string())
                .collect()
        };
        for (mode, expected) in [
            (
                "before",
                vec!["_id_", "name_unique", "qty_1", "status_price"],
            ),
            (
                "after",
                vec!["_id_", "name_unique", "qty_1", "status_price"],
            ),
            ("none", vec!["_id_"]),
        ] {
            let d = env.dst_db(&format!("ix_{mode}"));
            let out = copy(d.clone(), argv(&["--indexes", mode])).await;
            assert!(out.status.success(), "{mode}: {}", stderr(&out));
            assert_eq!(names(indexes(&dst, &d, "c").await), expected, "{mode}");
            assert_eq!(assert_same(&env, (&s, "c"), (&d, "c")).await, 500);
        }
        // An index of the same name but other options waits at the destination: that one is
        // refused, with its reason; the others are built; the copy ends with status 3.
        let d = env.dst_db("ix_clash");
        command(
            &dst,
            &d,
            doc! { "createIndexes": "c",
            "indexes": [{ "key": { "qty": -1 }, "name": "qty_1" }] },
        )
        .await;
        let out = copy(d.clone(), vec![]).await;
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(3), "{err}");
        assert!(
            err.contains("the destination refused 1 indexes: qty_1"),
            "{err}"
        );
        let summary: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
        assert_eq!(summary["schema"]["indexes_built"], 2, "{summary}");
        assert_eq!(summary["schema"]["index_errors"][0]["index"], "qty_1");
        assert_eq!(assert_same(&env, (&s, "c"), (&d, "c")).await, 500);
    });
}

#[test]
fn everything_but_the_excluded_and_verify_sees_schema_differences() {
    TestEnv::start().run(|env| async move {
        if std::env::var("MONGOFERRY_TEST_URI").is_ok() {
            return; // `*` would copy a shared server onto itself.
        }
        let src = env.src_client().await;
        for (db, coll) in [
            ("shop", "orders"),
            ("shop", "tmp_1"),
            ("crm", "people"),
            ("scratch", "x"),
        ] {
            insert_raw(&src, db, coll, &sample_docs(20, 100)).await;
        }
        command(
            &src,
            "shop",
            doc! { "createIndexes": "orders",
            "indexes": [{ "key": { "qty": 1 }, "name": "qty_1" }] },
        )
        .await;
        let out = mongoferry_async(
            argv(&[
                "copy",
                "--from",
                &env.src,
                "--to",
                &env.dst,
                "--ns",
                "*",
                "--exclude",
                "scratch.*",
                "--exclude",
                "*.tmp_?",
                "--json",
                "--no-state",
            ]),
            LIMIT,
        )
        .await;
        assert!(out.status.success(), "{}", stderr(&out));
        let dst = env.dst_client().await;
        let mut dbs = dst.list_database_names().await.unwrap();
        dbs.retain(|d| !["admin", "local", "config"].contains(&d.as_str()));
        dbs.sort();
        assert_eq!(dbs, ["crm", "shop"]);
        assert_eq!(collections(&dst, "shop").await.len(), 1, "tmp_1 excluded");
        assert_eq!(
            assert_same(&env, ("shop", "orders"), ("shop", "orders")).await,
            20
        );
        assert_eq!(
            assert_same(&env, ("crm", "people"), ("crm", "people")).await,
            20
        );

        // The schema drifts at the destination: verify says where (status 3), unless asked
        // for the documents only.
        command(
            &dst,
            "shop",
            doc! { "dropIndexes": "orders", "index": "qty_1" },
        )
        .await;
        let verify = |extra: &[&str]| {
            let mut list = argv(&[
                "verify",
                "--from",
                &env.src,
                "--to",
                &env.dst,
                "--ns",
                "shop.orders",
                "--json",
            ]);
            list.extend(argv(extra));
            mongoferry_async(list, LIMIT)
        };
        let out = verify(&[]).await;
        let report: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
        assert_eq!(out.status.code(), Some(3), "{report}");
        let differences = report["schema"][0]["differences"].to_string();
        assert!(
            differences.contains("index qty_1") && differences.contains("missing"),
            "{differences}"
        );
        let out = verify(&["--documents-only"]).await;
        assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    });
}

#[test]
fn plan_shows_what_a_copy_would_do_and_writes_nothing() {
    TestEnv::start().run(|env| async move {
        let (s, d) = (env.src_db("plan"), env.dst_db("plan"));
        let src = env.src_client().await;
        insert_raw(&src, &s, "orders", &sample_docs(2_000, 500)).await;
        insert_raw(&src, &s, "words", &sample_docs(10, 100)).await;
        command(
            &src,
            &s,
            doc! { "createIndexes": "orders",
            "indexes": [{ "key": { "qty": 1 }, "name": "qty_1" }] },
        )
        .await;
        command(
            &src,
            &s,
            doc! { "create": "open_orders", "viewOn": "orders",
            "pipeline": [{ "$match": { "status": "open" } }] },
        )
        .await;
        let dst = env.dst_client().await;
        command(
            &dst,
            &d,
            doc! { "create": "words", "collation": { "locale": "de" } },
        )
        .await;
        insert_raw(&dst, &d, "words", &[rawdoc! { "_id": "kept" }]).await;
        let before = collections(&dst, &d).await;
        let plan = |extra: &[&str]| {
            let mut list = argv(&[
                "plan",
                "--from",
                &env.src,
                "--to",
                &env.dst,
                "--ns",
                &format!("{s}.*:{d}"),
                "--json",
            ]);
            list.extend(argv(extra));
            mongoferry_async(list, LIMIT)
        };
        let out = plan(&[]).await;
        assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
        let found: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
        assert_eq!(found["blocked"], true, "{found}");
        let orders = &found["namespaces"][0];
        assert_eq!(orders["source"], format!("{s}.orders"));
        assert_eq!(orders["destination"], format!("{d}.orders"));
        assert_eq!(orders["documents"], 2_000);
        assert!(
            orders["average_document_bytes"].as_u64().unwrap() >= 500,
            "{orders}"
        );
        assert_eq!(orders["indexes"], serde_json::json!([r#"qty_1 {"qty":1}"#]));
        assert_eq!(orders["destination_state"], "absent");
        let words = &found["namespaces"][1];
        assert!(
            words["destination_state"]
                .as_str()
                .unwrap()
                .starts_with("options differ"),
            "{words}"
        );
        assert_eq!(found["views"][0]["view_on"], "orders");
        let problem = &found["problems"][0];
        assert_eq!(problem["blocks"], true);
        assert!(
            problem["message"].as_str().unwrap().contains("collation"),
            "{problem}"
        );
        let estimate = &found["estimate"];
        assert!(estimate["seconds"].as_f64().unwrap() > 0.0, "{estimate}");
        assert!(
            estimate["basis"]
                .as_str()
                .unwrap()
                .starts_with("an estimate"),
            "{estimate}"
        );

        assert_eq!(
            orders["partitions"], 1,
            "read whole without --partition-docs"
        );

        // With --drop nothing blocks, and the plan says it would drop; still nothing written.
        // With --partition-docs it says about how many partitions each collection makes.
        let out = plan(&["--drop", "--partition-docs", "300"]).await;
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let found: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
        assert_eq!(
            found["namespaces"][0]["partitions"], 7,
            "2,000 documents by 300"
        );
        assert_eq!(
            (&found["blocked"], &found["drop"]),
            (&Value::Bool(false), &Value::Bool(true))
        );
        assert_eq!(collections(&dst, &d).await, before, "a plan writes nothing");
        assert_eq!(dump(&dst, &d, "words").await.len(), 1);
        // On a terminal it is a table.
        let out = mongoferry_async(
            argv(&[
                "plan",
                "--from",
                &env.src,
                "--to",
                &env.dst,
                "--ns",
                &format!("{s}.orders:{d}.orders"),
            ]),
            LIMIT,
        )
        .await;
        assert!(out.status.success(), "{}", stderr(&out));
        let table = stdout(&out);
        assert!(table.starts_with("namespace"), "{table}");
        assert!(
            table.contains(&format!("{s}.orders -> {d}.orders")) && table.contains("absent"),
            "{table}"
        );
        // "about 3 s", or on a fast machine "under a second".
        assert!(
            table.contains("estimate: about") || table.contains("estimate: under a second"),
            "{table}"
        );
    });
}
