//! Writing a journal: one writer task appends encoded batches in order as compressed,
//! checksummed frames (the format is in the [module doc](super)).
//!
//! In: [`EncodedBatch`]es through a [`JournalSender`] (the engine's journaling sink sends the
//! batches its destination acknowledged). Out: frames appended to segment files, segments sealed at their size limit,
//! the manifest rewritten at every seal and at the end; a [`JournalSummary`] once the writer is
//! finished. The batches travel over a bounded channel, so a journal that cannot keep up slows
//! the copy instead of growing memory; compression and file IO run in `spawn_blocking`. A failed
//! journal write stops the writer: the next `append` returns its error.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use mongodb::bson::RawDocumentBuf;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::reader::recover_last_segment;
use super::{
    encode_record, parse_segment_file_name, segment_file_name, sync_dir, unix_ms, FrameHeader,
    JournalConfig, JournalError, JournalState, Manifest, Op, SegmentHeader, SegmentInfo,
    SegmentState, FRAME_TARGET, LOCK, MANIFEST, MAX_FRAME_RECORDS, SEGMENT_HEADER_LEN,
};
use crate::mongo::Namespace;

/// Batches waiting for the writer; with batches of at most 16 MiB this bounds the memory.
const CHANNEL_BATCHES: usize = 8;
/// A frame that has not filled is written when no batch arrived for this long.
const LINGER: Duration = Duration::from_millis(100);
/// zstd's default level: fast, and several times smaller than the documents.
const ZSTD_LEVEL: i32 = 3;

/// One acknowledged batch, already encoded as records.
#[derive(Debug)]
pub struct EncodedBatch {
    ns: String,
    records: Vec<u8>,
    count: u32,
    pub(crate) acknowledged_ms: i64,
}

impl EncodedBatch {
    /// Upserts of `docs`.
    pub fn encode(ns: &Namespace, docs: &[RawDocumentBuf]) -> Result<Self, JournalError> {
        Self::encode_ops(ns, docs.iter().map(|d| (Op::Upsert, d.as_bytes())))
    }

    /// Records of any operation: each an operation and its document's raw bytes.
    pub fn encode_ops<'a>(
        ns: &Namespace,
        ops: impl Iterator<Item = (Op, &'a [u8])> + Clone,
    ) -> Result<Self, JournalError> {
        let ns = ns.to_string();
        if ns.len() > u16::MAX as usize {
            return Err(JournalError::BatchTooLarge { bytes: ns.len() });
        }
        let size: usize = ops.clone().map(|(_, d)| 3 + ns.len() + d.len()).sum();
        if size > MAX_FRAME_RECORDS {
            return Err(JournalError::BatchTooLarge { bytes: size });
        }
        let mut records = Vec::with_capacity(size);
        let mut count = 0;
        for (op, doc) in ops {
            encode_record(&mut records, op, &ns, doc);
            count += 1;
        }
        Ok(EncodedBatch {
            ns,
            records,
            count,
            acknowledged_ms: 0,
        })
    }

    /// Records in the batch.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// Drops the records whose document (raw bytes) `dropped` says to drop: only writes are
    /// journaled, not documents the destination refused.
    pub fn without(mut self, dropped: impl Fn(&[u8]) -> bool) -> Self {
        let mut kept = Vec::with_capacity(self.records.len());
        let mut count = 0;
        let mut pos = 0;
        while pos < self.records.len() {
            // op u8 | namespace length u16 | namespace | document (its length is its first i32)
            let ns_len =
                u16::from_le_bytes([self.records[pos + 1], self.records[pos + 2]]) as usize;
            let doc_at = pos + 3 + ns_len;
            let doc_len = i32::from_le_bytes(
                self.records[doc_at..doc_at + 4]
                    .try_into()
                    .expect("four bytes"),
            ) as usize;
            let end = doc_at + doc_len;
            let doc = &self.records[doc_at..end];
            if !dropped(doc) {
                kept.extend_from_slice(&self.records[pos..end]);
                count += 1;
            }
            pos = end;
        }
        self.records = kept;
        self.count = count;
        self
    }
}

/// What a writer added to its journal.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct JournalSummary {
    pub dir: String,
    /// This writer's run number (1 for a new journal).
    pub run: u32,
    pub records: u64,
    pub frames: u64,
    /// Bytes this run added to the journal (headers included).
    pub bytes: u64,
    /// Bytes of the documents these records hold.
    pub document_bytes: u64,
    pub segments: u32,
    /// Journal bytes per record.
    pub bytes_per_doc: f64,
}

/// The blocking half: owns the journal directory's lock, the open segment and the manifest.
pub struct SegmentWriter {
    dir: PathBuf,
    manifest: Manifest,
    file: File,
    run: u32,
    next_seq: u64,
    segment_bytes: u64,
    compressor: zstd::bulk::Compressor<'static>,
    records: Vec<u8>,
    frame: Vec<u8>,
    summary: JournalSummary,
    /// Held for the writer's lifetime: one writer per journal.
    _lock: File,
}

impl SegmentWriter {
    /// Opens the journal in `config.dir` for appending a new run: creates it if missing, recovers
    /// it if its last writer died, refuses a directory holding anything else.
    pub fn open(config: &JournalConfig) -> Result<SegmentWriter, JournalError> {
        let dir = PathBuf::from(&config.dir);
        std::fs::create_dir_all(&dir).map_err(|e| JournalError::io(&dir, "create", e))?;
        let lock_path = dir.join(LOCK);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| JournalError::io(&lock_path, "open", e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(JournalError::InUse { dir: dir.clone() })
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(JournalError::io(&lock_path, "lock", e))
            }
        }
        let mut manifest = if dir.join(MANIFEST).exists() {
            Manifest::load(&dir)?
        } else {
            check_empty(&dir)?;
            Manifest::new()
        };
        if manifest.state == JournalState::Open && !manifest.segments.is_empty() {
            recover(&dir, &mut manifest)?;
        }
        check_sealed_sizes(&dir, &manifest)?;
        // A file the manifest does not list would be overwritten or mistaken for ours.
        let listed = manifest.segments.len() as u32;
        for entry in std::fs::read_dir(&dir).map_err(|e| JournalError::io(&dir, "list", e))? {
            let entry = entry.map_err(|e| JournalError::io(&dir, "list", e))?;
            if let Some(n) = entry.file_name().to_str().and_then(parse_segment_file_name) {
                if n == 0 || n > listed {
                    return Err(JournalError::Corrupt {
                        file: entry.path(),
                        offset: 0,
                        reason: "segment file not listed in the manifest".into(),
                    });
                }
            }
        }
        manifest.state = JournalState::Open;
        let run = manifest.segments.iter().map(|s| s.run).max().unwrap_or(0) + 1;
        let next_seq = manifest.segments.iter().map(|s| s.records).sum();
        let compressor = zstd::bulk::Compressor::new(ZSTD_LEVEL)
            .map_err(|e| JournalError::io(&dir, "start zstd", e))?;
        let file = start_segment(&dir, &mut manifest, run, next_seq, config.transform.clone())?;
        Ok(SegmentWriter {
            summary: JournalSummary {
                dir: config.dir.clone(),
                run,
                records: 0,
                frames: 0,
                bytes: SEGMENT_HEADER_LEN as u64,
                document_bytes: 0,
                segments: 1,
                bytes_per_doc: 0.0,
            },
            dir,
            manifest,
            file,
            run,
            next_seq,
            segment_bytes: config.segment_bytes(),
            compressor,
            records: Vec::new(),
            frame: Vec::new(),
            _lock: lock,
        })
    }

    fn segment(&mut self) -> &mut SegmentInfo {
        self.manifest
            .segments
            .last_mut()
            .expect("a writer always has an open segment")
    }

    fn segment_path(&self) -> PathBuf {
        let info = self.manifest.segments.last().expect("an open segment");
        self.dir.join(&info.file)
    }

    /// Appends the batches as one frame, in a new segment if the current one is full.
    pub fn write_frame(&mut self, batches: &[EncodedBatch]) -> Result<(), JournalError> {
        if batches.is_empty() {
            return Ok(());
        }
        // A full segment is sealed only when there is more to write: no empty last segment.
        let seg = self.segment();
        if seg.frames > 0 && seg.bytes >= self.segment_bytes {
            self.seal()?;
            // The run's next segment holds what the same transform made.
            let transform = self.segment().transform.clone();
            self.file = start_segment(
                &self.dir,
                &mut self.manifest,
                self.run,
                self.next_seq,
                transform,
            )?;
            self.summary.segments += 1;
            self.summary.bytes += SEGMENT_HEADER_LEN as u64;
        }
        self.records.clear();
        let mut count: u32 = 0;
        for b in batches {
            self.records.extend_from_slice(&b.records);
            count += b.count;
        }
        let path = self.segment_path();
        let payload = self
            .compressor
            .compress(&self.records)
            .map_err(|e| JournalError::io(&path, "compress", e))?;
        let header = FrameHeader {
            payload_len: payload.len() as u32,
            records_len: self.records.len() as u32,
            records: count,
            first_seq: self.next_seq,
            first_ms: batches.iter().map(|b| b.acknowledged_ms).min().unwrap_or(0),
            last_ms: batches.iter().map(|b| b.acknowledged_ms).max().unwrap_or(0),
            payload_crc: crc32c::crc32c(&payload),
        };
        self.frame.clear();
        self.frame.extend_from_slice(&header.encode());
        self.frame.extend_from_slice(&payload);
        self.file
            .write_all(&self.frame)
            .map_err(|e| JournalError::io(&path, "write", e))?;
        let written = self.frame.len() as u64;
        let document_bytes = self.records.len() as u64
            - batches
                .iter()
                .map(|b| b.count as u64 * (3 + b.ns.len() as u64))
                .sum::<u64>();
        self.next_seq += count as u64;
        let seg = self.segment();
        seg.frames += 1;
        seg.records += count as u64;
        seg.bytes += written;
        seg.first_ms.get_or_insert(header.first_ms);
        seg.last_ms = Some(header.last_ms);
        for b in batches {
            *seg.namespaces.entry(b.ns.clone()).or_default() += b.count as u64;
        }
        self.summary.records += count as u64;
        self.summary.frames += 1;
        self.summary.bytes += written;
        self.summary.document_bytes += document_bytes;
        Ok(())
    }

    /// Makes every frame written so far durable.
    pub fn sync(&mut self) -> Result<(), JournalError> {
        let path = self.segment_path();
        self.file
            .sync_data()
            .map_err(|e| JournalError::io(&path, "sync", e))
    }

    /// Makes the open segment durable and marks it sealed (the manifest is stored by the caller).
    fn seal(&mut self) -> Result<(), JournalError> {
        let path = self.segment_path();
        self.file
            .sync_all()
            .map_err(|e| JournalError::io(&path, "sync", e))?;
        self.segment().state = SegmentState::Sealed;
        Ok(())
    }

    /// Seals the last segment and marks the journal closed.
    pub fn close(mut self) -> Result<JournalSummary, JournalError> {
        self.seal()?;
        self.manifest.state = JournalState::Closed;
        self.manifest.store(&self.dir)?;
        let mut summary = self.summary.clone();
        if summary.records > 0 {
            summary.bytes_per_doc = summary.bytes as f64 / summary.records as f64;
        }
        Ok(summary)
    }
}

/// Refuses to start a journal in a directory that already holds other things.
fn check_empty(dir: &Path) -> Result<(), JournalError> {
    for entry in std::fs::read_dir(dir).map_err(|e| JournalError::io(dir, "list", e))? {
        let entry = entry.map_err(|e| JournalError::io(dir, "list", e))?;
        let name = entry.file_name();
        // The lock is ours; a temporary manifest is what a writer dying at its start leaves.
        if name != LOCK && name != format!("{MANIFEST}.tmp").as_str() {
            return Err(JournalError::NotAJournal {
                dir: dir.to_path_buf(),
                reason: format!(
                    "it holds {:?} but no {MANIFEST}; give an empty or new directory",
                    name
                ),
            });
        }
    }
    Ok(())
}

/// Refuses a journal whose sealed segments are missing or not the size the manifest recorded:
/// appending a new run would bury that damage behind fresh data. (A full read checks far more;
/// this is the cheap part every writer can afford.)
fn check_sealed_sizes(dir: &Path, manifest: &Manifest) -> Result<(), JournalError> {
    for info in &manifest.segments {
        if info.state != SegmentState::Sealed {
            continue;
        }
        let path = dir.join(&info.file);
        let len = match std::fs::metadata(&path) {
            Ok(meta) => meta.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(JournalError::Corrupt {
                    file: path,
                    offset: 0,
                    reason: "the sealed segment's file is missing".into(),
                })
            }
            Err(e) => return Err(JournalError::io(&path, "stat", e)),
        };
        if len != info.bytes {
            return Err(JournalError::Corrupt {
                file: path,
                offset: len.min(info.bytes),
                reason: format!(
                    "the sealed segment is {len} bytes, the manifest records {} bytes",
                    info.bytes
                ),
            });
        }
    }
    Ok(())
}

/// Lists a new segment in the manifest, stores the manifest, then creates the file.
fn start_segment(
    dir: &Path,
    manifest: &mut Manifest,
    run: u32,
    first_seq: u64,
    transform: Option<String>,
) -> Result<File, JournalError> {
    let number = manifest.segments.len() as u32 + 1;
    let name = segment_file_name(number);
    manifest.segments.push(SegmentInfo {
        file: name.clone(),
        number,
        run,
        state: SegmentState::Open,
        first_seq,
        frames: 0,
        records: 0,
        bytes: SEGMENT_HEADER_LEN as u64,
        first_ms: None,
        last_ms: None,
        namespaces: Default::default(),
        transform,
    });
    manifest.store(dir)?;
    let path = dir.join(&name);
    let mut file = OpenOptions::new()
        .create_new(true)
        .write(true)
        .open(&path)
        .map_err(|e| JournalError::io(&path, "create", e))?;
    file.write_all(&SegmentHeader { number, run }.encode())
        .map_err(|e| JournalError::io(&path, "write", e))?;
    Ok(file)
}

/// A writer died with the journal open: cut a torn tail off its last segment and seal it with
/// the counts read back. Any damage other than a torn tail is refused.
fn recover(dir: &Path, manifest: &mut Manifest) -> Result<(), JournalError> {
    let recovered = recover_last_segment(dir, manifest)?;
    let last = manifest.segments.last().expect("a last segment").clone();
    if !recovered.exists {
        // Listed, never created: it holds nothing.
        manifest.segments.pop();
        return Ok(());
    }
    let path = dir.join(&last.file);
    if let Some(torn) = &recovered.torn {
        tracing::warn!("{torn}; the torn end is cut off before appending");
        let file = OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(|e| JournalError::io(&path, "open", e))?;
        if recovered.valid_len < SEGMENT_HEADER_LEN as u64 {
            // Not even the header is whole: rewrite it.
            file.set_len(0)
                .map_err(|e| JournalError::io(&path, "truncate", e))?;
            (&file)
                .write_all(
                    &SegmentHeader {
                        number: last.number,
                        run: last.run,
                    }
                    .encode(),
                )
                .map_err(|e| JournalError::io(&path, "write", e))?;
        } else {
            file.set_len(recovered.valid_len)
                .map_err(|e| JournalError::io(&path, "truncate", e))?;
        }
        file.sync_all()
            .map_err(|e| JournalError::io(&path, "sync", e))?;
    }
    let seg = manifest.segments.last_mut().expect("a last segment");
    seg.state = SegmentState::Sealed;
    seg.frames = recovered.frames;
    seg.records = recovered.records;
    seg.bytes = recovered.valid_len.max(SEGMENT_HEADER_LEN as u64);
    seg.first_ms = recovered.first_ms;
    seg.last_ms = recovered.last_ms;
    seg.namespaces = recovered.namespaces;
    manifest.store(dir)?;
    sync_dir(dir)
}

/// The async half: the task appending batches, and the way to finish it.
pub struct JournalWriter {
    sender: JournalSender,
    finish: CancellationToken,
    task: JoinHandle<Result<JournalSummary, JournalError>>,
}

/// What the writer task receives: batches, in order, and requests to make them durable.
enum Entry {
    Batch(EncodedBatch),
    /// Answered once every batch sent before is in the journal and synced to disk.
    Sync(tokio::sync::oneshot::Sender<()>),
}

/// Hands acknowledged batches to the writer; cloned into the sink and the checkpointer.
#[derive(Clone)]
pub struct JournalSender {
    tx: mpsc::Sender<Entry>,
    failure: Arc<OnceLock<String>>,
}

impl JournalSender {
    /// Waits for room in the channel; fails with the writer's error once it stopped.
    pub async fn append(&self, mut batch: EncodedBatch) -> Result<(), JournalError> {
        batch.acknowledged_ms = unix_ms();
        self.tx
            .send(Entry::Batch(batch))
            .await
            .map_err(|_| self.stopped())
    }

    /// Returns once every batch appended before is durably in the journal. A checkpoint may
    /// only move past batches the journal holds, or a crash would lose their records for good.
    pub async fn sync(&self) -> Result<(), JournalError> {
        let (done, synced) = tokio::sync::oneshot::channel();
        self.tx
            .send(Entry::Sync(done))
            .await
            .map_err(|_| self.stopped())?;
        synced.await.map_err(|_| self.stopped())
    }

    fn stopped(&self) -> JournalError {
        JournalError::WriterStopped(
            self.failure
                .get()
                .cloned()
                .unwrap_or_else(|| "the journal is closed".into()),
        )
    }
}

impl JournalWriter {
    /// Opens the journal (blocking IO, off the async threads) without starting to write.
    pub async fn open(config: JournalConfig) -> Result<SegmentWriter, JournalError> {
        tokio::task::spawn_blocking(move || SegmentWriter::open(&config))
            .await
            .map_err(|e| JournalError::TaskFailed(format!("opening the journal: {e}")))?
    }

    /// Starts the writer task on an opened journal.
    pub fn start(writer: SegmentWriter) -> JournalWriter {
        let (tx, rx) = mpsc::channel(CHANNEL_BATCHES);
        let failure = Arc::new(OnceLock::new());
        let finish = CancellationToken::new();
        let task = tokio::spawn(write_loop(writer, rx, finish.clone(), failure.clone()));
        JournalWriter {
            sender: JournalSender { tx, failure },
            finish,
            task,
        }
    }

    pub fn sender(&self) -> JournalSender {
        self.sender.clone()
    }

    /// Writes what is still queued, seals the last segment, closes the journal.
    pub async fn finish(self) -> Result<JournalSummary, JournalError> {
        self.finish.cancel();
        drop(self.sender);
        match self.task.await {
            Ok(outcome) => outcome,
            Err(e) => Err(JournalError::TaskFailed(format!("journal writer: {e}"))),
        }
    }
}

async fn write_loop(
    writer: SegmentWriter,
    mut rx: mpsc::Receiver<Entry>,
    finish: CancellationToken,
    failure: Arc<OnceLock<String>>,
) -> Result<JournalSummary, JournalError> {
    let mut writer = Some(writer);
    let outcome = async {
        let mut pending: Vec<EncodedBatch> = Vec::new();
        let mut pending_bytes = 0;
        let mut finishing = false;
        loop {
            let next = tokio::select! {
                biased;
                batch = rx.recv() => batch,
                _ = finish.cancelled(), if !finishing => {
                    // Take what is queued, then end: senders still alive no longer matter.
                    finishing = true;
                    rx.close();
                    continue;
                }
                _ = tokio::time::sleep(LINGER), if !pending.is_empty() => {
                    flush(&mut writer, &mut pending).await?;
                    pending_bytes = 0;
                    continue;
                }
            };
            let batch = match next {
                None => break,
                Some(Entry::Batch(batch)) => batch,
                Some(Entry::Sync(done)) => {
                    flush(&mut writer, &mut pending).await?;
                    pending_bytes = 0;
                    let mut w = writer.take().expect("the writer is back after each flush");
                    let (w, synced) = blocking(move || {
                        let synced = w.sync();
                        (w, synced)
                    })
                    .await?;
                    writer = Some(w);
                    synced?;
                    let _ = done.send(());
                    continue;
                }
            };
            if pending_bytes + batch.records.len() > MAX_FRAME_RECORDS {
                flush(&mut writer, &mut pending).await?;
                pending_bytes = 0;
            }
            pending_bytes += batch.records.len();
            pending.push(batch);
            if pending_bytes >= FRAME_TARGET {
                flush(&mut writer, &mut pending).await?;
                pending_bytes = 0;
            }
        }
        flush(&mut writer, &mut pending).await?;
        let writer = writer.take().expect("the writer is back after each flush");
        blocking(move || writer.close()).await?
    }
    .await;
    if let Err(e) = &outcome {
        let _ = failure.set(e.to_string());
        rx.close();
    }
    outcome
}

/// Writes the pending batches as one frame, off the async threads.
async fn flush(
    writer: &mut Option<SegmentWriter>,
    pending: &mut Vec<EncodedBatch>,
) -> Result<(), JournalError> {
    if pending.is_empty() {
        return Ok(());
    }
    let batches = std::mem::take(pending);
    let mut w = writer.take().expect("the writer is back after each flush");
    let (w, written) = blocking(move || {
        let written = w.write_frame(&batches);
        (w, written)
    })
    .await?;
    *writer = Some(w);
    written
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, JournalError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| JournalError::TaskFailed(format!("journal writer: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::reader::{scan, Health, JournalReader};

    fn batch(ns: &str, ids: std::ops::Range<i64>, size: usize) -> EncodedBatch {
        crate::journal::test_batch(ns, ids, size)
    }

    fn config(dir: &Path, segment_bytes: Option<u64>) -> JournalConfig {
        JournalConfig {
            segment_bytes,
            ..JournalConfig::new(dir.to_str().unwrap())
        }
    }

    /// Every record of the journal, as (namespace, `_id`).
    fn read_all(dir: &Path) -> Vec<(String, i64)> {
        let mut reader = JournalReader::open(dir).unwrap();
        let mut out = vec![];
        while let Some(frame) = reader.next_frame().unwrap() {
            for r in frame.records() {
                out.push((r.ns.to_string(), r.doc.get_i64("_id").unwrap()));
            }
        }
        assert!(reader.torn_tail().is_none());
        out
    }

    #[test]
    fn writes_rolls_over_and_reads_back_in_order() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("j");
        let mut w = SegmentWriter::open(&config(&dir, Some(8 * 1024))).unwrap();
        for i in 0..20 {
            let ns = if i % 2 == 0 { "a.x" } else { "b.y.z" };
            w.write_frame(&[batch(ns, i * 10..i * 10 + 10, 300)])
                .unwrap();
        }
        let summary = w.close().unwrap();
        assert_eq!(summary.records, 200);
        assert!(summary.segments > 1, "{summary:?}");
        let all = read_all(&dir);
        assert_eq!(all.len(), 200);
        assert!(all.iter().enumerate().all(|(i, (_, id))| *id == i as i64));
        assert_eq!(all[10].0, "b.y.z");
        let s = scan(&dir).unwrap();
        assert_eq!(s.health, Health::Intact);
        assert_eq!((s.records, s.frames), (200, 20));
        assert_eq!(s.namespaces["a.x"], 100);
        assert_eq!(s.state, JournalState::Closed);
        assert_eq!(s.segments.len() as u32, summary.segments);
        assert!(s
            .segments
            .iter()
            .all(|seg| seg.state == SegmentState::Sealed));
        assert!(s.segments.iter().all(|seg| seg.transform.is_none()));
        assert!(s.refuse_transform_again().is_ok());
    }

    #[test]
    fn every_segment_of_a_transformed_run_says_so_and_the_next_run_decides_its_own() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("j");
        let transformed = JournalConfig {
            transform: Some("3fa2c0de3fa2c0de".into()),
            ..config(&dir, Some(8 * 1024))
        };
        let mut w = SegmentWriter::open(&transformed).unwrap();
        for i in 0..10 {
            w.write_frame(&[batch("a.x", i * 10..i * 10 + 10, 300)])
                .unwrap();
        }
        assert!(w.close().unwrap().segments > 1);
        let mut w = SegmentWriter::open(&config(&dir, None)).unwrap();
        w.write_frame(&[batch("a.x", 100..110, 300)]).unwrap();
        w.close().unwrap();
        let s = scan(&dir).unwrap();
        let (last, first_run) = s.segments.split_last().unwrap();
        assert!(first_run
            .iter()
            .all(|seg| seg.transform.as_deref() == Some("3fa2c0de3fa2c0de")));
        assert_eq!(last.transform, None);
        let refused = s.refuse_transform_again().unwrap_err().to_string();
        assert!(refused.contains("segment-000001.mfj"), "{refused}");
        assert!(refused.contains("transformed twice"), "{refused}");
    }

    #[test]
    fn a_second_writer_appends_a_run_and_a_concurrent_one_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let mut w = SegmentWriter::open(&config(dir, None)).unwrap();
        assert!(matches!(
            SegmentWriter::open(&config(dir, None)),
            Err(JournalError::InUse { .. })
        ));
        w.write_frame(&[batch("a.x", 0..5, 100)]).unwrap();
        w.close().unwrap();
        let mut w = SegmentWriter::open(&config(dir, None)).unwrap();
        w.write_frame(&[batch("a.x", 5..8, 100)]).unwrap();
        let summary = w.close().unwrap();
        assert_eq!((summary.run, summary.records), (2, 3));
        assert_eq!(read_all(dir).len(), 8);
        assert_eq!(scan(dir).unwrap().runs, 2);
    }

    #[test]
    fn refuses_a_directory_with_other_files() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("notes.txt"), "x").unwrap();
        let err = SegmentWriter::open(&config(tmp.path(), None))
            .err()
            .unwrap();
        assert!(err.to_string().contains("notes.txt"), "{err}");
    }

    #[test]
    fn a_writer_that_died_mid_frame_is_recovered_by_the_next() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let mut w = SegmentWriter::open(&config(dir, None)).unwrap();
        w.write_frame(&[batch("a.x", 0..5, 100)]).unwrap();
        w.write_frame(&[batch("a.x", 5..10, 100)]).unwrap();
        let seg = w.segment_path();
        drop(w); // dies: the manifest still says open
        let len = std::fs::metadata(&seg).unwrap().len();
        let f = OpenOptions::new().write(true).open(&seg).unwrap();
        f.set_len(len - 7).unwrap();
        let s = scan(dir).unwrap();
        assert_eq!((s.health, s.records), (Health::Torn, 5));
        assert_eq!(s.state, JournalState::Open);
        let mut w = SegmentWriter::open(&config(dir, None)).unwrap();
        w.write_frame(&[batch("a.x", 5..10, 100)]).unwrap();
        w.close().unwrap();
        let ids: Vec<i64> = read_all(dir).into_iter().map(|(_, id)| id).collect();
        assert_eq!(ids, (0..10).collect::<Vec<_>>());
        assert_eq!(scan(dir).unwrap().health, Health::Intact);
    }

    #[test]
    fn a_closed_journal_whose_sealed_segment_was_cut_or_lost_is_not_appended_to() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let mut w = SegmentWriter::open(&config(dir, None)).unwrap();
        w.write_frame(&[batch("a.x", 0..5, 100)]).unwrap();
        let seg = w.segment_path();
        w.close().unwrap();
        let len = std::fs::metadata(&seg).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(&seg)
            .unwrap()
            .set_len(len - 1)
            .unwrap();
        let err = SegmentWriter::open(&config(dir, None)).err().unwrap();
        assert!(matches!(err, JournalError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains("manifest records"), "{err}");
        std::fs::remove_file(&seg).unwrap();
        let err = SegmentWriter::open(&config(dir, None)).err().unwrap();
        assert!(err.to_string().contains("missing"), "{err}");
        assert_eq!(
            Manifest::load(dir).unwrap().segments.len(),
            1,
            "nothing added"
        );
    }

    #[test]
    fn dropped_records_are_cut_out_of_a_batch() {
        let ns = Namespace::new("a", "x");
        let docs: Vec<RawDocumentBuf> = (0..3)
            .map(|i| mongodb::bson::rawdoc! { "_id": i, "pad": "x".repeat(i as usize * 10) })
            .collect();
        let all = EncodedBatch::encode(&ns, &docs).unwrap();
        let kept = EncodedBatch::encode(&ns, &docs)
            .unwrap()
            .without(|doc| doc == docs[1].as_bytes());
        let expected = EncodedBatch::encode(&ns, &[docs[0].clone(), docs[2].clone()]).unwrap();
        assert_eq!((kept.count, &kept.records), (2, &expected.records));
        assert_eq!(all.without(|_| false).count, 3);
    }

    #[tokio::test]
    async fn the_writer_task_frames_batches_and_closes() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let writer = JournalWriter::open(config(&dir, None)).await.unwrap();
        let journal = JournalWriter::start(writer);
        let sender = journal.sender();
        for i in 0..50 {
            sender
                .append(batch("a.x", i * 20..i * 20 + 20, 200))
                .await
                .unwrap();
        }
        // A sender still alive does not keep the writer from finishing.
        let summary = journal.finish().await.unwrap();
        assert_eq!(summary.records, 1000);
        assert!(summary.frames < 50, "batches share frames: {summary:?}");
        assert!(summary.bytes_per_doc > 0.0);
        assert!(sender.append(batch("a.x", 0..1, 10)).await.is_err());
        let ids: Vec<i64> = read_all(&dir).into_iter().map(|(_, id)| id).collect();
        assert_eq!(ids, (0..1000).collect::<Vec<_>>());
    }
}
