//! A layer around another sink that transforms every document before it is written: the one
//! place masked and trimmed copies are made, for copies, a sync's changes and replays alike.
//!
//! In: a batch for a destination namespace. Out: the inner sink's outcome for the batch with
//! each document passed through its namespace's [`Steps`] (a namespace without steps passes
//! as it is); a document the steps cannot read is refused, with the reason, as a dead letter.
//! Inside it sits the journal's layer, so a journal records what was written: the transformed
//! documents.

use std::collections::HashMap;
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::FutureExt;
use mongodb::bson::RawDocumentBuf;

use super::seam::{Refused, Sink, Write};
use crate::engine::error::CopyError;
use crate::engine::transform::Steps;
use crate::mongo::Namespace;

pub struct Transforming {
    inner: Arc<dyn Sink>,
    /// Each destination namespace's steps.
    steps: HashMap<Namespace, Arc<Steps>>,
}

impl Transforming {
    pub fn new(inner: Arc<dyn Sink>, steps: HashMap<Namespace, Arc<Steps>>) -> Self {
        Transforming { inner, steps }
    }

    /// A document the steps could not read, kept with the reason.
    fn refused(doc: RawDocumentBuf, reason: String) -> Refused {
        Refused {
            doc,
            code: None,
            reason: format!("transform: {reason}"),
        }
    }

    /// The documents transformed, and those that could not be.
    fn transform(steps: &Steps, docs: Vec<RawDocumentBuf>) -> (Vec<RawDocumentBuf>, Vec<Refused>) {
        let (mut out, mut refused) = (Vec::with_capacity(docs.len()), Vec::new());
        for doc in docs {
            match steps.apply(doc) {
                Ok(done) => out.push(done),
                Err((doc, reason)) => refused.push(Self::refused(doc, reason)),
            }
        }
        (out, refused)
    }

    async fn write_transformed(
        &self,
        ns: &Namespace,
        docs: Vec<RawDocumentBuf>,
    ) -> Result<Vec<Refused>, CopyError> {
        let Some(steps) = self.steps.get(ns) else {
            return self.inner.write(ns, docs).await;
        };
        let (docs, mut refused) = Self::transform(steps, docs);
        refused.extend(self.inner.write(ns, docs).await?);
        Ok(refused)
    }

    async fn apply_transformed(
        &self,
        ns: &Namespace,
        writes: Vec<Write>,
    ) -> Result<Vec<Refused>, CopyError> {
        let Some(steps) = self.steps.get(ns) else {
            return self.inner.apply(ns, writes).await;
        };
        let mut refused = Vec::new();
        let mut out = Vec::with_capacity(writes.len());
        for write in writes {
            let done = match write {
                Write::Insert(doc) => steps.apply(doc).map(Write::Insert),
                Write::Replace(doc) => steps.apply(doc).map(Write::Replace),
                delete @ Write::Delete(_) => Ok(delete),
            };
            match done {
                Ok(write) => out.push(write),
                Err((doc, reason)) => refused.push(Self::refused(doc, reason)),
            }
        }
        refused.extend(self.inner.apply(ns, out).await?);
        Ok(refused)
    }
}

impl Sink for Transforming {
    fn prepare<'a>(&'a self, ns: &'a Namespace) -> BoxFuture<'a, Result<(), CopyError>> {
        self.inner.prepare(ns)
    }

    fn write<'a>(
        &'a self,
        ns: &'a Namespace,
        docs: Vec<RawDocumentBuf>,
    ) -> BoxFuture<'a, Result<Vec<Refused>, CopyError>> {
        self.write_transformed(ns, docs).boxed()
    }

    fn apply<'a>(
        &'a self,
        ns: &'a Namespace,
        writes: Vec<Write>,
    ) -> BoxFuture<'a, Result<Vec<Refused>, CopyError>> {
        self.apply_transformed(ns, writes).boxed()
    }

    fn make_durable(&self) -> BoxFuture<'_, Result<(), CopyError>> {
        self.inner.make_durable()
    }
}
