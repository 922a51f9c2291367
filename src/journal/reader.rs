//! Reading a journal back: frames and records in the order they were written, every checksum
//! verified, torn tails and corruption told apart (the rules are in the [module doc](super)).
//!
//! In: a journal directory. Out: [`Frame`]s of [`Record`]s from a [`JournalReader`], and a
//! [`Scan`] of the whole journal (segments, namespaces, time span, damage) for `inspect` and for
//! the checks `replay` and `export` make before they write anything. Blocking file IO: async
//! callers run it in `spawn_blocking`.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use mongodb::bson::RawDocument;
use serde::Serialize;

use super::{
    parse_segment_file_name, FrameHeader, JournalError, JournalState, Manifest, Op, SegmentHeader,
    SegmentInfo, SegmentState, FRAME_HEADER_LEN, SEGMENT_HEADER_LEN,
};

/// The last segment ends inside a frame: everything before was read, the torn frame was not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TornTail {
    pub file: PathBuf,
    /// Where the torn frame (or segment header) begins.
    pub offset: u64,
    /// Whole records read before it, over the whole journal.
    pub records_read: u64,
    pub detail: String,
}

impl fmt::Display for TornTail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "journal {} has a torn tail at byte {} ({}): the writer stopped mid-write or the file \
             was cut; the {} whole records before it are read, the incomplete frame is left out",
            self.file.display(),
            self.offset,
            self.detail,
            self.records_read
        )
    }
}

/// One record of a frame.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    pub op: Op,
    /// `db.collection` the write went to.
    pub ns: &'a str,
    pub doc: &'a RawDocument,
}

#[derive(Debug, Clone, Copy)]
struct RecordSpan {
    op: Op,
    ns: (usize, usize),
    doc: (usize, usize),
}

/// A verified frame: its place in the journal and its records.
#[derive(Debug)]
pub struct Frame {
    pub segment: u32,
    pub run: u32,
    /// Byte offset of the frame header in its segment file.
    pub offset: u64,
    pub header: FrameHeader,
    data: Vec<u8>,
    spans: Vec<RecordSpan>,
}

impl Frame {
    pub fn records(&self) -> impl Iterator<Item = Record<'_>> + '_ {
        self.spans.iter().map(|s| Record {
            op: s.op,
            ns: std::str::from_utf8(&self.data[s.ns.0..s.ns.1]).expect("checked when read"),
            doc: RawDocument::from_bytes(&self.data[s.doc.0..s.doc.1]).expect("checked when read"),
        })
    }

    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }
}

/// What one step through a segment found.
enum Step {
    Frame(Frame),
    End,
    Torn { offset: u64, detail: String },
}

/// An open segment file being read frame by frame.
struct SegmentCursor {
    path: PathBuf,
    info: SegmentInfo,
    file: BufReader<File>,
    len: u64,
    offset: u64,
    frames: u64,
    records: u64,
    namespaces: BTreeMap<String, u64>,
    payload: Vec<u8>,
}

impl SegmentCursor {
    /// Opens the segment and checks its header; `Ok(Err(torn))` when the header is incomplete.
    fn open(dir: &Path, info: &SegmentInfo) -> Result<Result<Self, Step>, JournalError> {
        let path = dir.join(&info.file);
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Err(Step::Torn {
                    offset: 0,
                    detail: "the segment file is missing".into(),
                }))
            }
            Err(e) => return Err(JournalError::io(&path, "open", e)),
        };
        let len = file
            .metadata()
            .map_err(|e| JournalError::io(&path, "stat", e))?
            .len();
        let mut cursor = SegmentCursor {
            path,
            info: info.clone(),
            file: BufReader::with_capacity(256 * 1024, file),
            len,
            offset: 0,
            frames: 0,
            records: 0,
            namespaces: BTreeMap::new(),
            payload: Vec::new(),
        };
        if len < SEGMENT_HEADER_LEN as u64 {
            return Ok(Err(Step::Torn {
                offset: 0,
                detail: format!("segment header incomplete: {len} of {SEGMENT_HEADER_LEN} bytes"),
            }));
        }
        let mut b = [0u8; SEGMENT_HEADER_LEN];
        cursor.read_exact(&mut b)?;
        let header = SegmentHeader::decode(&b).map_err(|reason| cursor.corrupt(0, reason))?;
        if header.number != info.number || header.run != info.run {
            return Err(cursor.corrupt(
                0,
                format!(
                    "header says segment {} of run {}, the manifest segment {} of run {}",
                    header.number, header.run, info.number, info.run
                ),
            ));
        }
        cursor.offset = SEGMENT_HEADER_LEN as u64;
        Ok(Ok(cursor))
    }

    fn corrupt(&self, offset: u64, reason: impl Into<String>) -> JournalError {
        JournalError::Corrupt {
            file: self.path.clone(),
            offset,
            reason: reason.into(),
        }
    }

    fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), JournalError> {
        self.file
            .read_exact(buf)
            .map_err(|e| JournalError::io(&self.path, "read", e))
    }

    /// True when every byte from `offset` to the end of the file is zero (a crash can leave a
    /// file extended but not written).
    fn zeros_to_end(&mut self, offset: u64) -> Result<bool, JournalError> {
        self.file
            .seek(SeekFrom::Start(offset))
            .map_err(|e| JournalError::io(&self.path, "seek", e))?;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = self
                .file
                .read(&mut buf)
                .map_err(|e| JournalError::io(&self.path, "read", e))?;
            if n == 0 {
                return Ok(true);
            }
            if buf[..n].iter().any(|&b| b != 0) {
                return Ok(false);
            }
        }
    }

    /// The next frame, verified, whose first record must be number `next_seq`.
    fn next(
        &mut self,
        next_seq: u64,
        decompressor: &mut zstd::bulk::Decompressor<'static>,
    ) -> Result<Step, JournalError> {
        let at = self.offset;
        let left = self.len - at;
        if left == 0 {
            return Ok(Step::End);
        }
        if left < FRAME_HEADER_LEN as u64 {
            return self.torn_or_corrupt(
                at,
                format!("frame header incomplete: {left} of {FRAME_HEADER_LEN} bytes"),
                true,
            );
        }
        let mut b = [0u8; FRAME_HEADER_LEN];
        self.read_exact(&mut b)?;
        let header = match FrameHeader::decode(&b) {
            Ok(h) => h,
            Err(reason) => return self.torn_or_corrupt(at, reason, false),
        };
        let end = at + FRAME_HEADER_LEN as u64 + header.payload_len as u64;
        if end > self.len {
            return self.torn_or_corrupt(
                at,
                format!(
                    "frame payload incomplete: {} of {} bytes",
                    self.len - at - FRAME_HEADER_LEN as u64,
                    header.payload_len
                ),
                true,
            );
        }
        if header.first_seq != next_seq {
            return Err(self.corrupt(
                at,
                format!(
                    "frame starts at record {}, expected {next_seq} (records missing or repeated)",
                    header.first_seq
                ),
            ));
        }
        self.payload.resize(header.payload_len as usize, 0);
        let mut payload = std::mem::take(&mut self.payload);
        let read = self.read_exact(&mut payload);
        self.payload = payload;
        read?;
        let computed = crc32c::crc32c(&self.payload);
        if computed != header.payload_crc {
            return Err(self.corrupt(
                at,
                format!(
                    "frame payload checksum mismatch (stored {:08x}, computed {computed:08x})",
                    header.payload_crc
                ),
            ));
        }
        let data = decompressor
            .decompress(&self.payload, header.records_len as usize)
            .map_err(|e| self.corrupt(at, format!("frame payload does not decompress: {e}")))?;
        if data.len() != header.records_len as usize {
            return Err(self.corrupt(
                at,
                format!(
                    "frame decompresses to {} bytes, its header says {}",
                    data.len(),
                    header.records_len
                ),
            ));
        }
        let spans = parse_records(&data).map_err(|reason| self.corrupt(at, reason))?;
        if spans.len() != header.records as usize {
            return Err(self.corrupt(
                at,
                format!(
                    "frame holds {} records, its header says {}",
                    spans.len(),
                    header.records
                ),
            ));
        }
        self.offset = end;
        self.frames += 1;
        self.records += spans.len() as u64;
        for s in &spans {
            let ns = std::str::from_utf8(&data[s.ns.0..s.ns.1]).expect("checked");
            match self.namespaces.get_mut(ns) {
                Some(n) => *n += 1,
                None => {
                    self.namespaces.insert(ns.to_string(), 1);
                }
            }
        }
        Ok(Step::Frame(Frame {
            segment: self.info.number,
            run: self.info.run,
            offset: at,
            header,
            data,
            spans,
        }))
    }

    /// A frame that cannot be read whole: torn if the rest of the file is nothing but a partial
    /// write, corrupt otherwise. Whether a torn end is allowed here is the caller's decision.
    fn torn_or_corrupt(
        &mut self,
        at: u64,
        reason: String,
        incomplete: bool,
    ) -> Result<Step, JournalError> {
        if incomplete || self.zeros_to_end(at)? {
            let detail = if incomplete {
                reason
            } else {
                format!("{} zero bytes to the end of the file", self.len - at)
            };
            return Ok(Step::Torn { offset: at, detail });
        }
        Err(self.corrupt(at, reason))
    }

    /// Checks a sealed segment read to its end against what the manifest says it holds.
    fn check_sealed(&self) -> Result<(), JournalError> {
        let info = &self.info;
        if info.state != SegmentState::Sealed {
            return Ok(());
        }
        if (info.frames, info.records, info.bytes) != (self.frames, self.records, self.len)
            || info.namespaces != self.namespaces
        {
            return Err(self.corrupt(
                self.len,
                format!(
                    "the manifest records {} records in {} frames and {} bytes for this sealed \
                     segment, the file holds {} records in {} frames and {} bytes",
                    info.records, info.frames, info.bytes, self.records, self.frames, self.len
                ),
            ));
        }
        Ok(())
    }
}

/// Walks the records of a decompressed frame, checking their structure.
fn parse_records(data: &[u8]) -> Result<Vec<RecordSpan>, String> {
    let mut spans = Vec::new();
    let mut at = 0;
    while at < data.len() {
        let n = spans.len();
        let bad =
            |what: String| format!("record {n} of the frame (byte {at} of its records): {what}");
        if data.len() - at < 3 {
            return Err(bad("record header cut short".into()));
        }
        let op = Op::from_code(data[at])
            .ok_or_else(|| bad(format!("unknown operation code {}", data[at])))?;
        let ns_len = u16::from_le_bytes([data[at + 1], data[at + 2]]) as usize;
        let ns = (at + 3, at + 3 + ns_len);
        if ns.1 > data.len() {
            return Err(bad("namespace runs past the end of the frame".into()));
        }
        match std::str::from_utf8(&data[ns.0..ns.1]) {
            Ok(name)
                if name
                    .split_once('.')
                    .is_some_and(|(d, c)| !d.is_empty() && !c.is_empty()) => {}
            _ => return Err(bad("namespace is not `db.collection` in UTF-8".into())),
        }
        let doc_at = ns.1;
        if data.len() - doc_at < 5 {
            return Err(bad("document cut short".into()));
        }
        let doc_len = i32::from_le_bytes(data[doc_at..doc_at + 4].try_into().expect("4 bytes"));
        if doc_len < 5 || doc_at + doc_len as usize > data.len() {
            return Err(bad(format!(
                "document length {doc_len} does not fit the frame"
            )));
        }
        let doc = (doc_at, doc_at + doc_len as usize);
        RawDocument::from_bytes(&data[doc.0..doc.1])
            .map_err(|e| bad(format!("not a BSON document: {e}")))?;
        spans.push(RecordSpan { op, ns, doc });
        at = doc.1;
    }
    Ok(spans)
}

/// Reads a journal's frames in order, from the first segment to the last.
pub struct JournalReader {
    dir: PathBuf,
    manifest: Manifest,
    next_segment: usize,
    current: Option<SegmentCursor>,
    next_seq: u64,
    tail: Option<TornTail>,
    done: bool,
    decompressor: zstd::bulk::Decompressor<'static>,
}

impl JournalReader {
    /// Opens the journal in `dir`: its manifest, and a check that no segment file is unlisted.
    pub fn open(dir: &Path) -> Result<JournalReader, JournalError> {
        let manifest = Manifest::load(dir)?;
        let listed = manifest.segments.len() as u32;
        let entries = std::fs::read_dir(dir).map_err(|e| JournalError::io(dir, "list", e))?;
        for entry in entries {
            let entry = entry.map_err(|e| JournalError::io(dir, "list", e))?;
            let name = entry.file_name();
            let Some(number) = name.to_str().and_then(parse_segment_file_name) else {
                continue;
            };
            // A writer lists a segment before creating it; one it has created since the manifest
            // was read is simply not read yet.
            let being_started = manifest.state == JournalState::Open && number == listed + 1;
            if number == 0 || (number > listed && !being_started) {
                return Err(JournalError::Corrupt {
                    file: entry.path(),
                    offset: 0,
                    reason: format!(
                        "segment file not listed in the manifest (it lists {listed} segments)"
                    ),
                });
            }
        }
        Ok(JournalReader {
            dir: dir.to_path_buf(),
            manifest,
            next_segment: 0,
            current: None,
            next_seq: 0,
            tail: None,
            done: false,
            decompressor: zstd::bulk::Decompressor::new()
                .map_err(|e| JournalError::io(dir, "start zstd", e))?,
        })
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Whole records read so far.
    pub fn records_read(&self) -> u64 {
        self.next_seq
    }

    /// Set once the end of the journal was reached inside a frame.
    pub fn torn_tail(&self) -> Option<&TornTail> {
        self.tail.as_ref()
    }

    /// The next whole, verified frame; `None` at the end of the journal (see [`torn_tail`]).
    ///
    /// [`torn_tail`]: Self::torn_tail
    pub fn next_frame(&mut self) -> Result<Option<Frame>, JournalError> {
        loop {
            if self.done {
                return Ok(None);
            }
            let is_last = self.next_segment == self.manifest.segments.len();
            let step = match &mut self.current {
                Some(cursor) => cursor.next(self.next_seq, &mut self.decompressor)?,
                None if is_last => {
                    self.done = true;
                    return Ok(None);
                }
                None => {
                    let info = &self.manifest.segments[self.next_segment];
                    self.next_segment += 1;
                    match SegmentCursor::open(&self.dir, info)? {
                        Ok(cursor) => {
                            self.current = Some(cursor);
                            continue;
                        }
                        Err(torn) => torn,
                    }
                }
            };
            // The segment being read is the journal's last one when none is left to open.
            let in_last = self.next_segment == self.manifest.segments.len();
            match step {
                Step::Frame(frame) => {
                    self.next_seq += frame.len() as u64;
                    return Ok(Some(frame));
                }
                Step::End => {
                    // A sealed segment cut at a frame boundary fails here: it holds less than
                    // the manifest recorded when it was sealed.
                    let cursor = self.current.take().expect("a segment was being read");
                    cursor.check_sealed()?;
                }
                Step::Torn { offset, detail } => {
                    let info = &self.manifest.segments[self.next_segment - 1];
                    let file = self.dir.join(&info.file);
                    // Only the segment a writer had open when it stopped can end mid-write.
                    let reason = if !in_last {
                        Some(format!("{detail}, but later segments follow"))
                    } else if info.state == SegmentState::Sealed {
                        Some(format!(
                            "{detail}, but the manifest records this segment as sealed with {} \
                             bytes: it was cut or lost after it was complete",
                            info.bytes
                        ))
                    } else {
                        None
                    };
                    if let Some(reason) = reason {
                        return Err(JournalError::Corrupt {
                            file,
                            offset,
                            reason,
                        });
                    }
                    self.tail = Some(TornTail {
                        file,
                        offset,
                        records_read: self.next_seq,
                        detail,
                    });
                    self.current = None;
                    self.done = true;
                    return Ok(None);
                }
            }
        }
    }
}

/// What a segment holds, as read back.
#[derive(Debug, Clone, Serialize)]
pub struct SegmentScan {
    pub file: String,
    pub run: u32,
    pub state: SegmentState,
    pub frames: u64,
    pub records: u64,
    pub bytes: u64,
    pub first_ms: Option<i64>,
    pub last_ms: Option<i64>,
    /// Its documents are what this transform made (as the manifest records it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transform: Option<String>,
}

/// How a journal read back: intact, torn at its end, or corrupt somewhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    Intact,
    Torn,
    Corrupt,
}

/// Where a corrupt journal is damaged.
#[derive(Debug, Clone, Serialize)]
pub struct Corruption {
    pub file: PathBuf,
    pub offset: u64,
    pub reason: String,
    /// The error as one line.
    pub message: String,
}

/// A whole journal read back and verified (for `inspect`, and before `replay` and `export`).
#[derive(Debug, Clone, Serialize)]
pub struct Scan {
    pub dir: PathBuf,
    pub state: JournalState,
    pub runs: u32,
    pub health: Health,
    pub segments: Vec<SegmentScan>,
    /// Whole records per namespace.
    pub namespaces: BTreeMap<String, u64>,
    pub frames: u64,
    pub records: u64,
    /// Size of the segment files.
    pub bytes: u64,
    /// Bytes of raw BSON documents the records hold.
    pub document_bytes: u64,
    pub first_ms: Option<i64>,
    pub last_ms: Option<i64>,
    pub torn_tail: Option<TornTail>,
    pub corruption: Option<Corruption>,
}

impl Scan {
    /// Refuses to transform the journal's documents when a segment holds what a transform
    /// already made: they would be transformed twice.
    pub fn refuse_transform_again(&self) -> Result<(), JournalError> {
        let transformed = self
            .segments
            .iter()
            .find_map(|s| Some((&s.file, s.transform.as_ref()?)));
        match transformed {
            None => Ok(()),
            Some((file, transform)) => Err(JournalError::Transformed {
                dir: self.dir.clone(),
                file: file.clone(),
                transform: transform.clone(),
            }),
        }
    }

    /// The damage that forbids using the journal, as an error.
    pub fn corruption_error(&self) -> Option<JournalError> {
        self.corruption.as_ref().map(|c| JournalError::Corrupt {
            file: c.file.clone(),
            offset: c.offset,
            reason: c.reason.clone(),
        })
    }
}

/// Reads the whole journal, verifying every frame. `Err` only when it cannot be opened at all
/// (no manifest, unreadable manifest); damage further in is reported in the [`Scan`].
pub fn scan(dir: &Path) -> Result<Scan, JournalError> {
    let mut reader = JournalReader::open(dir)?;
    let manifest = reader.manifest().clone();
    let mut segments: Vec<SegmentScan> = manifest
        .segments
        .iter()
        .map(|s| SegmentScan {
            file: s.file.clone(),
            run: s.run,
            state: s.state,
            frames: 0,
            records: 0,
            bytes: std::fs::metadata(dir.join(&s.file)).map_or(0, |m| m.len()),
            first_ms: None,
            last_ms: None,
            transform: s.transform.clone(),
        })
        .collect();
    let mut namespaces = BTreeMap::new();
    let (mut frames, mut document_bytes) = (0, 0);
    let mut corruption = None;
    loop {
        match reader.next_frame() {
            Ok(Some(frame)) => {
                frames += 1;
                let seg = &mut segments[frame.segment as usize - 1];
                seg.frames += 1;
                seg.records += frame.len() as u64;
                seg.first_ms.get_or_insert(frame.header.first_ms);
                seg.last_ms = Some(frame.header.last_ms);
                for record in frame.records() {
                    document_bytes += record.doc.as_bytes().len() as u64;
                    match namespaces.get_mut(record.ns) {
                        Some(n) => *n += 1,
                        None => {
                            namespaces.insert(record.ns.to_string(), 1u64);
                        }
                    }
                }
            }
            Ok(None) => break,
            Err(e @ JournalError::Corrupt { .. }) => {
                let message = e.to_string();
                if let JournalError::Corrupt {
                    file,
                    offset,
                    reason,
                } = e
                {
                    corruption = Some(Corruption {
                        file,
                        offset,
                        reason,
                        message,
                    });
                }
                break;
            }
            Err(e) => return Err(e),
        }
    }
    let torn_tail = reader.torn_tail().cloned();
    let health = match (&corruption, &torn_tail) {
        (Some(_), _) => Health::Corrupt,
        (None, Some(_)) => Health::Torn,
        (None, None) => Health::Intact,
    };
    Ok(Scan {
        dir: dir.to_path_buf(),
        state: manifest.state,
        runs: manifest.segments.iter().map(|s| s.run).max().unwrap_or(0),
        health,
        namespaces,
        frames,
        records: reader.records_read(),
        bytes: segments.iter().map(|s| s.bytes).sum(),
        document_bytes,
        first_ms: segments.iter().filter_map(|s| s.first_ms).min(),
        last_ms: segments.iter().filter_map(|s| s.last_ms).max(),
        segments,
        torn_tail,
        corruption,
    })
}

/// What the last segment holds up to its last whole frame (for a writer recovering it).
pub(crate) struct Recovered {
    pub frames: u64,
    pub records: u64,
    /// Where the last whole frame ends: the file is truncated here.
    pub valid_len: u64,
    pub first_ms: Option<i64>,
    pub last_ms: Option<i64>,
    pub namespaces: BTreeMap<String, u64>,
    pub torn: Option<TornTail>,
    /// False when the file was never created.
    pub exists: bool,
}

/// Reads the journal's last segment (left open by a writer that died) to its last whole frame.
pub(crate) fn recover_last_segment(
    dir: &Path,
    manifest: &Manifest,
) -> Result<Recovered, JournalError> {
    let info = manifest.segments.last().expect("a last segment");
    let mut recovered = Recovered {
        frames: 0,
        records: 0,
        valid_len: 0,
        first_ms: None,
        last_ms: None,
        namespaces: BTreeMap::new(),
        torn: None,
        exists: dir.join(&info.file).exists(),
    };
    let mut decompressor =
        zstd::bulk::Decompressor::new().map_err(|e| JournalError::io(dir, "start zstd", e))?;
    let torn = |offset: u64, detail: String, records: u64| TornTail {
        file: dir.join(&info.file),
        offset,
        records_read: records,
        detail,
    };
    let mut cursor = match SegmentCursor::open(dir, info)? {
        Ok(cursor) => cursor,
        Err(Step::Torn { offset, detail }) => {
            recovered.torn = Some(torn(offset, detail, info.first_seq));
            return Ok(recovered);
        }
        Err(_) => unreachable!("opening a segment ends torn or with a cursor"),
    };
    let mut seq = info.first_seq;
    loop {
        match cursor.next(seq, &mut decompressor)? {
            Step::Frame(frame) => {
                seq += frame.len() as u64;
                recovered.first_ms.get_or_insert(frame.header.first_ms);
                recovered.last_ms = Some(frame.header.last_ms);
            }
            Step::End => break,
            Step::Torn { offset, detail } => {
                recovered.torn = Some(torn(offset, detail, seq));
                break;
            }
        }
    }
    recovered.frames = cursor.frames;
    recovered.records = cursor.records;
    recovered.valid_len = cursor.offset;
    recovered.namespaces = cursor.namespaces;
    Ok(recovered)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::source::synthetic::sample_document;
    use crate::journal::writer::SegmentWriter;
    use crate::journal::JournalConfig;
    use crate::mongo::Namespace;

    /// A closed journal of `frames` frames of 10 documents each, in one segment.
    fn journal(dir: &Path, frames: i64) -> PathBuf {
        let config = JournalConfig::new(dir.to_str().unwrap());
        let mut w = SegmentWriter::open(&config).unwrap();
        for f in 0..frames {
            let docs: Vec<_> = (f * 10..f * 10 + 10)
                .map(|i| sample_document(i, 200))
                .collect();
            let batch =
                crate::journal::writer::EncodedBatch::encode(&Namespace::new("a", "x"), &docs)
                    .unwrap();
            w.write_frame(&[batch]).unwrap();
        }
        w.close().unwrap();
        dir.join("segment-000001.mfj")
    }

    /// Byte offsets where each frame of the segment begins, and the file length.
    fn frame_offsets(dir: &Path) -> (Vec<u64>, u64) {
        let mut reader = JournalReader::open(dir).unwrap();
        let mut offsets = vec![];
        while let Some(frame) = reader.next_frame().unwrap() {
            offsets.push(frame.offset);
        }
        let len = std::fs::metadata(dir.join("segment-000001.mfj"))
            .unwrap()
            .len();
        (offsets, len)
    }

    #[test]
    fn every_flipped_bit_is_reported_at_its_frame() {
        let tmp = tempfile::tempdir().unwrap();
        let seg = journal(tmp.path(), 3);
        let (offsets, len) = frame_offsets(tmp.path());
        let original = std::fs::read(&seg).unwrap();
        for at in 0..len as usize {
            let mut bytes = original.clone();
            bytes[at] ^= 1 << (at % 8);
            std::fs::write(&seg, &bytes).unwrap();
            let s = scan(tmp.path()).unwrap();
            assert_eq!(s.health, Health::Corrupt, "flip at byte {at}");
            let c = s.corruption.unwrap();
            let frame_start = offsets
                .iter()
                .rev()
                .find(|&&o| o <= at as u64)
                .copied()
                .unwrap_or(0);
            assert_eq!(c.offset, frame_start, "flip at byte {at}: {}", c.message);
            assert!(c.message.contains("segment-000001.mfj"), "{}", c.message);
            // Nothing from the damaged frame on was counted.
            let whole = offsets.iter().filter(|&&o| o < frame_start).count() as u64;
            assert_eq!(s.records, whole * 10, "flip at byte {at}");
        }
    }

    /// Marks the journal as a writer that died would leave it: its last segment still open.
    fn leave_open(dir: &Path) {
        let mut manifest = Manifest::load(dir).unwrap();
        manifest.segments.last_mut().unwrap().state = SegmentState::Open;
        manifest.state = JournalState::Open;
        manifest.store(dir).unwrap();
    }

    #[test]
    fn an_open_segment_cut_anywhere_reads_to_its_last_whole_frame() {
        let tmp = tempfile::tempdir().unwrap();
        let seg = journal(tmp.path(), 3);
        let (offsets, len) = frame_offsets(tmp.path());
        leave_open(tmp.path());
        let original = std::fs::read(&seg).unwrap();
        for cut in 0..len as usize {
            std::fs::write(&seg, &original[..cut]).unwrap();
            let s = scan(tmp.path()).unwrap();
            let whole = offsets
                .iter()
                .enumerate()
                .filter(|&(i, _)| offsets.get(i + 1).copied().unwrap_or(len) <= cut as u64)
                .count() as u64;
            assert_eq!(s.records, whole * 10, "cut at {cut}");
            // Cut exactly after a frame, an open segment simply ends there.
            if offsets.contains(&(cut as u64)) {
                assert_eq!(s.health, Health::Intact, "cut at {cut}");
                continue;
            }
            assert_eq!(s.health, Health::Torn, "cut at {cut}");
            let tail = s.torn_tail.unwrap();
            assert_eq!(tail.records_read, whole * 10);
            assert!(tail.to_string().contains("torn tail"), "{tail}");
        }
    }

    #[test]
    fn a_sealed_segment_cut_anywhere_or_missing_is_corrupt() {
        let tmp = tempfile::tempdir().unwrap();
        let seg = journal(tmp.path(), 3);
        let (offsets, len) = frame_offsets(tmp.path());
        let original = std::fs::read(&seg).unwrap();
        // Frame boundaries included: the manifest knows how long the sealed segment was.
        for cut in (0..len as usize).chain(offsets.iter().map(|&o| o as usize)) {
            std::fs::write(&seg, &original[..cut]).unwrap();
            let s = scan(tmp.path()).unwrap();
            assert_eq!(s.health, Health::Corrupt, "cut at {cut}");
            assert!(s.torn_tail.is_none(), "cut at {cut}");
            let c = s.corruption.unwrap();
            assert!(c.message.contains("segment-000001.mfj"), "{}", c.message);
        }
        std::fs::remove_file(&seg).unwrap();
        let s = scan(tmp.path()).unwrap();
        assert_eq!((s.health, s.records), (Health::Corrupt, 0));
        let message = s.corruption.unwrap().message;
        assert!(
            message.contains("missing") && message.contains("sealed"),
            "{message}"
        );
    }

    #[test]
    fn zeros_after_a_crash_are_a_torn_tail_and_unlisted_segments_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let seg = journal(tmp.path(), 2);
        let mut bytes = std::fs::read(&seg).unwrap();
        let mut manifest = Manifest::load(tmp.path()).unwrap();
        manifest.segments[0].state = SegmentState::Open;
        manifest.state = JournalState::Open;
        manifest.store(tmp.path()).unwrap();
        bytes.extend_from_slice(&[0; 4096]);
        std::fs::write(&seg, &bytes).unwrap();
        let s = scan(tmp.path()).unwrap();
        assert_eq!((s.health, s.records), (Health::Torn, 20));
        assert!(s.torn_tail.unwrap().detail.contains("zero bytes"));

        // The next segment may be one a writer is starting; one beyond it is a stranger.
        std::fs::write(tmp.path().join("segment-000002.mfj"), b"starting").unwrap();
        assert_eq!(scan(tmp.path()).unwrap().records, 20);
        std::fs::write(tmp.path().join("segment-000003.mfj"), b"stray").unwrap();
        let err = scan(tmp.path()).unwrap_err();
        assert!(err.to_string().contains("not listed"), "{err}");
    }

    #[test]
    fn a_cut_segment_before_the_last_is_corrupt() {
        let tmp = tempfile::tempdir().unwrap();
        let config = JournalConfig {
            segment_bytes: Some(4096),
            ..JournalConfig::new(tmp.path().to_str().unwrap())
        };
        let mut w = SegmentWriter::open(&config).unwrap();
        for f in 0..4 {
            let batch = crate::journal::test_batch("a.x", f * 10..f * 10 + 10, 600);
            w.write_frame(&[batch]).unwrap();
        }
        w.close().unwrap();
        let manifest = Manifest::load(tmp.path()).unwrap();
        assert!(manifest.segments.len() > 2, "{manifest:?}");
        let first = tmp.path().join("segment-000001.mfj");
        let len = std::fs::metadata(&first).unwrap().len();
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&first)
            .unwrap();
        f.set_len(len - 10).unwrap();
        let s = scan(tmp.path()).unwrap();
        assert_eq!(s.health, Health::Corrupt);
        let c = s.corruption.unwrap();
        assert!(c.reason.contains("later segments follow"), "{}", c.message);
        assert_eq!(s.records, 0);
    }
}
