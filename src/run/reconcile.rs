//! A reconcile: the destination made equal to the source by writing only what differs.
//!
//! In: a namespace task (a namespace, or one `_id` range of it, from its watermark), both
//! clients and the job's filter. Out: on the engine's queue, batches of writes by `_id` — the
//! source's document where the destination's is missing or different, a delete where only the
//! destination has one (with `delete_extra`; otherwise it is counted and listed) — which the
//! engine's workers write like any other batch (journal, throttle, dead letters included).
//!
//! [`Reconciling`] is the job's [`Source`] for the run: the collection scan feed reads each task
//! through it, so readers, partitions and shared jobs work as for a copy. Both sides are read in
//! `_id` order and merged a page at a time ([`PairedScan`]). Every page ends with a batch (empty
//! when nothing differs) that covers the `_id`s compared up to the page's last, so the task's
//! watermark — the checkpoint — moves with the comparison, not only with the writes: a rerun
//! compares from there, and what a killed run wrote compares equal and is not written again.
//!
//! With a [`RangeDigest`] (a server that hashes ranges itself), a task is first compared by
//! digest, whole, then range by range, and only ranges whose digests differ are read document
//! by document ([`digest`](super::digest)).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::FutureExt;
use mongodb::bson::{Document, RawBson};
use mongodb::Client;

use super::compare::{Find, Merged, PairedScan};
use super::digest::{self, RangeDigest};
use crate::engine::control::throttle::Throttle;
use crate::engine::queue::{Payload, QueueSender};
use crate::engine::sink::Write;
use crate::engine::source::{Fetched, Source};
use crate::engine::stats::{JobStats, MismatchKind};
use crate::engine::transform::Steps;
use crate::engine::{CopyError, NsTask};
use crate::mongo::bson_order;
use crate::mongo::Namespace;

/// Source documents per page of the comparison.
const PAGE: usize = 1000;

/// The job's source during a reconcile: each task's batches are what differs.
pub struct Reconciling {
    /// The job's own source: counts and fetches go to it.
    pub source: Arc<dyn Source>,
    pub source_client: Client,
    pub destination: Client,
    pub filter: Option<Document>,
    /// Source namespaces read without the `_id` index hint (time-series collections).
    pub unhinted: BTreeSet<Namespace>,
    /// Documents only the destination holds are deleted (else counted and listed).
    pub delete_extra: bool,
    pub stats: Arc<JobStats>,
    /// What is compared equal is charged here (what is written, by the workers).
    pub throttle: Throttle,
    /// Ranges compared by a digest first, where the servers compute one.
    pub digests: Arc<dyn RangeDigest>,
    /// The job's transform of each destination namespace: the source compared through it (and
    /// written through it by the sink).
    pub transforms: HashMap<Namespace, Arc<Steps>>,
}

impl Source for Reconciling {
    fn count<'a>(&'a self, ns: &'a Namespace) -> BoxFuture<'a, Result<u64, CopyError>> {
        self.source.count(ns)
    }

    fn produce<'a>(
        &'a self,
        task: &'a Arc<NsTask>,
        batch_size: usize,
        queue: &'a QueueSender,
    ) -> BoxFuture<'a, Result<(), CopyError>> {
        async move {
            let find = |range: &digest::Range| self.find(task, range);
            let reading = digest::Reading {
                clients: (&self.source_client, &self.destination),
                find: &find,
                filtered: self.filter.is_some(),
                stats: &self.stats,
            };
            let ranges = digest::ranges_to_read(&reading, self.digests.as_ref(), task).await?;
            for range in ranges {
                self.reconcile(task, &range, batch_size, queue).await?;
            }
            Ok(())
        }
        .boxed()
    }

    fn fetch<'a>(
        &'a self,
        ns: &'a Namespace,
        ids: &'a [RawBson],
        max_bytes: usize,
    ) -> BoxFuture<'a, Result<Fetched, CopyError>> {
        self.source.fetch(ns, ids, max_bytes)
    }
}

impl Reconciling {
    /// What a read of `task` asks within `range`: the job's filter and the range, by the `_id`
    /// index unless the collection has none.
    fn find(&self, task: &NsTask, range: &digest::Range) -> Find {
        let mut parts: Vec<Document> = self.filter.iter().cloned().collect();
        parts.extend(range.after.as_ref().map(bson_order::after));
        parts.extend(range.upper.as_ref().map(bson_order::up_to));
        Find::all_of(parts, !self.unhinted.contains(&task.source))
    }

    /// Compares `range` of `task` on both sides and queues what differs, page by page.
    async fn reconcile(
        &self,
        task: &Arc<NsTask>,
        range: &digest::Range,
        batch_size: usize,
        queue: &QueueSender,
    ) -> Result<(), CopyError> {
        let budget = queue.budget();
        let clients = (&self.source_client, &self.destination);
        let names = (&task.source, &task.destination);
        let pages = (PAGE, budget.reply_bytes, "reconcile");
        let find = self.find(task, range);
        let steps = self.transforms.get(&task.destination).cloned();
        let mut scan = PairedScan::open(clients, names, find, pages)
            .await?
            .comparing_through(steps);
        loop {
            let page = scan.next_page().await?;
            let last = page.upper.is_none();
            // The page covers every `_id` up to its source's last (to the destination's last,
            // at the end of the range).
            let Some(through) = page.upper.clone().or_else(|| page.last_id()) else {
                return Ok(());
            };
            let read = page.bytes();
            let merged = page.merge();
            self.queue_differences(task, merged, through, (batch_size, read), queue)
                .await?;
            if last {
                // The range's end: an empty range later on would say nothing.
                return Ok(());
            }
        }
    }

    /// Queues the writes of one merged page in batches of at most `batch_size` writes and the
    /// budget's batch bytes; the last batch covers the page up to `through` and stands for its
    /// documents compared equal too.
    async fn queue_differences(
        &self,
        task: &Arc<NsTask>,
        merged: Merged,
        through: RawBson,
        (batch_size, read): (usize, u64),
        queue: &QueueSender,
    ) -> Result<(), CopyError> {
        let max_bytes = queue.budget().batch_bytes;
        let Merged { differences, equal } = merged;
        let (mut missing, mut different, mut kept) = (0, 0, 0);
        let mut writes: Vec<Write> = Vec::new();
        let mut bytes = 0;
        let mut written_bytes = 0;
        for difference in differences {
            let write = match (difference.kind, difference.source) {
                (MismatchKind::Missing, Some(doc)) => {
                    missing += 1;
                    Write::Insert(doc)
                }
                (MismatchKind::Different, Some(doc)) => {
                    different += 1;
                    if let Some(theirs) = difference.retyped {
                        // One `_id` to the server: the replacement could not change its type,
                        // and an insert beside the delete could be applied first.
                        writes.push(Write::Delete(theirs));
                        self.stats.reconcile.add_retyped();
                        let batch = std::mem::take(&mut writes);
                        written_bytes += std::mem::take(&mut bytes) as u64;
                        queue.send(task, Payload::Writes(batch)).await?;
                        queue.barrier(task).await?;
                        Write::Insert(doc)
                    } else {
                        Write::Replace(doc)
                    }
                }
                (_, _) => {
                    self.stats
                        .reconcile
                        .add_extra(&task.destination, &difference.id);
                    if !self.delete_extra {
                        kept += 1;
                        continue;
                    }
                    Write::Delete(difference.id)
                }
            };
            bytes += write.bytes();
            writes.push(write);
            if writes.len() >= batch_size || bytes >= max_bytes {
                written_bytes += bytes as u64;
                let batch = std::mem::take(&mut writes);
                bytes = 0;
                queue.send(task, Payload::Writes(batch)).await?;
            }
        }
        written_bytes += bytes as u64;
        self.stats.reconcile.add_found(missing, different);
        // What needs no write is charged here, so that the job's rate limits hold the
        // comparison too; the writes are charged by the workers.
        let quiet = equal + kept;
        self.throttle
            .acquire(quiet, read.saturating_sub(written_bytes))
            .await;
        task.counters.add_equal(equal);
        self.stats.recent.record(quiet);
        let stands_for = writes.len() as u64 + quiet;
        queue
            .send_through(task, Payload::Writes(writes), through, stands_for)
            .await?;
        Ok(())
    }
}
