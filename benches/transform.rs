//! A copy with a transform against the same copy without, side by side in one run (issue 31).
//!
//! `cargo bench --bench transform -- [--docs 50000] [--rounds 3]`
//!
//! One SecantusDB source holds `--docs` customer documents of about 1 KiB (an email, a phone, an
//! ssn, internal notes, a customer id, padding). Each round copies them into a fresh destination
//! database twice, in one process with the same settings: plainly, and through the five
//! steps (drop `internal.notes`, rename `tel` to `phone`, hmac `email`, redact `ssn`, set
//! `env`). The order alternates between rounds. It prints docs/s of each and their ratio
//! (goal: the transformed copy at least 0.9 of the plain one), and checks each copy's count and
//! that the transformed documents are masked.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use mongodb::bson::{doc, Document, RawDocumentBuf};
use mongoferry::engine::transform::HmacKey;
use mongoferry::mongo::{self, Side};
use mongoferry::run::copy;
use mongoferry::spec::{JobSpec, TransformConfig};
use mongoferry::state::MemoryStore;
use mongoferry::testkit::TestServer;
use serde_json::json;
use tokio_util::sync::CancellationToken;

#[derive(Parser, Debug)]
#[command(about = "Measure a copy with the five transform steps against a plain copy")]
struct Args {
    /// Passed by `cargo bench` to every benchmark program.
    #[arg(long, hide = true)]
    bench: bool,
    #[arg(long, default_value_t = 50_000)]
    docs: i64,
    #[arg(long, default_value_t = 3)]
    rounds: usize,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Runtime::new()?;
    println!(
        "transform: {} customer docs of about 1 KiB; {} rounds; on {} cores",
        args.docs,
        args.rounds,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let (source, destination) = (
        TestServer::start().context("start SecantusDB (run scripts/setup-test-env.sh)")?,
        TestServer::start()?,
    );
    runtime.block_on(seed(&source.uri, args.docs))?;
    let (mut plain, mut masked) = (Vec::new(), Vec::new());
    for round in 0..args.rounds {
        let order = if round % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for transformed in order {
            let db = format!("r{round}_{}", if transformed { "masked" } else { "plain" });
            let secs = runtime.block_on(copy_once(
                &source.uri,
                &destination.uri,
                &db,
                transformed,
                args.docs,
            ))?;
            let rate = args.docs as f64 / secs;
            println!(
                "round {}: {} copy {secs:.2} s, {rate:.0} docs/s",
                round + 1,
                if transformed { "transformed" } else { "plain" }
            );
            match transformed {
                true => masked.push(rate),
                false => plain.push(rate),
            }
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (plain, masked) = (median(&mut plain), median(&mut masked));
    println!("| copy (median of {} rounds) | docs/s |", args.rounds);
    println!("|---|---:|");
    println!("| plain | {plain:.0} |");
    println!("| five transform steps | {masked:.0} |");
    println!(
        "transformed / plain: {:.2} (goal: at least 0.9)",
        masked / plain
    );
    Ok(())
}

async fn seed(uri: &str, n: i64) -> Result<()> {
    let client = mongo::connect(Side::Source, uri, 4, Duration::from_secs(10)).await?;
    let collection = client
        .database("shop")
        .collection::<RawDocumentBuf>("customers");
    let pad = "x".repeat(800);
    let mut batch = Vec::new();
    for i in 0..n {
        let doc = doc! {
            "_id": i, "customer_id": 1_000_000 + i, "email": format!("customer{i}@example.com"),
            "tel": format!("+33 1 {i:08}"), "ssn": format!("{i:09}"), "name": format!("Customer {i}"),
            "internal": { "notes": "called twice about the invoice", "tier": (i % 5) as i32 },
            "pad": &pad,
        };
        batch.push(RawDocumentBuf::from_document(&doc)?);
        if batch.len() == 1000 {
            collection.insert_many(std::mem::take(&mut batch)).await?;
        }
    }
    if !batch.is_empty() {
        collection.insert_many(batch).await?;
    }
    mongo::close(client).await;
    Ok(())
}

/// Seconds to copy the customers into `db`, transformed or not; checked.
async fn copy_once(from: &str, to: &str, db: &str, transformed: bool, n: i64) -> Result<f64> {
    let mut spec = JobSpec::new(from, to, &[&format!("shop.customers:{db}.customers")]);
    if transformed {
        let steps = json!({"shop.customers": [
            {"drop": "internal.notes"},
            {"rename": "tel", "to": "phone"},
            {"hmac": "email"},
            {"redact": "ssn"},
            {"set": "env", "value": "staging"},
        ]});
        spec.transform = Some(serde_json::from_value::<TransformConfig>(steps)?);
    }
    let mut spec = spec.validate()?;
    spec.transform_key = Some(HmacKey::new(b"a benchmark key of some length"));
    let started = Instant::now();
    let summary = copy::prepare(&spec, Arc::new(MemoryStore::default()))
        .await?
        .run(CancellationToken::new())
        .await?;
    let secs = started.elapsed().as_secs_f64();
    if summary.docs != n as u64 {
        bail!("copied {} of {n}", summary.docs);
    }
    let client = mongo::connect(Side::Destination, to, 2, Duration::from_secs(10)).await?;
    let first = client
        .database(db)
        .collection::<Document>("customers")
        .find_one(doc! { "_id": 0 })
        .await?
        .context("the first document")?;
    mongo::close(client).await;
    let masked = first.get_str("ssn") == Ok("REDACTED") && first.get("tel").is_none();
    if masked != transformed {
        bail!("the copy into {db} is not as asked: {first}");
    }
    Ok(secs)
}
