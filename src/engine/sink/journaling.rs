//! A layer around another sink that journals every batch the inner sink acknowledged.
//!
//! In: a batch to write. Out: the inner sink's outcome; the documents it stored (not the refused
//! ones: they are dead letters, not writes) appended to the journal's writer task, waiting when
//! its bounded channel is full. The engine does not know it is there; the ledger's
//! [`Sink::make_durable`] makes the journal durable before a checkpoint moves past its batches.

use std::sync::Arc;

use futures::future::BoxFuture;
use futures::FutureExt;
use mongodb::bson::{rawdoc, RawDocumentBuf};

use super::seam::{Refused, Sink, Write};
use crate::engine::error::CopyError;
use crate::journal::writer::{EncodedBatch, JournalSender};
use crate::journal::Op;
use crate::mongo::Namespace;

pub struct Journaled {
    inner: Arc<dyn Sink>,
    journal: JournalSender,
}

impl Journaled {
    pub fn new(inner: Arc<dyn Sink>, journal: JournalSender) -> Self {
        Journaled { inner, journal }
    }

    async fn write_and_journal(
        &self,
        ns: &Namespace,
        docs: Vec<RawDocumentBuf>,
    ) -> Result<Vec<Refused>, CopyError> {
        // Encoded before the write, which consumes the documents; appended after its success.
        let batch = EncodedBatch::encode(ns, &docs)?;
        let refused = self.inner.write(ns, docs).await?;
        let batch = batch.without(|doc| refused.iter().any(|r| r.doc.as_bytes() == doc));
        if batch.count() > 0 {
            self.journal.append(batch).await?;
        }
        Ok(refused)
    }

    async fn apply_and_journal(
        &self,
        ns: &Namespace,
        writes: Vec<Write>,
    ) -> Result<Vec<Refused>, CopyError> {
        let deleted: Vec<RawDocumentBuf> = writes
            .iter()
            .filter_map(|w| match w {
                Write::Delete(id) => Some(rawdoc! { "_id": id.clone() }),
                _ => None,
            })
            .collect();
        let ops = writes
            .iter()
            .filter_map(|w| match w {
                Write::Insert(doc) | Write::Replace(doc) => Some((Op::Change, doc.as_bytes())),
                Write::Delete(_) => None,
            })
            .chain(deleted.iter().map(|d| (Op::Delete, d.as_bytes())));
        let batch = EncodedBatch::encode_ops(ns, ops)?;
        let refused = self.inner.apply(ns, writes).await?;
        let batch = batch.without(|doc| refused.iter().any(|r| r.doc.as_bytes() == doc));
        if batch.count() > 0 {
            self.journal.append(batch).await?;
        }
        Ok(refused)
    }
}

impl Sink for Journaled {
    fn apply<'a>(
        &'a self,
        ns: &'a Namespace,
        writes: Vec<Write>,
    ) -> BoxFuture<'a, Result<Vec<Refused>, CopyError>> {
        self.apply_and_journal(ns, writes).boxed()
    }

    fn prepare<'a>(&'a self, ns: &'a Namespace) -> BoxFuture<'a, Result<(), CopyError>> {
        self.inner.prepare(ns)
    }

    fn write<'a>(
        &'a self,
        ns: &'a Namespace,
        docs: Vec<RawDocumentBuf>,
    ) -> BoxFuture<'a, Result<Vec<Refused>, CopyError>> {
        self.write_and_journal(ns, docs).boxed()
    }

    fn make_durable(&self) -> BoxFuture<'_, Result<(), CopyError>> {
        async move {
            self.inner.make_durable().await?;
            Ok(self.journal.sync().await?)
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::engine::sink::NullSink;
    use crate::engine::source::synthetic::SyntheticSource;
    use crate::engine::stats::JobStats;
    use crate::engine::{Control, Engine, Strategy};
    use crate::journal::writer::JournalWriter;
    use crate::journal::JournalConfig;

    #[tokio::test]
    async fn a_failing_journal_fails_the_job_with_its_cause() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("j");
        let config = JournalConfig {
            segment_bytes: Some(4096),
            ..JournalConfig::new(dir.to_str().unwrap())
        };
        let writer = JournalWriter::open(config).await.unwrap();
        // The directory goes away: the open segment takes writes, the next one cannot be made.
        std::fs::remove_dir_all(&dir).unwrap();
        let journal = JournalWriter::start(writer);
        let ns = Namespace::new("a", "x");
        let stats = Arc::new(JobStats::new([(ns.clone(), ns)], 2));
        let source = SyntheticSource {
            docs: 1_000_000,
            doc_size: 512,
            strategy: Strategy::Stream,
        };
        let sink = Journaled::new(Arc::new(NullSink), journal.sender());
        let engine = Engine::new(Arc::new(source), Arc::new(sink), stats.clone())
            .with_batch_size(100)
            .with_control(Arc::new(Control::new(2)));
        let outcome = tokio::time::timeout(
            Duration::from_secs(20),
            engine.run(tokio_util::sync::CancellationToken::new()),
        )
        .await
        .expect("the job ends");
        let err = outcome.unwrap_err().to_string();
        assert!(
            err.contains("journal writer stopped") && err.contains("No such file"),
            "{err}"
        );
        assert!(stats.snapshot().docs < 1_000_000);
        let finished = journal.finish().await.unwrap_err().to_string();
        assert!(finished.contains("No such file"), "{finished}");
    }
}
