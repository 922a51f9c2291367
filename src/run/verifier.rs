//! A sync's continuous verification: while the source's changes are applied, proves the
//! destination equal to the source document by document, and repairs what differs.
//!
//! In: the job's namespace pairs and both clients; from the follower, the `_id`s of every change
//! it applied ([`Verifier::applied`]) and how far it is level with the source
//! ([`Verifier::level_at`]); the job's pause and throttle. Out: the figures in the job's stats
//! ([`VerificationProgress`]), repairs sent to the follower (`_id`s to write again from the
//! source, through the engine like any change), the proof at commit ([`Verifier::prove`]), and a
//! [`VerificationCheckpoint`] in every checkpoint, so that a rerun goes on where this one stopped.
//!
//! - **The scan** compares each namespace pair once, in `_id` order, a page at a time, on one
//!   cursor per side opened after the last `_id` compared: the source's next [`PAGE`] documents,
//!   and the destination's up to the last of them. Documents are compared byte for byte.
//! - **The recheck list.** A change applied to an `_id` the scan already compared puts the `_id`
//!   on the list, to compare again; so does one applied, while the cursors are open, to an `_id`
//!   ahead of them, once the scan passes it (the cursors read a batch ahead). Past [`PAGE`]
//!   entries the list spills to pages in the state store, so memory stays bounded whatever its
//!   length.
//! - **Suspects.** A difference may be a change still in flight. It is compared again once the
//!   follower is level with the source as of when it was seen; one that still differs, and again
//!   once the follower is level past that second look, with no change applied to it meanwhile, is
//!   a **mismatch**: repaired (the follower writes the source's current document, or deletes it)
//!   and compared again, or only reported (`verify: "report"`).
//! - **Proven through.** When the scan is done and nothing waits to be compared, everything is
//!   proven equal up to the source time the follower was level at.
//! - **The commit** ([`Verifier::prove`]): every change up to its end applied and the
//!   application stopped, it compares only what waits, the recheck list and the suspects.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use mongodb::bson::{doc, Bson, Document, RawBson, RawDocumentBuf};
use mongodb::Client;
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::compare::{read, same, Find, PairedScan};
use crate::engine::changes::ChangeWriter;
use crate::engine::ledger::VerificationState;
use crate::engine::source::change_stream::{Change, ChangeEvent, ChangeFeed, Position};
use crate::engine::stats::{
    JobStats, Mismatch, MismatchKind, VerificationPhase, VerificationProgress,
};
use crate::engine::transform::Steps;
use crate::engine::{Control, CopyError};
use crate::mongo::bson_order::{self, IdKey};
use crate::mongo::{Namespace, Side};
use crate::state::{
    id_from_json, id_to_json, unix_now, Checkpoint, JobKey, RecheckEntry, ScanCheckpoint,
    StateError, StateStore, VerificationCheckpoint,
};

/// Documents per page of the scan, entries per spilled page of the recheck list.
pub const PAGE: usize = 1000;

/// Bytes of source documents per page of the scan, at most (large documents make short pages).
const PAGE_BYTES: usize = 16 * 1024 * 1024;

/// `_id`s per lookup by `_id` (`$in`): a long list costs some servers more per `_id` than
/// several short ones (SecantusDB: 7,200 documents/s at 20 `_id`s a query, 700 at 1,000).
const LOOKUP: usize = 25;

/// How long the verifier rests when there is nothing to compare.
const IDLE: Duration = Duration::from_millis(200);
/// The longest wait after failed rounds.
const FAILED_WAIT_MAX: Duration = Duration::from_secs(15);

/// How far behind the source the follower may be for the destination's changes to be read as
/// they come (seconds).
const BEHIND_SECS: f64 = 3.0;

/// How many of the latest mismatches the views show.
const RECENT: usize = 10;

/// A page of the recheck list on its way to the store.
struct Spill {
    number: u64,
    /// When its newest entry was noted.
    noted: f64,
    entries: Vec<RecheckEntry>,
}

/// `_id`s of one namespace pair that the follower writes again from the source.
#[derive(Debug)]
pub struct Repair {
    pub source: Namespace,
    pub destination: Namespace,
    pub ids: Vec<RawBson>,
}

/// What the commit proved.
#[derive(Debug, Clone, PartialEq)]
pub struct Proof {
    /// The source time equality is proven at; `None`: not proven (why in `unproven`).
    pub verified_through: Option<f64>,
    /// `_id`s compared: those changed since the last proof.
    pub rechecked: u64,
    /// Why equality is not proven.
    pub unproven: Option<String>,
}

/// The parts a verifier works with.
pub struct Sides {
    pub source: Client,
    pub destination: Client,
    /// The job's filter, on both sides.
    pub filter: Option<Document>,
    /// Source namespaces read without the `_id` index hint (time-series collections have none;
    /// their destination is one too).
    pub unhinted: BTreeSet<Namespace>,
    pub control: Arc<Control>,
    pub stats: Arc<JobStats>,
    pub store: Arc<dyn StateStore>,
    pub job: JobKey,
    /// The job's transform of each destination namespace: the source compared through it.
    pub transforms: HashMap<Namespace, Arc<Steps>>,
}

pub struct Verifier {
    sides: Sides,
    /// Mismatches are repaired (else only reported).
    repairs: bool,
    state: Mutex<State>,
    /// The source's clock less this machine's (seconds, rounded up): every time the verifier
    /// keeps is the source's, as the follower's level is.
    clock_offset: Mutex<f64>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Verifier")
    }
}

#[derive(Debug, Clone)]
struct Pair {
    source: Namespace,
    destination: Namespace,
}

impl Pair {
    fn key(&self) -> String {
        format!("{} -> {}", self.source, self.destination)
    }
}

#[derive(Debug, Default)]
struct Scan {
    /// Compared up to and including this `_id`.
    after: Option<RawBson>,
    complete: bool,
    /// A page is being compared: changes applied meanwhile are kept in `during`.
    in_flight: bool,
    during: Vec<RawBson>,
}

#[derive(Debug, Clone)]
struct Entry {
    pair: usize,
    id: RawBson,
}

#[derive(Debug, Clone)]
struct Suspect {
    id: RawBson,
    kind: MismatchKind,
    /// When it was last seen different (source time, Unix seconds).
    seen: f64,
    /// Seen different this many times in a row with no change applied to it meanwhile.
    strikes: u8,
    /// Counted as a mismatch (and, reporting only, left unrepaired).
    mismatch: bool,
}

#[derive(Debug, Default)]
struct State {
    pairs: Vec<Pair>,
    scans: Vec<Scan>,
    /// The recheck list in memory, without duplicates, oldest first; and when each entry was
    /// noted (source time, Unix seconds): it is compared once the follower is level past that.
    tail: Vec<Entry>,
    tail_noted: Vec<f64>,
    tail_keys: HashSet<(usize, IdKey)>,
    /// Taken from the list and not done with yet: still saved with every checkpoint.
    spilling: Vec<Entry>,
    checking: Vec<Entry>,
    repairing: Vec<Entry>,
    pages: VecDeque<u64>,
    /// When the newest entry of each spilled page was noted (unknown after a restart: due).
    page_noted: HashMap<u64, f64>,
    next_page: u64,
    paged: u64,
    suspects: HashMap<(usize, IdKey), Suspect>,
    verified: u64,
    compared_this_run: u64,
    mismatches: u64,
    repaired: u64,
    through: Option<f64>,
    recent: VecDeque<Mismatch>,
    /// Every change the source made before this (source time, Unix seconds) is applied.
    level: f64,
    /// Where the watch of the destination's changes stands.
    destination_position: Option<serde_json::Value>,
    proof: Option<Proof>,
}

impl State {
    fn pair(&mut self, source: &Namespace, destination: &Namespace) -> usize {
        if let Some(i) = self
            .pairs
            .iter()
            .position(|p| &p.source == source && &p.destination == destination)
        {
            return i;
        }
        // A namespace that came into the job since (a rename, a new collection): scanned too.
        self.pairs.push(Pair {
            source: source.clone(),
            destination: destination.clone(),
        });
        self.scans.push(Scan::default());
        self.pairs.len() - 1
    }

    fn recheck(&mut self, pair: usize, id: RawBson, noted: f64) {
        if self.tail_keys.insert((pair, IdKey::of(&id))) {
            self.tail.push(Entry { pair, id });
            self.tail_noted.push(noted);
        }
    }

    /// Takes the first `n` entries of the tail.
    fn take_tail(&mut self, n: usize) -> Vec<Entry> {
        self.tail_noted.drain(..n);
        let taken: Vec<Entry> = self.tail.drain(..n).collect();
        for entry in &taken {
            self.tail_keys.remove(&(entry.pair, IdKey::of(&entry.id)));
        }
        taken
    }

    /// A change reached `id` of `pair` (at the source, applied; or at the destination): to be
    /// compared again if the scan compared it already (or compares it now).
    fn changed(&mut self, pair: usize, id: RawBson, now: f64) {
        if let Some(suspect) = self.suspects.get_mut(&(pair, IdKey::of(&id))) {
            // Its difference may have been this change in flight.
            suspect.strikes = 0;
            suspect.seen = now;
            return;
        }
        let scan = &mut self.scans[pair];
        let compared = scan.complete
            || scan.after.as_ref().is_some_and(|after| {
                bson_order::compare(id.as_raw_bson_ref(), after.as_raw_bson_ref()).is_le()
            });
        if compared {
            self.recheck(pair, id, now);
        } else if scan.in_flight {
            scan.during.push(id);
        }
    }

    fn pending(&self) -> u64 {
        (self.tail.len()
            + self.spilling.len()
            + self.checking.len()
            + self.repairing.len()
            + self.suspects.len()) as u64
            + self.paged
    }

    fn scanned(&self) -> bool {
        self.scans.iter().all(|s| s.complete)
    }

    fn unrepaired(&self) -> u64 {
        self.suspects.values().filter(|s| s.mismatch).count() as u64
    }

    fn remember(&mut self, mismatch: Mismatch) {
        if self.recent.len() == RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back(mismatch);
    }
}

impl VerificationState for Verifier {
    fn checkpoint(&self) -> VerificationCheckpoint {
        let state = self.state.lock();
        let entry = |pair: usize, id: &RawBson| RecheckEntry {
            ns: state.pairs[pair].key(),
            id: id_to_json(id).unwrap_or(serde_json::Value::Null),
        };
        let listed = [
            &state.tail,
            &state.spilling,
            &state.checking,
            &state.repairing,
        ];
        let recheck = listed
            .into_iter()
            .flatten()
            .map(|e| entry(e.pair, &e.id))
            .chain(
                state
                    .suspects
                    .iter()
                    .map(|((pair, _), s)| entry(*pair, &s.id)),
            )
            .collect();
        VerificationCheckpoint {
            namespaces: state
                .pairs
                .iter()
                .zip(&state.scans)
                .map(|(pair, scan)| {
                    let kept = ScanCheckpoint {
                        after: scan.after.as_ref().and_then(id_to_json),
                        complete: scan.complete,
                    };
                    (pair.key(), kept)
                })
                .collect(),
            recheck,
            pages: state.pages.iter().copied().collect(),
            next_page: state.next_page,
            paged: state.paged,
            verified_docs: state.verified,
            mismatches: state.mismatches,
            repaired: state.repaired,
            through: state.through,
            destination_position: state.destination_position.clone(),
        }
    }
}

impl Verifier {
    /// A verifier of `pairs`, going on from `saved` (an earlier run's) if any.
    pub fn new(
        sides: Sides,
        repairs: bool,
        pairs: impl IntoIterator<Item = (Namespace, Namespace)>,
        saved: Option<VerificationCheckpoint>,
    ) -> Result<Verifier, CopyError> {
        let mut state = State::default();
        for (source, destination) in pairs {
            state.pair(&source, &destination);
        }
        let store = sides.store.location();
        let corrupt = |reason: String| {
            CopyError::from(StateError::Corrupt {
                path: store.clone().into(),
                reason: format!("the sync's verification: {reason}"),
            })
        };
        let saved = saved.unwrap_or_default();
        let pair_of = |state: &mut State, key: &str| -> Result<usize, CopyError> {
            let (source, destination) =
                parse_pair(key).ok_or_else(|| corrupt(format!("no namespace pair in {key:?}")))?;
            Ok(state.pair(&source, &destination))
        };
        for (key, kept) in &saved.namespaces {
            let pair = pair_of(&mut state, key)?;
            let scan = &mut state.scans[pair];
            scan.after = kept
                .after
                .as_ref()
                .map(id_from_json)
                .transpose()
                .map_err(&corrupt)?;
            scan.complete = kept.complete;
        }
        for entry in &saved.recheck {
            let pair = pair_of(&mut state, &entry.ns)?;
            state.recheck(pair, id_from_json(&entry.id).map_err(&corrupt)?, 0.0);
        }
        state.pages = saved.pages.iter().copied().collect();
        state.next_page = saved.next_page;
        state.paged = saved.paged;
        state.verified = saved.verified_docs;
        state.mismatches = saved.mismatches;
        state.repaired = saved.repaired;
        state.through = saved.through;
        state.destination_position = saved.destination_position;
        Ok(Verifier {
            sides,
            repairs,
            state: Mutex::new(state),
            clock_offset: Mutex::new(0.0),
        })
    }

    /// The source's time now, by this machine's clock and the offset measured at the start.
    fn source_now(&self) -> f64 {
        unix_now() + *self.clock_offset.lock()
    }

    /// Measures how far the source's clock is from this machine's (its cluster time has whole
    /// seconds: rounded up, so that what is noted is never taken for older than it is).
    async fn measure_clock(&self) {
        match crate::engine::source::change_stream::source_time(&self.sides.source).await {
            Ok(time) => *self.clock_offset.lock() = f64::from(time.time) + 1.0 - unix_now(),
            Err(e) => tracing::warn!("verification: cannot read the source's time: {e}"),
        }
    }

    /// The follower applied these changes (source, destination, `_id`): those already compared
    /// go on the recheck list; a long list spills a page to the store.
    pub async fn applied(
        &self,
        changes: impl IntoIterator<Item = (Namespace, Namespace, RawBson)>,
    ) -> Result<(), CopyError> {
        let now = self.source_now();
        let spill = {
            let mut state = self.state.lock();
            for (source, destination, id) in changes {
                let pair = state.pair(&source, &destination);
                state.changed(pair, id, now);
            }
            self.page_to_spill(&mut state)
        };
        self.spill(spill).await
    }

    /// The tail's first [`PAGE`] entries, taken to be spilled, once the tail is that long (and
    /// no other page is being spilled).
    fn page_to_spill(&self, state: &mut State) -> Option<Spill> {
        if state.tail.len() < PAGE || !state.spilling.is_empty() {
            return None;
        }
        let noted = state.tail_noted[PAGE - 1];
        let page = state.take_tail(PAGE);
        state.spilling = page.clone();
        state.next_page += 1;
        let entries = page.iter().map(|e| self.entry(state, e)).collect();
        Some(Spill {
            number: state.next_page - 1,
            noted,
            entries,
        })
    }

    fn entry(&self, state: &State, entry: &Entry) -> RecheckEntry {
        RecheckEntry {
            ns: state.pairs[entry.pair].key(),
            id: id_to_json(&entry.id).unwrap_or(serde_json::Value::Null),
        }
    }

    /// Saves a page of the recheck list in the store, then lists it (its entries stay in the
    /// checkpoint until it is listed).
    async fn spill(&self, spill: Option<Spill>) -> Result<(), CopyError> {
        let Some(Spill {
            number,
            noted,
            entries,
        }) = spill
        else {
            return Ok(());
        };
        let count = entries.len() as u64;
        let page = Checkpoint {
            description: format!("page {number} of the recheck list of {}", self.sides.job),
            updated_at: unix_now(),
            recheck: entries,
            ..Checkpoint::default()
        };
        let key = Checkpoint::recheck_page_key(&self.sides.job, number);
        self.sides.store.save(&key, &page).await?;
        let mut state = self.state.lock();
        state.pages.push_back(number);
        state.page_noted.insert(number, noted);
        state.paged += count;
        state.spilling.clear();
        Ok(())
    }

    /// Every change the source made before `secs` (source time, Unix seconds) is applied.
    pub fn level_at(&self, secs: f64) {
        let mut state = self.state.lock();
        state.level = state.level.max(secs);
    }

    /// Every change the source made before `local` (this machine's clock) is applied: a read
    /// of the source's changes that began then found nothing more.
    pub fn level_at_local(&self, local: f64) {
        self.level_at(local + *self.clock_offset.lock());
    }

    /// The follower wrote `repair` from the source: counted, and compared again.
    pub fn repaired(&self, repair: &Repair) {
        let mut state = self.state.lock();
        let pair = state.pair(&repair.source, &repair.destination);
        let ids: HashSet<IdKey> = repair.ids.iter().map(IdKey::of).collect();
        let now = self.source_now();
        state
            .repairing
            .retain(|e| e.pair != pair || !ids.contains(&IdKey::of(&e.id)));
        state.repaired += repair.ids.len() as u64;
        let ns = state.pairs[pair].key();
        for mismatch in state.recent.iter_mut().filter(|m| m.ns == ns) {
            let written = id_from_json(&mismatch.id).is_ok_and(|id| ids.contains(&IdKey::of(&id)));
            mismatch.repaired |= written;
        }
        for id in &repair.ids {
            state.recheck(pair, id.clone(), now);
        }
    }

    /// Compares until `stop`: the scan, the recheck list, the suspects. A failed read is
    /// retried after a pause: verifying never stops the sync.
    pub async fn run(
        self: Arc<Self>,
        repairs: mpsc::Sender<Repair>,
        stop: CancellationToken,
    ) -> Result<(), CopyError> {
        self.measure_clock().await;
        let watching = tokio::spawn(self.clone().watch_destination(stop.clone()));
        let outcome = self.compare_until(&repairs, &stop).await;
        stop.cancel();
        let _ = watching.await;
        outcome
    }

    /// Watches the destination's own changes until `stop`: an `_id` written there (by the
    /// follower, or by anyone else) is compared again. A watch that fails is opened again at the
    /// destination's present after a pause.
    async fn watch_destination(self: Arc<Self>, stop: CancellationToken) {
        while !stop.is_cancelled() {
            if let Err(e) = self.watch_once(&stop).await {
                tracing::warn!("verification: watching the destination: {e}; watching again");
                self.state.lock().destination_position = None;
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = stop.cancelled() => {}
                }
            }
        }
    }

    async fn watch_once(&self, stop: &CancellationToken) -> Result<(), CopyError> {
        let (databases, from) = {
            let state = self.state.lock();
            let mut dbs: Vec<String> = state
                .pairs
                .iter()
                .map(|p| p.destination.db.clone())
                .collect();
            dbs.sort();
            dbs.dedup();
            (dbs, state.destination_position.clone())
        };
        let from = from.and_then(|p| Position::from_json(&p).ok());
        let mut feed =
            ChangeFeed::open_keys(&self.sides.destination, Some(databases), from.as_ref()).await?;
        loop {
            // Behind the source, the sync's own writes fill the destination's history: read it
            // once level (its position is kept meanwhile), not in the way of the catching up.
            if self.behind() {
                tokio::select! {
                    _ = tokio::time::sleep(IDLE) => continue,
                    _ = stop.cancelled() => return Ok(()),
                }
            }
            let next = tokio::select! {
                next = feed.next() => next?,
                _ = stop.cancelled() => return Ok(()),
            };
            let spill = {
                let mut state = self.state.lock();
                if let Some(ChangeEvent {
                    change: Change::Doc { ns, id, .. },
                    ..
                }) = next
                {
                    let now = self.source_now();
                    let pairs: Vec<usize> = (0..state.pairs.len())
                        .filter(|i| state.pairs[*i].destination == ns)
                        .collect();
                    for pair in pairs {
                        state.changed(pair, id.clone(), now);
                    }
                }
                state.destination_position = feed.position().map(|p| p.to_json());
                self.page_to_spill(&mut state)
            };
            self.spill(spill).await?;
        }
    }

    /// The follower is more than [`BEHIND_SECS`] behind the source.
    fn behind(&self) -> bool {
        self.source_now() - self.state.lock().level > BEHIND_SECS
    }

    async fn compare_until(
        &self,
        repairs: &mpsc::Sender<Repair>,
        stop: &CancellationToken,
    ) -> Result<(), CopyError> {
        // The scan's cursors, kept open from page to page.
        let mut open = None;
        // After a failed round, the wait doubles up to a limit: an error that persists (a
        // server down, one that orders `_id`s otherwise) is logged a few times a minute.
        let mut wait = IDLE;
        while !stop.is_cancelled() {
            self.sides.control.wait_while_paused(stop).await;
            if stop.is_cancelled() {
                break;
            }
            let level = self.state.lock().level;
            let (busy, pause) = match self.round(level, repairs, &mut open).await {
                Ok(busy) => {
                    wait = IDLE;
                    (busy, IDLE)
                }
                Err(e) => {
                    tracing::warn!(
                        "verification: {e}; trying again in {} s",
                        wait.as_secs_f64()
                    );
                    let pause = wait;
                    wait = (wait * 2).min(FAILED_WAIT_MAX);
                    (false, pause)
                }
            };
            self.publish();
            if !busy {
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = stop.cancelled() => {}
                }
            }
        }
        Ok(())
    }

    /// One round: the suspects that are due, the recheck list, a page of the scan; `true` if
    /// there was anything to compare.
    async fn round(
        &self,
        level: f64,
        repairs: &mpsc::Sender<Repair>,
        open: &mut Option<OpenScan>,
    ) -> Result<bool, CopyError> {
        let mut busy = self.recheck_due(level, repairs).await?;
        busy |= self.scan_page(open).await?;
        let mut state = self.state.lock();
        if !busy && state.scanned() && state.pending() == 0 {
            state.through = Some(state.through.unwrap_or(0.0).max(level));
        }
        Ok(busy)
    }

    /// Compares again the recheck list (a page of it) and the suspects the follower is level
    /// past; confirmed mismatches are sent for repair.
    async fn recheck_due(
        &self,
        level: f64,
        repairs: &mpsc::Sender<Repair>,
    ) -> Result<bool, CopyError> {
        let mut page = None;
        let (taken, due) = {
            let mut state = self.state.lock();
            let due: Vec<Entry> = state
                .suspects
                .iter()
                .filter(|(_, s)| s.seen < level)
                .map(|((pair, _), s)| Entry {
                    pair: *pair,
                    id: s.id.clone(),
                })
                .collect();
            // The oldest first, once the follower is level past when they were noted: compared
            // earlier, a change still in flight would only make them suspects.
            if state.checking.is_empty() {
                let first_page = state.pages.front().copied();
                match first_page {
                    Some(number) if state.page_noted.get(&number).is_none_or(|n| *n < level) => {
                        page = Some(number);
                    }
                    Some(_) => {}
                    None => {
                        let due = state.tail_noted.iter().take_while(|n| **n < level).count();
                        state.checking = state.take_tail(due);
                    }
                }
            }
            (state.checking.clone(), due)
        };
        let mut taken = taken;
        if let Some(number) = page {
            taken = self.load_page(number).await?;
            self.state.lock().checking = taken.clone();
        }
        if taken.is_empty() && due.is_empty() {
            return Ok(false);
        }
        let found = self.compare(taken.iter().chain(&due)).await?;
        let confirmed = {
            let mut state = self.state.lock();
            state.checking.clear();
            let now = self.source_now();
            let mut confirmed: HashMap<usize, Vec<RawBson>> = HashMap::new();
            for (entry, kind) in found {
                let key = (entry.pair, IdKey::of(&entry.id));
                match (kind, state.suspects.get_mut(&key)) {
                    (None, Some(_)) => {
                        state.suspects.remove(&key);
                    }
                    (None, None) => {}
                    (Some(kind), None) => {
                        let suspect = Suspect {
                            id: entry.id.clone(),
                            kind,
                            seen: now,
                            strikes: 0,
                            mismatch: false,
                        };
                        state.suspects.insert(key, suspect);
                    }
                    (Some(kind), Some(suspect)) => {
                        if suspect.seen >= level {
                            // Seen since this round began (a change reset it): not due yet.
                            continue;
                        }
                        suspect.kind = kind;
                        suspect.seen = now;
                        suspect.strikes = suspect.strikes.saturating_add(1);
                        if suspect.strikes >= 2 && !suspect.mismatch {
                            confirmed.entry(entry.pair).or_default().push(entry.id);
                        }
                    }
                }
            }
            self.confirm(&mut state, confirmed)
        };
        if let Some(number) = page {
            self.drop_page(number).await?;
        }
        for repair in confirmed {
            if repairs.send(repair).await.is_err() {
                break;
            }
        }
        Ok(true)
    }

    /// Counts confirmed mismatches; the repairs to ask for (none when only reporting).
    fn confirm(&self, state: &mut State, confirmed: HashMap<usize, Vec<RawBson>>) -> Vec<Repair> {
        let mut asked = Vec::new();
        for (pair, ids) in confirmed {
            for id in &ids {
                let key = (pair, IdKey::of(id));
                let Some(suspect) = state.suspects.get_mut(&key) else {
                    continue;
                };
                suspect.mismatch = true;
                let kind = suspect.kind;
                state.mismatches += 1;
                let ns = state.pairs[pair].key();
                let id_json = id_to_json(id).unwrap_or(serde_json::Value::Null);
                tracing::warn!("verification: {ns}: _id {id_json} is {kind:?} at the destination");
                state.remember(Mismatch {
                    ns,
                    id: id_json,
                    kind,
                    repaired: false,
                });
                if self.repairs {
                    state.suspects.remove(&key);
                    state.repairing.push(Entry {
                        pair,
                        id: id.clone(),
                    });
                }
            }
            if self.repairs {
                let Pair {
                    source,
                    destination,
                } = state.pairs[pair].clone();
                asked.push(Repair {
                    source,
                    destination,
                    ids,
                });
            }
        }
        asked
    }

    async fn load_page(&self, number: u64) -> Result<Vec<Entry>, CopyError> {
        let key = Checkpoint::recheck_page_key(&self.sides.job, number);
        let page = self.sides.store.load(&key).await?.unwrap_or_default();
        let mut state = self.state.lock();
        let mut entries = Vec::with_capacity(page.recheck.len());
        for kept in page.recheck {
            let (Some((source, destination)), Ok(id)) =
                (parse_pair(&kept.ns), id_from_json(&kept.id))
            else {
                continue;
            };
            let pair = state.pair(&source, &destination);
            entries.push(Entry { pair, id });
        }
        Ok(entries)
    }

    /// A page compared: unlisted, then removed from the store.
    async fn drop_page(&self, number: u64) -> Result<(), CopyError> {
        {
            let mut state = self.state.lock();
            state.pages.retain(|n| *n != number);
            state.page_noted.remove(&number);
            state.paged = state.paged.saturating_sub(PAGE as u64);
            if state.pages.is_empty() {
                state.paged = 0;
            }
        }
        let key = Checkpoint::recheck_page_key(&self.sides.job, number);
        Ok(self.sides.store.remove(&key).await?)
    }

    /// Compares the next page of the first namespace pair not yet scanned, on the scan's open
    /// cursors (opened here, after the last `_id` compared); `false` when every pair is scanned.
    async fn scan_page(&self, open: &mut Option<OpenScan>) -> Result<bool, CopyError> {
        let (pair, after) = {
            let state = self.state.lock();
            let Some(i) = state.scans.iter().position(|s| !s.complete) else {
                return Ok(false);
            };
            (i, state.scans[i].after.clone())
        };
        if open.as_ref().is_none_or(|o| o.pair != pair) {
            *open = Some(self.open_scan(pair, after.as_ref()).await?);
        }
        let scan = open.as_mut().expect("opened");
        let page = scan.next_page(self).await;
        let mut state = self.state.lock();
        let (upper, found, compared) = match page {
            Ok(page) => page,
            Err(e) => {
                // Opened again next time, after the last `_id` compared: what it reads then is
                // as it is then, so what changed meanwhile needs no note.
                state.scans[pair].in_flight = false;
                *open = None;
                return Err(e);
            }
        };
        let now = self.source_now();
        let scan = &mut state.scans[pair];
        scan.complete = upper.is_none();
        if let Some(upper) = &upper {
            scan.after = Some(upper.clone());
        }
        // Changes applied while the cursors were open, to `_id`s the scan has now passed: the
        // cursors may have read them before the change (they read ahead).
        let during = std::mem::take(&mut scan.during);
        let (passed, ahead): (Vec<RawBson>, Vec<RawBson>) = during.into_iter().partition(|id| {
            upper.as_ref().is_none_or(|upper| {
                bson_order::compare(id.as_raw_bson_ref(), upper.as_raw_bson_ref()).is_le()
            })
        });
        scan.during = ahead;
        if scan.complete {
            scan.in_flight = false;
            *open = None;
        }
        for id in passed {
            state.recheck(pair, id, now);
        }
        state.verified += compared;
        state.compared_this_run += compared;
        for (id, kind) in found {
            let key = (pair, IdKey::of(&id));
            state.suspects.entry(key).or_insert(Suspect {
                id,
                kind,
                seen: now,
                strikes: 0,
                mismatch: false,
            });
        }
        Ok(true)
    }

    /// Opens the scan of `pair` on both sides after `after`, in `_id` order. From here on, every
    /// change applied to an `_id` past `after` is noted (`Scan::during`): the cursors read ahead.
    async fn open_scan(&self, pair: usize, after: Option<&RawBson>) -> Result<OpenScan, CopyError> {
        let Pair {
            source,
            destination,
        } = self.state.lock().pairs[pair].clone();
        {
            let mut state = self.state.lock();
            let scan = &mut state.scans[pair];
            scan.in_flight = true;
            scan.during.clear();
        }
        let range: Vec<Document> = after.map(bson_order::after).into_iter().collect();
        let find = self.find(&source, &range);
        let clients = (&self.sides.source, &self.sides.destination);
        let pages = (PAGE, PAGE_BYTES, "verify");
        Ok(OpenScan {
            pair,
            scan: PairedScan::open(clients, (&source, &destination), find, pages)
                .await?
                .comparing_through(self.sides.transforms.get(&destination).cloned()),
        })
    }

    /// Waits as the job's throttle says for what was read of both sides; the documents
    /// compared.
    async fn charge(
        &self,
        ours: &[(RawBson, RawDocumentBuf)],
        theirs: &[(RawBson, RawDocumentBuf)],
    ) -> u64 {
        let bytes: usize = ours
            .iter()
            .chain(theirs)
            .map(|(_, d)| d.as_bytes().len())
            .sum();
        let compared = ours.len().max(theirs.len()) as u64;
        self.sides
            .control
            .throttle()
            .acquire(compared, bytes as u64)
            .await;
        compared
    }

    /// A read of the pair whose source is `source`: the job's filter and `range`, by the `_id`
    /// index unless the collection has none.
    fn find(&self, source: &Namespace, range: &[Document]) -> Find {
        let mut all: Vec<Document> = self.sides.filter.iter().cloned().collect();
        all.extend(range.iter().cloned());
        Find::all_of(all, !self.sides.unhinted.contains(source))
    }

    /// Compares `entries` by `_id` on both sides: each with how it differs (`None`: equal,
    /// or on neither side).
    async fn compare<'a>(
        &self,
        entries: impl IntoIterator<Item = &'a Entry>,
    ) -> Result<Vec<(Entry, Option<MismatchKind>)>, CopyError> {
        let mut by_pair: HashMap<usize, Vec<RawBson>> = HashMap::new();
        let mut seen = HashSet::new();
        for e in entries {
            if seen.insert((e.pair, IdKey::of(&e.id))) {
                by_pair.entry(e.pair).or_default().push(e.id.clone());
            }
        }
        let mut found = Vec::new();
        for (pair, ids) in by_pair {
            let Pair {
                source,
                destination,
            } = self.state.lock().pairs[pair].clone();
            for part in ids.chunks(LOOKUP) {
                let ids: Vec<Bson> = part
                    .iter()
                    .filter_map(|id| Bson::try_from(id.clone()).ok())
                    .collect();
                let within = [doc! { "_id": { "$in": ids } }];
                // By `_id` exactly: the server looks each one up (a hint would walk the index).
                let find = Find {
                    hint: false,
                    ..self.find(&source, &within)
                };
                let (src, dst) = (&self.sides.source, &self.sides.destination);
                let ours = read(src, (Side::Source, &source), find.clone(), "verify").await?;
                let theirs = read(dst, (Side::Destination, &destination), find, "verify").await?;
                self.charge(&ours, &theirs).await;
                let ours: HashMap<IdKey, RawDocumentBuf> = ours
                    .into_iter()
                    .map(|(id, d)| (IdKey::of(&id), d))
                    .collect();
                let theirs: HashMap<IdKey, RawDocumentBuf> = theirs
                    .into_iter()
                    .map(|(id, d)| (IdKey::of(&id), d))
                    .collect();
                for id in part {
                    let key = IdKey::of(id);
                    let steps = self.sides.transforms.get(&destination).map(Arc::as_ref);
                    let kind = differs(ours.get(&key), theirs.get(&key), steps);
                    found.push((
                        Entry {
                            pair,
                            id: id.clone(),
                        },
                        kind,
                    ));
                }
            }
        }
        Ok(found)
    }

    /// Every change up to the commit's end (`end`, source time) is applied and the
    /// background comparison stopped: compares what waits, repairs what differs (through
    /// `writer`) and compares it again.
    pub async fn prove(&self, writer: &mut ChangeWriter, end: f64) -> Result<Proof, CopyError> {
        let (unscanned, mut entries, counted, pages) = {
            let mut guard = self.state.lock();
            let state = &mut *guard;
            let unscanned = state.scans.iter().filter(|s| !s.complete).count();
            let mut entries: Vec<Entry> = Vec::new();
            for list in [
                &mut state.tail,
                &mut state.spilling,
                &mut state.checking,
                &mut state.repairing,
            ] {
                entries.append(list);
            }
            state.tail_keys.clear();
            state.tail_noted.clear();
            // Mismatches already counted (left unrepaired): not counted again.
            let mut counted = HashSet::new();
            for ((pair, key), suspect) in state.suspects.drain() {
                if suspect.mismatch {
                    counted.insert((pair, key));
                }
                entries.push(Entry {
                    pair,
                    id: suspect.id,
                });
            }
            let pages: Vec<u64> = state.pages.iter().copied().collect();
            (unscanned, entries, counted, pages)
        };
        for number in &pages {
            entries.extend(self.load_page(*number).await?);
        }
        let found = self.compare(&entries).await?;
        let rechecked = found.len() as u64;
        let differing: Vec<(Entry, MismatchKind)> = found
            .into_iter()
            .filter_map(|(e, kind)| kind.map(|k| (e, k)))
            .collect();
        let mut still: Vec<(Entry, MismatchKind)> = differing.clone();
        if self.repairs && !differing.is_empty() {
            let mut by_pair: HashMap<usize, Vec<RawBson>> = HashMap::new();
            for (e, _) in &differing {
                by_pair.entry(e.pair).or_default().push(e.id.clone());
            }
            for (pair, ids) in by_pair {
                let p = self.state.lock().pairs[pair].clone();
                writer.rewrite(&p.source, &p.destination, ids).await?;
            }
            let again = self.compare(differing.iter().map(|(e, _)| e)).await?;
            still = again
                .into_iter()
                .filter_map(|(e, kind)| kind.map(|k| (e, k)))
                .collect();
        }
        let proof = self.conclude(&differing, still, &counted, unscanned, rechecked, end);
        for number in pages {
            self.drop_page(number).await?;
        }
        self.publish();
        Ok(proof)
    }

    /// Counts what the commit found (`differing`; `still` different after the repairs, kept as
    /// unrepaired mismatches) and says whether equality is proven.
    fn conclude(
        &self,
        differing: &[(Entry, MismatchKind)],
        still: Vec<(Entry, MismatchKind)>,
        counted: &HashSet<(usize, IdKey)>,
        unscanned: usize,
        rechecked: u64,
        end: f64,
    ) -> Proof {
        let mut state = self.state.lock();
        let now = self.source_now();
        for (e, kind) in differing {
            if counted.contains(&(e.pair, IdKey::of(&e.id))) {
                continue;
            }
            state.mismatches += 1;
            let ns = state.pairs[e.pair].key();
            let id = id_to_json(&e.id).unwrap_or(serde_json::Value::Null);
            state.remember(Mismatch {
                ns,
                id,
                kind: *kind,
                repaired: self.repairs,
            });
        }
        let repaired = if self.repairs {
            differing.len() - still.len()
        } else {
            0
        };
        state.repaired += repaired as u64;
        let left = still.len();
        for (e, kind) in still {
            let suspect = Suspect {
                id: e.id.clone(),
                kind,
                seen: now,
                strikes: 2,
                mismatch: true,
            };
            state.suspects.insert((e.pair, IdKey::of(&e.id)), suspect);
        }
        let unproven = if unscanned > 0 {
            Some(format!(
                "the initial verification was not finished: {unscanned} namespaces not compared"
            ))
        } else if !differing.is_empty() {
            Some(format!(
                "{} documents differed at the commit ({repaired} repaired, {left} still \
                 different)",
                differing.len()
            ))
        } else {
            None
        };
        let proof = Proof {
            verified_through: unproven.is_none().then_some(end),
            rechecked,
            unproven,
        };
        if proof.verified_through.is_some() {
            state.through = Some(end);
        }
        state.proof = Some(proof.clone());
        proof
    }

    /// The figures, for the job's views.
    pub fn publish(&self) {
        let state = self.state.lock();
        let phase = match (&state.proof, state.scanned()) {
            (Some(_), _) => VerificationPhase::Committed,
            (None, true) => VerificationPhase::Continuous,
            (None, false) => VerificationPhase::Initial,
        };
        let progress = VerificationProgress {
            phase,
            repairs: self.repairs,
            verified_docs: state.verified,
            compared_this_run: state.compared_this_run,
            namespaces_verified: state.scans.iter().filter(|s| s.complete).count(),
            namespaces: state.scans.len(),
            mismatches: state.mismatches,
            repaired: state.repaired,
            unrepaired: state.unrepaired(),
            recheck_pending: state.pending(),
            through: state.through,
            recent: state.recent.iter().cloned().collect(),
            verified_through: state.proof.as_ref().and_then(|p| p.verified_through),
            rechecked_at_commit: state.proof.as_ref().map(|p| p.rechecked),
            unproven: state.proof.as_ref().and_then(|p| p.unproven.clone()),
        };
        self.sides.stats.sync.set_verification(progress);
    }
}

/// The namespaces of a pair's key, `"src.coll -> dst.coll"`.
fn parse_pair(key: &str) -> Option<(Namespace, Namespace)> {
    let (source, destination) = key.split_once(" -> ")?;
    Some((
        Namespace::from(source.to_string()),
        Namespace::from(destination.to_string()),
    ))
}

/// How a document differs between the source (`ours`) and the destination (`theirs`).
fn differs(
    ours: Option<&RawDocumentBuf>,
    theirs: Option<&RawDocumentBuf>,
    steps: Option<&Steps>,
) -> Option<MismatchKind> {
    match (ours, theirs) {
        (Some(a), Some(b)) if same(a, b, steps) => None,
        (Some(_), Some(_)) => Some(MismatchKind::Different),
        (Some(_), None) => Some(MismatchKind::Missing),
        (None, Some(_)) => Some(MismatchKind::Extra),
        (None, None) => None,
    }
}

/// A namespace pair's scan in progress.
struct OpenScan {
    pair: usize,
    scan: PairedScan,
}

impl OpenScan {
    /// The next page, charged to the job's throttle: (its last `_id`, `None` at the end; the
    /// differences; documents compared).
    async fn next_page(
        &mut self,
        verifier: &Verifier,
    ) -> Result<(Option<RawBson>, Vec<(RawBson, MismatchKind)>, u64), CopyError> {
        let page = self.scan.next_page().await?;
        let compared = verifier.charge(&page.ours, &page.theirs).await;
        let upper = page.upper.clone();
        let found = page
            .merge()
            .differences
            .into_iter()
            .map(|d| (d.id, d.kind))
            .collect();
        Ok((upper, found, compared))
    }
}
