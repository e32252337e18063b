//! Semantic verification of a data dir's log, for `hewitt log verify`: on top of the frame-level
//! scan of `scheduler::log::inspect`, it decodes every record and checks what the shard relies
//! on at replay: items parse, each assignment carries the message it names, nonces per process
//! are dense from 0, each hash-chain link follows from the previous assignment, no message is
//! assigned twice.
//!
//! [`Checker`] is the deterministic core (records in, problems out); [`verify`] is the shell that
//! reads the directory and times the scan. It reads only, and takes no lock (see
//! `scheduler::log::inspect` on running beside a node). It checks no signatures and does not run
//! any process: state is not recomputed. Its memory grows with the number of processes and
//! messages in the log (one set entry per message id), which an operator tool can afford.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use scheduler::chain::{genesis_hash_chain, next_hash_chain};
use scheduler::log::inspect::{self, Progress, ScanOptions, Visitor};
use scheduler::log::{LogError, Lsn, Record, Report};
use scheduler::record::{
    AssignmentRecord, GatewayModuleRecord, KIND_ASSIGNED, KIND_ASSIGNMENT, KIND_GATEWAY_MODULE, KIND_MODULE, KIND_SPAWN,
};
use scheduler::{AssignmentId, DataItem, HashChain, MessageId, ModuleId, ProcessId};

use crate::node::NodeConfig;

/// Records between two calls of the status callback (besides one per segment).
const STATUS_RECORDS: u64 = 4096;

/// The log directory of a node's data dir (of its shard 0).
pub fn log_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("log")
}

/// The log directories of every shard of a data dir, shard 0 first (see `node::shard_dir`).
pub fn log_dirs(data_dir: &Path) -> Result<Vec<PathBuf>, String> {
    let shards = crate::node::recorded_shards(data_dir)
        .map_err(|e| e.to_string())?
        .unwrap_or(1);
    Ok((0..shards)
        .map(|index| crate::node::shard_dir(data_dir, index).join("log"))
        .collect())
}

/// The scan options of a node started with the default configuration: its torn-tail window is
/// the `batch_bytes_max` the node runs with ([`NodeConfig::new`]).
pub fn node_scan_options() -> ScanOptions {
    let config = NodeConfig::new(PathBuf::new(), SocketAddr::from(([127, 0, 0, 1], 0)));
    ScanOptions {
        window_bytes: config.log.batch_bytes_max as u64,
    }
}

/// A record whose meaning is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordProblem {
    pub lsn: Lsn,
    pub reason: String,
}

impl std::fmt::Display for RecordProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.lsn, self.reason)
    }
}

/// What the records hold.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub records: u64,
    pub modules: u64,
    /// Processes spawned (assignments of nonce 0).
    pub processes: u64,
    /// Messages assigned (assignments of nonce 1 and above).
    pub messages: u64,
}

/// Where one process's timeline stands.
struct Timeline {
    next_nonce: u64,
    last_assignment: AssignmentId,
    last_link: HashChain,
}

/// The deterministic core: checks records one at a time, in log order.
#[derive(Default)]
pub struct Checker {
    counts: Counts,
    modules: HashSet<ModuleId>,
    timelines: HashMap<ProcessId, Timeline>,
    /// Every message id assigned so far, process ids (their nonce 0) included, as the shard has,
    /// with the process it was sent to.
    messages: HashMap<MessageId, ProcessId>,
    /// Messages assigned to a process other than their target (`KIND_ASSIGNED`).
    assigned: HashSet<(ProcessId, MessageId)>,
    problems: Vec<RecordProblem>,
    /// One shard's log of several: an assignment may copy a message another shard's log holds.
    copies_allowed: bool,
}

impl Checker {
    /// A checker for one shard's log of a node with several (see `copies_allowed`).
    pub fn for_shard_of(shards: usize) -> Checker {
        Checker {
            copies_allowed: shards > 1,
            ..Checker::default()
        }
    }

    pub fn counts(&self) -> Counts {
        self.counts
    }

    pub fn problems(&self) -> &[RecordProblem] {
        &self.problems
    }

    /// Checks the next record of the log.
    pub fn check(&mut self, record: Record<'_>) {
        self.counts.records += 1;
        let result = match record.kind {
            KIND_MODULE => self.check_module(record.payload),
            KIND_GATEWAY_MODULE => self.check_gateway_module(record.payload),
            KIND_ASSIGNMENT | KIND_ASSIGNED | KIND_SPAWN => self.check_assignment(record.kind, record.payload),
            other => Err(format!("unknown record kind {other}")),
        };
        if let Err(reason) = result {
            self.problems.push(RecordProblem {
                lsn: record.lsn,
                reason,
            });
        }
    }

    fn check_module(&mut self, payload: &[u8]) -> Result<(), String> {
        let item = DataItem::parse(payload).map_err(|e| format!("module item does not parse: {e}"))?;
        let id = ModuleId::from(item.id());
        self.counts.modules += 1;
        if !self.modules.insert(id) {
            return Err(format!("module {id} logged twice"));
        }
        Ok(())
    }

    fn check_gateway_module(&mut self, payload: &[u8]) -> Result<(), String> {
        let module =
            GatewayModuleRecord::decode(payload).map_err(|e| format!("gateway module does not decode: {e}"))?;
        let header: serde_json::Value = serde_json::from_slice(module.header)
            .map_err(|e| format!("gateway module {}: header is not JSON: {e}", module.id))?;
        if !header["owner"]["address"].is_string() || !header["tags"].is_array() {
            return Err(format!("gateway module {}: header lacks owner or tags", module.id));
        }
        self.counts.modules += 1;
        if !self.modules.insert(module.id) {
            return Err(format!("module {} logged twice", module.id));
        }
        Ok(())
    }

    fn check_assignment(&mut self, kind: u8, payload: &[u8]) -> Result<(), String> {
        let assignment =
            AssignmentRecord::decode(kind, payload).map_err(|e| format!("assignment does not decode: {e}"))?;
        let pid = assignment.process;
        let nonce = assignment.nonce.0;
        if nonce == 0 {
            self.counts.processes += 1;
        } else {
            self.counts.messages += 1;
        }
        let item = DataItem::parse(assignment.item)
            .map_err(|e| format!("process {pid} nonce {nonce}: message item does not parse: {e}"))?;
        let mut reasons = Vec::new();
        let item_id = MessageId::from(item.id());
        if item_id != assignment.message {
            reasons.push(format!(
                "assignment names message {}, its item is {item_id}",
                assignment.message
            ));
        }
        if assignment.assigned.is_some() {
            match self.messages.get(&assignment.message) {
                None if self.copies_allowed => {}
                None => reasons.push(format!(
                    "assignment of message {}, which no earlier record holds",
                    assignment.message
                )),
                Some(owner) if *owner == pid => reasons.push(format!("message {} assigned twice", assignment.message)),
                Some(_) => {}
            }
            if nonce == 0 || !self.assigned.insert((pid, assignment.message)) {
                reasons.push(format!("message {} assigned twice", assignment.message));
            }
        } else if self.messages.insert(assignment.message, pid).is_some() {
            reasons.push(format!("message {} assigned twice", assignment.message));
        }
        let expected_link = if nonce == 0 {
            if assignment.message != MessageId::from(pid) {
                reasons.push(format!(
                    "nonce 0 carries message {}, not the process itself",
                    assignment.message
                ));
            }
            match item.tag("Module").map(str::parse::<ModuleId>) {
                Some(Ok(module)) if self.modules.contains(&module) => {}
                Some(Ok(module)) => reasons.push(format!("spawned from module {module}, not logged before it")),
                _ => reasons.push("process item has no valid Module tag".to_owned()),
            }
            if self.timelines.contains_key(&pid) {
                reasons.push("spawned twice".to_owned());
            }
            genesis_hash_chain(&pid)
        } else {
            match self.timelines.get(&pid) {
                None => {
                    reasons.push("assignment to a process never spawned".to_owned());
                    assignment.hash_chain
                }
                Some(timeline) => {
                    if nonce != timeline.next_nonce {
                        reasons.push(format!("nonce {nonce} where {} was next", timeline.next_nonce));
                    }
                    next_hash_chain(&timeline.last_assignment, &timeline.last_link)
                }
            }
        };
        if assignment.hash_chain != expected_link {
            reasons.push(format!(
                "hash chain link {} is not {expected_link}, derived from the previous assignment",
                assignment.hash_chain
            ));
        }
        // Follow the record as logged, so that one break is reported once, not at every later
        // nonce of the process.
        self.timelines.insert(
            pid,
            Timeline {
                next_nonce: nonce.saturating_add(1),
                last_assignment: assignment.assignment_id(),
                last_link: assignment.hash_chain,
            },
        );
        if reasons.is_empty() {
            Ok(())
        } else {
            Err(format!("process {pid} nonce {nonce}: {}", reasons.join("; ")))
        }
    }
}

/// Where a running verification stands, for a progress line.
#[derive(Clone, Copy, Debug)]
pub struct Status {
    /// Bytes of the log scanned, about.
    pub done_bytes: u64,
    pub total_bytes: u64,
    pub counts: Counts,
}

/// Both levels of verification of one data dir.
#[derive(Debug)]
pub struct Verification {
    /// The frame-level scan: segments, records, problems with file and offset.
    pub log: Report,
    pub counts: Counts,
    /// Records whose meaning is wrong, with their position.
    pub problems: Vec<RecordProblem>,
    /// Wall time of the whole scan.
    pub elapsed: Duration,
}

impl Verification {
    pub fn is_clean(&self) -> bool {
        self.log.is_clean() && self.problems.is_empty()
    }

    /// Assignments (spawns and messages) checked per second of the scan.
    pub fn messages_per_s(&self) -> f64 {
        let seconds = self.elapsed.as_secs_f64().max(1e-9);
        (self.counts.processes + self.counts.messages) as f64 / seconds
    }
}

struct Verifier<'s> {
    checker: Checker,
    progress: Progress,
    status: &'s mut dyn FnMut(&Status),
}

impl Verifier<'_> {
    fn report_status(&mut self, done_bytes: u64) {
        let status = Status {
            done_bytes: done_bytes.min(self.progress.total_bytes),
            total_bytes: self.progress.total_bytes,
            counts: self.checker.counts(),
        };
        (self.status)(&status);
    }
}

impl Visitor for Verifier<'_> {
    fn record(&mut self, record: Record<'_>) {
        self.checker.check(record);
        if self.checker.counts().records.is_multiple_of(STATUS_RECORDS) {
            // The LSN is the global position: about the bytes scanned when segments are full.
            self.report_status(record.lsn.0.max(self.progress.done_bytes));
        }
    }

    fn progress(&mut self, progress: Progress) {
        self.progress = progress;
        self.report_status(progress.done_bytes);
    }
}

/// Verifies the log of the data dir `data_dir` at both levels; `status` is called every few
/// thousand records and once per segment. Fails only when the directory cannot be read.
/// Verifies one shard's log directory (`shards`: the node's shard count).
pub fn verify(
    log_dir: &Path,
    shards: usize,
    options: &ScanOptions,
    status: &mut dyn FnMut(&Status),
) -> Result<Verification, LogError> {
    let started = Instant::now();
    let mut verifier = Verifier {
        checker: Checker::for_shard_of(shards),
        progress: Progress {
            done_bytes: 0,
            total_bytes: 0,
        },
        status,
    };
    let log = inspect::scan(log_dir, options, &mut verifier)?;
    Ok(Verification {
        log,
        counts: verifier.checker.counts(),
        problems: verifier.checker.problems,
        elapsed: started.elapsed(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use scheduler::record::assignment_id_of;
    use scheduler::signer::Signer;
    use scheduler::tags::Tag;
    use scheduler::{BlockHeight, Nonce, Timestamp};

    /// Builds log records as the shard would: a module, a process, messages.
    struct Builder {
        signer: Signer,
        records: Vec<(u8, Vec<u8>)>,
        links: HashMap<ProcessId, (u64, AssignmentId, HashChain)>,
    }

    impl Builder {
        fn new() -> Builder {
            Builder {
                signer: Signer::generate_ed25519(),
                records: Vec::new(),
                links: HashMap::new(),
            }
        }

        fn module(&mut self) -> ModuleId {
            let item = self
                .signer
                .sign(None, None, vec![Tag::new("Type", "Module")], b"wasm".to_vec());
            self.records.push((KIND_MODULE, item.to_bytes()));
            ModuleId::from(item.id())
        }

        /// Appends an assignment of `item` to `pid` with the next nonce and link, after `edit`.
        fn assign(&mut self, pid: ProcessId, item: &DataItem, edit: impl FnOnce(&mut AssignmentRecord<'_>)) {
            let (nonce, link) = match self.links.get(&pid) {
                None => (0, genesis_hash_chain(&pid)),
                Some((nonce, id, link)) => (nonce + 1, next_hash_chain(id, link)),
            };
            let signature = [nonce as u8 + 1; 64];
            let bytes = item.to_bytes();
            let mut record = AssignmentRecord {
                process: pid,
                nonce: Nonce(nonce),
                timestamp: Timestamp(1_700_000_000_000),
                block_height: BlockHeight(1),
                hash_chain: link,
                message: MessageId::from(item.id()),
                assigned: None,
                limits: None,
                signature: &signature,
                item: &bytes,
            };
            edit(&mut record);
            self.links.insert(
                pid,
                (record.nonce.0, assignment_id_of(record.signature), record.hash_chain),
            );
            self.records.push((record.kind(), record.encode()));
        }

        fn spawn(&mut self, module: ModuleId) -> (ProcessId, DataItem) {
            self.spawn_with(
                module,
                Some(scheduler::record::SpawnLimits {
                    memory_bytes_max: 64 << 20,
                    fuel_per_message: 1_000_000,
                }),
            )
        }

        /// A spawn with `limits`, or (`None`) as logs written before spawns recorded them.
        fn spawn_with(
            &mut self,
            module: ModuleId,
            limits: Option<scheduler::record::SpawnLimits>,
        ) -> (ProcessId, DataItem) {
            let item = self.signer.sign(
                None,
                None,
                vec![
                    Tag::new("Type", "Process"),
                    Tag::new("Module", module.to_string()),
                    // Ed25519 signing is deterministic: make each process item unique.
                    Tag::new("Spawn", self.links.len().to_string()),
                ],
                Vec::new(),
            );
            let pid = ProcessId::from(item.id());
            self.assign(pid, &item, |r| r.limits = limits);
            (pid, item)
        }

        fn message(&mut self, n: u8) -> DataItem {
            self.signer
                .sign(None, None, vec![Tag::new("Action", "Increment")], vec![n])
        }

        fn check(&self) -> Checker {
            let mut checker = Checker::default();
            let mut lsn = 0;
            for (kind, payload) in &self.records {
                checker.check(Record {
                    lsn: Lsn(lsn),
                    kind: *kind,
                    payload,
                });
                lsn += 8;
            }
            checker
        }
    }

    #[test]
    fn a_well_formed_log_has_no_problems() {
        let mut log = Builder::new();
        let module = log.module();
        let (a, _) = log.spawn(module);
        let (b, _) = log.spawn(module);
        for n in 0..5 {
            let item = log.message(n);
            log.assign(if n % 2 == 0 { a } else { b }, &item, |_| {});
        }
        let checker = log.check();
        assert_eq!(checker.problems(), &[]);
        assert_eq!(
            checker.counts(),
            Counts {
                records: 8,
                modules: 1,
                processes: 2,
                messages: 5
            }
        );
    }

    /// Builds a module, a process and two messages, the second edited by `edit`, and expects
    /// one problem, at the last record, whose reason contains `expected`.
    fn check_edit(edit: impl FnOnce(&mut AssignmentRecord<'_>), expected: &str) {
        let mut log = Builder::new();
        let module = log.module();
        let (pid, _) = log.spawn(module);
        let first = log.message(1);
        log.assign(pid, &first, |_| {});
        let second = log.message(2);
        let first_id = MessageId::from(first.id());
        let edit = move |r: &mut AssignmentRecord<'_>| {
            edit(r);
            if r.message == MessageId([0; 32]) {
                r.message = first_id;
            }
        };
        log.assign(pid, &second, edit);
        let checker = log.check();
        let problems = checker.problems();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].lsn, Lsn(8 * 3));
        assert!(problems[0].reason.contains(expected), "{}", problems[0].reason);
    }

    #[test]
    fn broken_assignments_are_reported_with_their_lsn() {
        check_edit(|r| r.nonce = Nonce(5), "nonce 5 where 2 was next");
        check_edit(|r| r.hash_chain = HashChain([9; 32]), "hash chain link");
        check_edit(|r| r.message = MessageId([3; 32]), "its item is");
        // The marker [0; 32] stands for "the first message's id": assigned twice.
        check_edit(|r| r.message = MessageId([0; 32]), "assigned twice");
        check_edit(|r| r.process = ProcessId([4; 32]), "never spawned");
    }

    #[test]
    fn assigned_records_are_checked() {
        use scheduler::record::Assigned;
        let mut log = Builder::new();
        let module = log.module();
        let (a, _) = log.spawn(module);
        let (b, _) = log.spawn(module);
        let item = log.message(1);
        log.assign(a, &item, |_| {});
        let assigned = |r: &mut AssignmentRecord<'_>| r.assigned = Some(Assigned { exclude: "Data" });
        log.assign(b, &item, assigned);
        assert_eq!(log.check().problems(), &[]);
        // Twice to the same process, back to its own target, and a message no record holds.
        log.assign(b, &item, assigned);
        log.assign(a, &item, assigned);
        let unheld = log.message(2);
        log.assign(b, &unheld, assigned);
        let checker = log.check();
        let reasons: Vec<&str> = checker.problems().iter().map(|p| p.reason.as_str()).collect();
        assert_eq!(reasons.len(), 3, "{reasons:?}");
        assert!(reasons[0].contains("assigned twice") && reasons[1].contains("assigned twice"));
        assert!(reasons[2].contains("no earlier record holds"), "{}", reasons[2]);
    }

    #[test]
    fn spawns_with_and_without_logged_limits_check_and_a_spawn_record_after_nonce_0_does_not() {
        let mut log = Builder::new();
        let module = log.module();
        let (recorded, _) = log.spawn(module);
        let (legacy, _) = log.spawn_with(module, None);
        assert_eq!(log.records[1].0, KIND_SPAWN);
        assert_eq!(log.records[2].0, KIND_ASSIGNMENT);
        for (n, pid) in [(1, recorded), (2, legacy)] {
            let item = log.message(n);
            log.assign(pid, &item, |_| {});
        }
        let checker = log.check();
        assert_eq!(checker.problems(), &[]);
        assert_eq!((checker.counts().processes, checker.counts().messages), (2, 2));
        let item = log.message(7);
        log.assign(recorded, &item, |r| {
            r.limits = Some(scheduler::record::SpawnLimits {
                memory_bytes_max: 1,
                fuel_per_message: 1,
            })
        });
        let checker = log.check();
        let reasons: Vec<&str> = checker.problems().iter().map(|p| p.reason.as_str()).collect();
        assert_eq!(reasons.len(), 1, "{reasons:?}");
        assert!(reasons[0].contains("spawn record at nonce 2"), "{}", reasons[0]);
    }

    #[test]
    fn undecodable_records_and_unknown_kinds_are_reported() {
        let mut checker = Checker::default();
        for (kind, payload) in [
            (KIND_MODULE, &b"not an item"[..]),
            (KIND_ASSIGNMENT, &[0; 10][..]),
            (9, &[][..]),
        ] {
            checker.check(Record {
                lsn: Lsn(16),
                kind,
                payload,
            });
        }
        let reasons: Vec<&str> = checker.problems().iter().map(|p| p.reason.as_str()).collect();
        assert_eq!(reasons.len(), 3);
        assert!(reasons[0].contains("module item does not parse"), "{}", reasons[0]);
        assert!(reasons[1].contains("does not decode"), "{}", reasons[1]);
        assert_eq!(reasons[2], "unknown record kind 9");
    }

    #[test]
    fn spawn_from_an_unknown_module_is_reported() {
        let mut log = Builder::new();
        log.spawn(ModuleId([1; 32]));
        let checker = log.check();
        assert_eq!(checker.problems().len(), 1);
        assert!(checker.problems()[0].reason.contains("not logged before it"));
    }
}
