//! The journal: every write of a job, appended in order to compressed, checksummed files, to be
//! replayed (`mongoferry journal replay`) or exported for other tools (`mongoferry journal export`).
//!
//! In: batches of raw documents the destination has acknowledged (the engine's journaling sink
//! sends them), over a bounded channel to one [`writer`] task. Out: a directory of segment files
//! and a manifest, which the [`reader`] gives back as records in the order they were written (the
//! engine's journal source feeds them to a replay), and [`export`] turns into Extended JSON or
//! BSON files. This module knows nothing of the engine. This doc comment is the format's
//! specification.
//!
//! # On-disk format, version 1
//!
//! A journal is a directory:
//!
//! ```text
//! DIR/manifest.json        what the segments hold; rewritten whole (temporary file, fsync, rename)
//! DIR/segment-000001.mfj   segments, numbered from 1 without gaps, 6 digits or more
//! DIR/segment-000002.mfj
//! DIR/journal.lock         locked (flock) by the one process writing the journal
//! ```
//!
//! Integers are little-endian. "CRC" is CRC-32C (Castagnoli). No URI, host or credential is ever
//! written: records carry namespaces and documents only.
//!
//! ## Segment file
//!
//! A 24-byte header, then frames back to back up to the end of the file.
//!
//! | offset | size | field |
//! |---:|---:|---|
//! | 0 | 8 | magic `MFJOURNL` |
//! | 8 | 2 | format version: 1 |
//! | 10 | 2 | flags: 0 |
//! | 12 | 4 | segment number (the one in the file name) |
//! | 16 | 4 | run: 1 for the journal's first writer, one more for each later writer that appends |
//! | 20 | 4 | CRC of bytes 0..20 |
//!
//! Every run starts a new segment. Before writing a frame into a segment that has reached the
//! size limit (64 MiB unless configured), a writer seals it and starts the next one: a segment
//! exceeds the limit by at most one frame, and only a run that wrote nothing leaves an empty one.
//!
//! ## Frame
//!
//! A 48-byte header and its payload, one zstd frame holding whole records back to back.
//!
//! | offset | size | field |
//! |---:|---:|---|
//! | 0 | 4 | magic `MFJF` |
//! | 4 | 4 | payload length (compressed bytes) |
//! | 8 | 4 | records length (uncompressed bytes, at most 64 MiB) |
//! | 12 | 4 | record count (at least 1) |
//! | 16 | 8 | sequence number of the frame's first record; records are numbered from 0 across the journal, without gaps |
//! | 24 | 8 | when the write of the first record was acknowledged (Unix milliseconds) |
//! | 32 | 8 | the same for the last record |
//! | 40 | 4 | CRC of the payload |
//! | 44 | 4 | CRC of bytes 0..44 |
//!
//! A frame holds one or more batches as the destination acknowledged them; the writer cuts a
//! frame at 1 MiB of records or when no batch arrived for 100 ms.
//!
//! ## Record
//!
//! | size | field |
//! |---:|---|
//! | 1 | operation: 1 = upsert (insert the document, or replace the document with its `_id`; a copy writes each `_id` once per run); 2 = delete (the document with the `_id` of the record's document, which is `{_id: …}`); 3 = change (the document with this `_id` is now this one). 2 and 3 are a sync's changes: the same `_id` may change many times, so they apply in the journal's order; 4 = moved (a move deleted this `_id` from its source after verifying it at the destination; replay and export skip it) |
//! | 2 | namespace length N |
//! | N | namespace the write went to, `db.collection`, UTF-8 |
//! | 4 + … | the document, raw BSON exactly as written (its first 4 bytes are its length) |
//!
//! Other operation codes are reserved; a reader refuses them.
//!
//! ## Manifest
//!
//! ```json
//! {"format": "mongoferry-journal", "version": 1, "compression": "zstd", "checksum": "crc32c",
//!  "state": "closed", "created_ms": 1795738183010, "updated_ms": 1795738186870,
//!  "segments": [{"file": "segment-000001.mfj", "number": 1, "run": 1, "state": "sealed",
//!                "first_seq": 0, "frames": 31, "records": 30000, "bytes": 1843622,
//!                "first_ms": 1795738183200, "last_ms": 1795738186850,
//!                "namespaces": {"shop.orders": 30000}}]}
//! ```
//!
//! A segment written through a transform says so with `"transform": "3fa2…"` (the
//! transform's identity, a digest of its steps and key): its documents are what the transform
//! made, and a replay refuses to transform them again. Absent otherwise.
//!
//! `state` is `open` while a writer works (or after it died) and `closed` once it finished.
//! A segment is `open` while written, `sealed` (fsynced, counts final) after. The writer lists a
//! new segment in the manifest before it creates the file. A writer that finds the journal
//! `open` (its predecessor died) truncates a torn tail of the last segment, seals it with the
//! counts read back, and goes on with a new run and segment; it refuses a journal with any other
//! damage.
//!
//! ## Reading, and damage
//!
//! A reader checks every header's magic and CRC, every payload's CRC, the sequence numbers, that
//! each payload decompresses to exactly its records, and that sealed segments hold what the
//! manifest says. Then:
//!
//! - **Torn tail**: the journal's last segment, recorded as `open` in the manifest (its writer
//!   stopped without sealing it), ends inside a frame or is missing. Only that segment can be
//!   torn: it is the one a writer was appending to. Every whole frame before is read; the torn
//!   frame is not (it cannot be verified), and the reader says where the tail begins and how many
//!   records it read. Zero bytes up to the end of the file, as a file system may leave after a
//!   crash, count as torn.
//! - **Corruption**: anything else — a CRC mismatch, a gap in the sequence, an unlisted segment,
//!   and any damage to a **sealed** segment: missing, shorter or longer than the manifest
//!   recorded when it was sealed (also when it is the last one, cut at a frame boundary), or
//!   torn. It is an error naming the file and byte offset of the damaged frame; nothing after it
//!   is read, `replay` and `export` check the whole journal before they write anything, and a
//!   writer refuses to append to a journal whose sealed segments are missing or resized.

pub mod export;
pub mod reader;
pub mod writer;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::state::atomic::{self, write_bytes_atomic};

pub use writer::JournalSummary;

/// Name of the manifest file inside a journal directory.
pub const MANIFEST: &str = "manifest.json";
/// Name of the lock file inside a journal directory.
pub const LOCK: &str = "journal.lock";
pub const FORMAT: &str = "mongoferry-journal";
pub const VERSION: u16 = 1;

pub const SEGMENT_MAGIC: [u8; 8] = *b"MFJOURNL";
pub const SEGMENT_HEADER_LEN: usize = 24;
pub const FRAME_MAGIC: [u8; 4] = *b"MFJF";
pub const FRAME_HEADER_LEN: usize = 48;
/// Largest records length of a frame (a batch is at most 16 MiB of documents plus namespaces).
pub const MAX_FRAME_RECORDS: usize = 64 * 1024 * 1024;
/// The writer cuts a frame once it holds this many bytes of records.
pub const FRAME_TARGET: usize = 1024 * 1024;

pub const DEFAULT_SEGMENT_BYTES: u64 = 64 * 1024 * 1024;
pub const MIN_SEGMENT_BYTES: u64 = 4 * 1024;
pub const MAX_SEGMENT_BYTES: u64 = 16 * 1024 * 1024 * 1024;

/// What a record does to its namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    /// Insert the document, or replace the one with the same `_id` (a copy's write: each `_id`
    /// once per run, so a run's upserts may be applied in any order).
    Upsert = 1,
    /// A change: delete the document with the record's `_id` (the document is `{_id: …}`).
    Delete = 2,
    /// A change: the document with this `_id` is now this one (insert or replace). Changes are
    /// applied in the journal's order: the same `_id` may change many times.
    Change = 3,
    /// A move deleted the document with this `_id` from its source, after it was verified at the
    /// destination (the record's namespace; the document is `{_id: …}`). A note for the record:
    /// replay and export leave it out, since the destination keeps the document.
    Moved = 4,
}

impl Op {
    pub fn from_code(code: u8) -> Option<Op> {
        match code {
            1 => Some(Op::Upsert),
            2 => Some(Op::Delete),
            3 => Some(Op::Change),
            4 => Some(Op::Moved),
            _ => None,
        }
    }
}

/// `"journal": {"dir": "...", "segment_bytes": N}` of a job spec, and `copy --journal DIR`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct JournalConfig {
    /// Journal every write to this directory (created if missing, appended to if it holds a
    /// journal), for `mongoferry journal replay` or `export`.
    // Not required by itself: the whole group is optional; the segment size requires it.
    #[arg(
        long = "journal",
        id = "journal_dir",
        value_name = "DIR",
        required = false
    )]
    pub dir: String,
    /// Size at which a journal segment is sealed and the next one started [default: 64 MiB].
    #[arg(
        long = "journal-segment-bytes",
        id = "journal_segment_bytes",
        value_name = "BYTES"
    )]
    #[serde(default)]
    pub segment_bytes: Option<u64>,
    /// The transform the run's writes went through (`TransformRules::identity`), recorded with
    /// each segment it writes: set by the run, never given by the user.
    #[arg(skip)]
    #[serde(skip)]
    #[schema(ignore)]
    pub transform: Option<String>,
}

impl JournalConfig {
    pub fn new(dir: impl Into<String>) -> Self {
        JournalConfig {
            dir: dir.into(),
            segment_bytes: None,
            transform: None,
        }
    }

    pub fn segment_bytes(&self) -> u64 {
        self.segment_bytes.unwrap_or(DEFAULT_SEGMENT_BYTES)
    }

    /// Everything wrong with the config (checked without touching the disk).
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.dir.trim().is_empty() {
            problems.push("journal.dir: a directory is required".to_string());
        } else if self.dir.contains('\0') {
            problems.push("journal.dir: may not contain NUL".to_string());
        }
        if let Some(n) = self.segment_bytes {
            if !(MIN_SEGMENT_BYTES..=MAX_SEGMENT_BYTES).contains(&n) {
                problems.push(format!(
                    "journal.segment_bytes: must be {MIN_SEGMENT_BYTES}..={MAX_SEGMENT_BYTES}, got {n}"
                ));
            }
        }
        problems
    }
}

/// Errors of reading or writing a journal. Damage names the file and the byte offset.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal {}: {action} failed: {source}", path.display())]
    Io {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not a mongoferry journal: {reason}", dir.display())]
    NotAJournal { dir: PathBuf, reason: String },
    #[error("journal {} is being written by another process", dir.display())]
    InUse { dir: PathBuf },
    #[error("journal {}: invalid manifest: {reason}", path.display())]
    Manifest { path: PathBuf, reason: String },
    #[error("journal {} is corrupt at byte {offset}: {reason}", file.display())]
    Corrupt {
        file: PathBuf,
        offset: u64,
        reason: String,
    },
    #[error("journal: a batch of {bytes} bytes of records is larger than a frame may be")]
    BatchTooLarge { bytes: usize },
    #[error("journal writer stopped: {0}")]
    WriterStopped(String),
    #[error("journal task failed: {0}")]
    TaskFailed(String),
    #[error(
        "journal {} holds documents that a transform already made ({file}, transform {transform}): \
         replay it without --transform, or they would be transformed twice",
        dir.display()
    )]
    Transformed {
        dir: PathBuf,
        file: String,
        transform: String,
    },
    #[error("namespace {ns} is not in journal {} (it holds: {held})", dir.display())]
    NamespaceNotFound {
        dir: PathBuf,
        ns: String,
        held: String,
    },
}

impl JournalError {
    pub(crate) fn io(path: &Path, action: &'static str, source: std::io::Error) -> Self {
        JournalError::Io {
            path: path.to_path_buf(),
            action,
            source,
        }
    }
}

/// Whether a writer is at work on the journal (or died without closing it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JournalState {
    Open,
    Closed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SegmentState {
    /// Being written (or its writer died): its counts in the manifest may be behind the file.
    Open,
    /// Finished and fsynced: the file holds exactly what the manifest says.
    Sealed,
}

/// `manifest.json`: what the journal's segments hold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub version: u16,
    pub compression: String,
    pub checksum: String,
    pub state: JournalState,
    pub created_ms: i64,
    pub updated_ms: i64,
    pub segments: Vec<SegmentInfo>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentInfo {
    pub file: String,
    pub number: u32,
    pub run: u32,
    pub state: SegmentState,
    /// Sequence number of the segment's first record.
    pub first_seq: u64,
    pub frames: u64,
    pub records: u64,
    /// Length of the file.
    pub bytes: u64,
    pub first_ms: Option<i64>,
    pub last_ms: Option<i64>,
    /// Records per namespace.
    pub namespaces: BTreeMap<String, u64>,
    /// The documents are what this transform (its identity) made of the source's: a replay
    /// must not transform them again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transform: Option<String>,
}

impl Manifest {
    pub fn new() -> Self {
        let now = unix_ms();
        Manifest {
            format: FORMAT.to_string(),
            version: VERSION,
            compression: "zstd".to_string(),
            checksum: "crc32c".to_string(),
            state: JournalState::Open,
            created_ms: now,
            updated_ms: now,
            segments: Vec::new(),
        }
    }

    /// Reads and checks `DIR/manifest.json`.
    pub fn load(dir: &Path) -> Result<Manifest, JournalError> {
        let path = dir.join(MANIFEST);
        let text = match std::fs::read(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(JournalError::NotAJournal {
                    dir: dir.to_path_buf(),
                    reason: format!("no {MANIFEST}"),
                })
            }
            Err(e) => return Err(JournalError::io(&path, "read", e)),
        };
        let invalid = |reason: String| JournalError::Manifest {
            path: path.clone(),
            reason,
        };
        let manifest: Manifest =
            serde_json::from_slice(&text).map_err(|e| invalid(e.to_string()))?;
        if manifest.format != FORMAT {
            return Err(invalid(format!("format is {:?}", manifest.format)));
        }
        if manifest.version != VERSION {
            return Err(invalid(format!(
                "version {} (this mongoferry reads version {VERSION})",
                manifest.version
            )));
        }
        if manifest.compression != "zstd" || manifest.checksum != "crc32c" {
            return Err(invalid(format!(
                "compression {:?} and checksum {:?} (expected zstd and crc32c)",
                manifest.compression, manifest.checksum
            )));
        }
        let mut expected_seq = 0;
        for (i, seg) in manifest.segments.iter().enumerate() {
            let number = i as u32 + 1;
            if seg.number != number || seg.file != segment_file_name(number) {
                return Err(invalid(format!(
                    "segment {} is listed as number {} in file {:?}",
                    number, seg.number, seg.file
                )));
            }
            if seg.state == SegmentState::Open && i + 1 != manifest.segments.len() {
                return Err(invalid(format!("{} is open but not the last", seg.file)));
            }
            if seg.first_seq != expected_seq {
                return Err(invalid(format!(
                    "{} starts at record {} instead of {expected_seq}",
                    seg.file, seg.first_seq
                )));
            }
            expected_seq += seg.records;
        }
        Ok(manifest)
    }

    /// Writes the manifest atomically: to a temporary file, fsynced, renamed over the old one.
    pub fn store(&mut self, dir: &Path) -> Result<(), JournalError> {
        self.updated_ms = unix_ms();
        let path = dir.join(MANIFEST);
        let mut text = serde_json::to_vec_pretty(self).expect("manifest serialises");
        text.push(b'\n');
        write_bytes_atomic(&path, &text).map_err(|e| JournalError::io(&path, "write", e))
    }

    /// Records per namespace over all segments (as the manifest knows them).
    pub fn namespaces(&self) -> BTreeMap<String, u64> {
        let mut all = BTreeMap::new();
        for seg in &self.segments {
            for (ns, n) in &seg.namespaces {
                *all.entry(ns.clone()).or_default() += n;
            }
        }
        all
    }
}

impl Default for Manifest {
    fn default() -> Self {
        Self::new()
    }
}

/// Makes a rename or a new file in `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), JournalError> {
    atomic::sync_dir(dir).map_err(|e| JournalError::io(dir, "sync", e))
}

pub fn segment_file_name(number: u32) -> String {
    format!("segment-{number:06}.mfj")
}

/// The segment number of a file name like `segment-000012.mfj`.
pub fn parse_segment_file_name(name: &str) -> Option<u32> {
    let digits = name.strip_prefix("segment-")?.strip_suffix(".mfj")?;
    if digits.len() < 6 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

pub fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// `2026-11-27T01:49:03.120Z` for Unix milliseconds (UTC, proleptic Gregorian).
pub fn format_utc(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let of_day = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (the well-known era-based conversion).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60
    )
}

/// The header at the start of every segment file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    pub number: u32,
    pub run: u32,
}

impl SegmentHeader {
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_LEN] {
        let mut b = [0u8; SEGMENT_HEADER_LEN];
        b[0..8].copy_from_slice(&SEGMENT_MAGIC);
        b[8..10].copy_from_slice(&VERSION.to_le_bytes());
        b[12..16].copy_from_slice(&self.number.to_le_bytes());
        b[16..20].copy_from_slice(&self.run.to_le_bytes());
        let crc = crc32c::crc32c(&b[0..20]);
        b[20..24].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// The header, or what is wrong with it.
    pub fn decode(b: &[u8; SEGMENT_HEADER_LEN]) -> Result<SegmentHeader, String> {
        if b[0..8] != SEGMENT_MAGIC {
            return Err("not a journal segment (bad magic)".into());
        }
        let stored = u32_at(b, 20);
        let computed = crc32c::crc32c(&b[0..20]);
        if stored != computed {
            return Err(format!(
                "segment header checksum mismatch (stored {stored:08x}, computed {computed:08x})"
            ));
        }
        let version = u16::from_le_bytes([b[8], b[9]]);
        if version != VERSION {
            return Err(format!(
                "segment format version {version} (this mongoferry reads {VERSION})"
            ));
        }
        Ok(SegmentHeader {
            number: u32_at(b, 12),
            run: u32_at(b, 16),
        })
    }
}

/// The header in front of every frame's payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub payload_len: u32,
    pub records_len: u32,
    pub records: u32,
    pub first_seq: u64,
    pub first_ms: i64,
    pub last_ms: i64,
    pub payload_crc: u32,
}

impl FrameHeader {
    pub fn encode(&self) -> [u8; FRAME_HEADER_LEN] {
        let mut b = [0u8; FRAME_HEADER_LEN];
        b[0..4].copy_from_slice(&FRAME_MAGIC);
        b[4..8].copy_from_slice(&self.payload_len.to_le_bytes());
        b[8..12].copy_from_slice(&self.records_len.to_le_bytes());
        b[12..16].copy_from_slice(&self.records.to_le_bytes());
        b[16..24].copy_from_slice(&self.first_seq.to_le_bytes());
        b[24..32].copy_from_slice(&self.first_ms.to_le_bytes());
        b[32..40].copy_from_slice(&self.last_ms.to_le_bytes());
        b[40..44].copy_from_slice(&self.payload_crc.to_le_bytes());
        let crc = crc32c::crc32c(&b[0..44]);
        b[44..48].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// The header, or what is wrong with it.
    pub fn decode(b: &[u8; FRAME_HEADER_LEN]) -> Result<FrameHeader, String> {
        if b[0..4] != FRAME_MAGIC {
            return Err("no frame starts here (bad magic)".into());
        }
        let stored = u32_at(b, 44);
        let computed = crc32c::crc32c(&b[0..44]);
        if stored != computed {
            return Err(format!(
                "frame header checksum mismatch (stored {stored:08x}, computed {computed:08x})"
            ));
        }
        let header = FrameHeader {
            payload_len: u32_at(b, 4),
            records_len: u32_at(b, 8),
            records: u32_at(b, 12),
            first_seq: u64_at(b, 16),
            first_ms: u64_at(b, 24) as i64,
            last_ms: u64_at(b, 32) as i64,
            payload_crc: u32_at(b, 40),
        };
        if header.records == 0 || header.records_len as usize > MAX_FRAME_RECORDS {
            return Err(format!(
                "frame header claims {} records in {} bytes",
                header.records, header.records_len
            ));
        }
        Ok(header)
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Appends one record (see the format above) to `out`.
pub fn encode_record(out: &mut Vec<u8>, op: Op, ns: &str, doc: &[u8]) {
    out.push(op as u8);
    out.extend_from_slice(&(ns.len() as u16).to_le_bytes());
    out.extend_from_slice(ns.as_bytes());
    out.extend_from_slice(doc);
}

#[cfg(test)]
/// Documents of about `size` bytes that compress poorly (so segments fill).
pub(crate) fn test_batch(ns: &str, ids: std::ops::Range<i64>, size: usize) -> writer::EncodedBatch {
    let (db, coll) = ns.split_once('.').unwrap();
    let docs: Vec<_> = ids
        .map(|i| {
            let mut doc = crate::engine::source::synthetic::sample_document(i, 0);
            let mut x = i as u64 + 1;
            let noise: Vec<u8> = (0..size)
                .map(|_| {
                    x = x
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    (x >> 56) as u8
                })
                .collect();
            doc.append(
                "noise",
                mongodb::bson::Binary {
                    subtype: mongodb::bson::spec::BinarySubtype::Generic,
                    bytes: noise,
                },
            );
            doc
        })
        .collect();
    let mut b =
        writer::EncodedBatch::encode(&crate::mongo::Namespace::new(db, coll), &docs).unwrap();
    b.acknowledged_ms = 1_000 + docs.len() as i64;
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_and_catch_flipped_bits() {
        let frame = FrameHeader {
            payload_len: 1234,
            records_len: 99_999,
            records: 500,
            first_seq: 1 << 40,
            first_ms: 1_795_738_183_010,
            last_ms: 1_795_738_183_999,
            payload_crc: 0xdead_beef,
        };
        let bytes = frame.encode();
        assert_eq!(FrameHeader::decode(&bytes), Ok(frame));
        for bit in 0..FRAME_HEADER_LEN * 8 {
            let mut flipped = bytes;
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert!(FrameHeader::decode(&flipped).is_err(), "bit {bit}");
        }
        let seg = SegmentHeader { number: 7, run: 2 };
        let bytes = seg.encode();
        assert_eq!(SegmentHeader::decode(&bytes), Ok(seg));
        for bit in 0..SEGMENT_HEADER_LEN * 8 {
            let mut flipped = bytes;
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert!(SegmentHeader::decode(&flipped).is_err(), "bit {bit}");
        }
    }

    #[test]
    fn segment_names() {
        assert_eq!(segment_file_name(12), "segment-000012.mfj");
        assert_eq!(parse_segment_file_name("segment-000012.mfj"), Some(12));
        assert_eq!(
            parse_segment_file_name("segment-1234567.mfj"),
            Some(1_234_567)
        );
        assert_eq!(parse_segment_file_name("segment-12.mfj"), None);
        assert_eq!(parse_segment_file_name("segment-00001x.mfj"), None);
    }

    #[test]
    fn formats_utc() {
        assert_eq!(format_utc(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_utc(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(format_utc(-1), "1969-12-31T23:59:59.999Z");
        assert_eq!(format_utc(1_795_738_183_010), "2026-11-27T00:09:43.010Z");
    }

    #[test]
    fn config_problems() {
        assert!(JournalConfig::new("/tmp/j").problems().is_empty());
        assert_eq!(JournalConfig::new(" ").problems().len(), 1);
        let tiny = JournalConfig {
            segment_bytes: Some(10),
            ..JournalConfig::new("/tmp/j")
        };
        assert!(tiny.problems()[0].contains("segment_bytes"), "{tiny:?}");
    }
}
