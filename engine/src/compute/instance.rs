//! One live process: its wasmtime `Store` and instance, the AO C-level ABI call that evaluates
//! one message ([`ProcessInstance::handle`]), and whole-state snapshots for rollback,
//! hibernation and checkpoints.
//!
//! The linear memory is the process state and stays where it is between messages: `handle`
//! writes the msg and env into it through the guest's own `malloc` and copies out only the
//! result. Every guest fault is an [`Evaluation::Failed`]; nothing here panics on guest
//! behaviour. This file does not decide what a failure means for the process (rollback,
//! restart): its caller does.

use std::ffi::CStr;

use sha2::{Digest, Sha256};
use wasmtime::{Global, Memory, ResourceLimiter, Store, Trap, TypedFunc, Val, V128};

use super::config::{ProcessLimits, WASM_PAGE_BYTES};
use super::module::ModuleInner;
use super::ComputeError;

/// What evaluating one message did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Evaluation {
    /// `handle` returned a NUL-terminated UTF-8 string of at most `output_bytes_max` bytes:
    /// `output`, without its NUL. Whether it is well-formed AO JSON is the caller's question.
    Returned { output: Vec<u8>, gas_used: u64 },
    /// The guest faulted: a trap, the compute limit, the memory limit, or an output the host
    /// cannot read (a pointer outside memory, no NUL, too long, not UTF-8). `reason` is
    /// deterministic: the same message on the same state fails with the same words. The instance
    /// is now poisoned.
    Failed { reason: String, gas_used: u64 },
}

impl Evaluation {
    /// The fuel the message consumed, whatever its outcome.
    pub fn gas_used(&self) -> u64 {
        match self {
            Evaluation::Returned { gas_used, .. } | Evaluation::Failed { gas_used, .. } => *gas_used,
        }
    }
}

/// The value of one exported mutable global, by bits (floats are kept exact, NaNs included).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GlobalValue {
    I32(i32),
    I64(i64),
    F32(u32),
    F64(u64),
    V128(u128),
}

impl GlobalValue {
    /// The value as wasmtime sets it.
    fn val(self) -> Val {
        match self {
            GlobalValue::I32(v) => Val::I32(v),
            GlobalValue::I64(v) => Val::I64(v),
            GlobalValue::F32(bits) => Val::F32(bits),
            GlobalValue::F64(bits) => Val::F64(bits),
            GlobalValue::V128(bits) => Val::V128(V128::from(bits)),
        }
    }
}

/// A process's whole state between two messages: its linear memory and the values of its
/// exported mutable globals. Globals that a module does not export are not captured: they are
/// assumed to be back at their initial values whenever `handle` has returned, which holds for
/// LLVM's `__stack_pointer`, the one such global compilers emit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The linear memory, byte for byte; its length is `memory_pages` wasm pages.
    pub memory: Vec<u8>,
    /// The memory size in wasm pages of [`WASM_PAGE_BYTES`].
    pub memory_pages: u64,
    /// Each exported mutable global by export name, in the module's export order.
    pub globals: Vec<(String, GlobalValue)>,
}

impl Snapshot {
    /// The SHA-256 of the memory, equal to [`ProcessInstance::memory_sha256`] of the instance it
    /// was taken from.
    pub fn memory_sha256(&self) -> [u8; 32] {
        Sha256::digest(&self.memory).into()
    }
}

/// The store's data: what the limiter needs.
pub(super) struct StoreState {
    limiter: MemoryLimiter,
}

/// Enforces [`ProcessLimits::memory_bytes_max`]: a growth past it traps with
/// [`MemoryLimitExceeded`] rather than returning -1 to the guest, so that a process at its limit
/// fails visibly and deterministically instead of limping on with failed allocations.
struct MemoryLimiter {
    memory_bytes_max: u64,
}

/// The error the limiter raises; it becomes the message's failure reason.
#[derive(Debug, thiserror::Error)]
#[error("memory limit of {memory_bytes_max} bytes exceeded: growth to {desired_bytes} bytes refused")]
struct MemoryLimitExceeded {
    memory_bytes_max: u64,
    desired_bytes: u64,
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        // usize is at most 64 bits on every target wasmtime supports.
        let desired_bytes = desired as u64;
        if desired_bytes > self.memory_bytes_max {
            return Err(wasmtime::Error::new(MemoryLimitExceeded {
                memory_bytes_max: self.memory_bytes_max,
                desired_bytes,
            }));
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, _desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        // Tables are bounded by the pool's table_elements_max.
        Ok(true)
    }
}

/// One live process: a wasmtime instance in one pool slot, reused for every message.
///
/// After a [`Evaluation::Failed`] the instance is *poisoned*: a trap may have left its memory
/// half-updated, so the caller must drop it and continue from a [`Snapshot`] (or a replay).
/// [`ProcessInstance::handle`] and [`ProcessInstance::snapshot`] on a poisoned instance are
/// caller bugs and panic. Dropping the instance returns its slot to the pool.
pub struct ProcessInstance {
    /// Page-level undo, when tracked (dropped first: it stops the tracking before the store
    /// gives the memory back).
    undo: Option<Undo>,
    store: Store<StoreState>,
    memory: Memory,
    malloc: TypedFunc<i32, i32>,
    handle: TypedFunc<(i32, i32), i32>,
    /// The exported mutable globals, by export name, in the module's export order.
    globals: Vec<(String, Global)>,
    limits: ProcessLimits,
    output_bytes_max: u64,
    poisoned: bool,
    /// Every mutable global is in `globals` (see `ModuleInner::globals_complete`).
    globals_complete: bool,
    /// Nothing ran in it since it was made: its memory is the module's initial memory.
    fresh: bool,
    /// The module it is an instance of (restores compare with its initial memory).
    module: std::sync::Arc<ModuleInner>,
}

/// What puts a tracked instance back as it was before a failed message: the memory and globals
/// after the last message that stood, and the tracker that says which pages changed since.
struct Undo {
    tracker: std::sync::Arc<super::dirty::DirtyTracker>,
    base: usize,
    shadow: Vec<u8>,
    globals: Vec<(String, GlobalValue)>,
    written: Vec<(usize, usize)>,
}

impl Drop for Undo {
    fn drop(&mut self) {
        if let Err(error) = self.tracker.unregister(self.base, self.shadow.len()) {
            tracing::warn!(%error, "memory write tracking not stopped");
        }
    }
}

/// What [`ProcessInstance::undo_message`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Undone {
    /// The instance is as it was before the message; it took the pages the message wrote.
    InPlace { pages: usize },
    /// It cannot be put back in place (untracked, or its memory grew): rebuild it.
    Rebuild,
}

impl std::fmt::Debug for ProcessInstance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessInstance")
            .field("limits", &self.limits)
            .field("memory_bytes", &self.memory.data_size(&self.store))
            .field("poisoned", &self.poisoned)
            .finish_non_exhaustive()
    }
}

impl ProcessInstance {
    /// A fresh instance of `module`, in a new store bounded by `limits`.
    pub(super) fn start(
        module: &std::sync::Arc<ModuleInner>,
        limits: ProcessLimits,
    ) -> Result<ProcessInstance, ComputeError> {
        let node_memory_bytes_max = module.config.memory_bytes_max;
        if limits.memory_bytes_max > node_memory_bytes_max {
            return Err(ComputeError::Instantiate {
                reason: format!(
                    "the process's memory limit of {} bytes exceeds this node's per-instance maximum of {node_memory_bytes_max} bytes",
                    limits.memory_bytes_max
                ),
            });
        }
        let state = StoreState {
            limiter: MemoryLimiter {
                memory_bytes_max: limits.memory_bytes_max,
            },
        };
        let mut store = Store::new(module.pre.module().engine(), state);
        store.limiter(|state| &mut state.limiter);
        // A start function, if any, runs under the same compute limit as a message.
        store
            .set_fuel(limits.fuel_per_message)
            .expect("the runtime enables fuel metering");
        let instance = module
            .pre
            .instantiate(&mut store)
            .map_err(|err| instantiate_error(err, &limits))?;

        // The exports were checked when the module was compiled.
        let memory = instance
            .get_memory(&mut store, "memory")
            .expect("compile checked the memory export");
        let malloc = instance
            .get_typed_func::<i32, i32>(&mut store, "malloc")
            .expect("compile checked the malloc export");
        let handle = instance
            .get_typed_func::<(i32, i32), i32>(&mut store, "handle")
            .expect("compile checked the handle export");
        let globals = module
            .global_names
            .iter()
            .map(|name| {
                let global = instance
                    .get_global(&mut store, name)
                    .expect("compile listed the exported mutable globals");
                (name.clone(), global)
            })
            .collect();
        Ok(ProcessInstance {
            store,
            memory,
            malloc,
            handle,
            globals,
            limits,
            output_bytes_max: module.config.output_bytes_max,
            poisoned: false,
            globals_complete: module.globals_complete,
            undo: None,
            fresh: true,
            module: std::sync::Arc::clone(module),
        })
    }

    /// A fresh instance of `module` whose memory and exported globals are those of `snapshot`.
    pub(super) fn restore(
        module: &std::sync::Arc<ModuleInner>,
        limits: ProcessLimits,
        snapshot: &Snapshot,
    ) -> Result<ProcessInstance, ComputeError> {
        let mut instance = ProcessInstance::start(module, limits)?;
        instance.restore_snapshot(snapshot)?;
        Ok(instance)
    }

    /// Makes this fresh instance (nothing ran in it) hold `snapshot`'s memory and globals,
    /// taken from an instance of the same module.
    pub fn restore_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), ComputeError> {
        let refuse = |reason: String| Err(ComputeError::Instantiate { reason });
        if !self.fresh {
            return refuse("a snapshot is restored only into a fresh instance".into());
        }
        let snapshot_bytes = snapshot.memory_pages.checked_mul(WASM_PAGE_BYTES);
        if snapshot_bytes != Some(snapshot.memory.len() as u64) {
            return refuse(format!(
                "the snapshot is inconsistent: {} pages but {} memory bytes",
                snapshot.memory_pages,
                snapshot.memory.len()
            ));
        }
        let limits = self.limits;
        let instance = self;
        if snapshot.globals.len() != instance.globals.len() {
            return refuse(format!(
                "the snapshot has {} exported mutable globals but the module has {}",
                snapshot.globals.len(),
                instance.globals.len()
            ));
        }
        for (name, value) in &snapshot.globals {
            let Some((_, global)) = instance.globals.iter().find(|(n, _)| n == name) else {
                return refuse(format!(
                    "the snapshot's global `{name}` is not an exported mutable global of the module"
                ));
            };
            let val = value.val();
            if let Err(err) = global.set(&mut instance.store, val) {
                return refuse(format!("the snapshot's global `{name}` does not fit: {err}"));
            }
        }

        let pages_now = instance.memory.size(&instance.store);
        if snapshot.memory_pages < pages_now {
            return refuse(format!(
                "the snapshot has {} memory pages but the module starts with {pages_now}",
                snapshot.memory_pages
            ));
        }
        if let Err(err) = instance
            .memory
            .grow(&mut instance.store, snapshot.memory_pages - pages_now)
        {
            return refuse(format!(
                "the snapshot's memory of {} pages does not fit: {}",
                snapshot.memory_pages,
                fault_reason(&err, &limits)
            ));
        }
        // Pages that already hold the snapshot's bytes (the module's copy-on-write image, zero
        // pages: most of a small process's memory) are left alone: writing one would fault in
        // a private copy of it for nothing. They are compared with the module's initial memory
        // kept on the host, not with the instance's, whose pages a read would fault in too.
        let initial = instance.module.initial_memory.get_or_init(|| {
            // The fresh instance's memory as it is before growing: its start was just run.
            instance.memory.data(&instance.store)[..(pages_now * WASM_PAGE_BYTES) as usize].into()
        });
        const PAGE: usize = 4096;
        static ZERO: [u8; PAGE] = [0; PAGE];
        let memory = instance.memory.data_mut(&mut instance.store);
        for (index, (to, from)) in memory.chunks_mut(PAGE).zip(snapshot.memory.chunks(PAGE)).enumerate() {
            let before = initial.get(index * PAGE..(index + 1) * PAGE).unwrap_or(&ZERO);
            if before != from {
                to.copy_from_slice(from);
            }
        }
        instance.fresh = false;
        Ok(())
    }

    /// Evaluates one message through AO's C-level ABI: `malloc` and fill a NUL-terminated copy
    /// of `msg_json`, the same for `env_json`, call `handle(msg, env)`, and read the
    /// NUL-terminated UTF-8 result at the pointer it returns.
    ///
    /// The fuel is set to [`ProcessLimits::fuel_per_message`] first, so the guest's `malloc`
    /// calls count towards the message. The JSON is passed as given; this function does not
    /// look inside it.
    ///
    /// # Panics
    /// If the instance is poisoned (see [`ProcessInstance::is_poisoned`]).
    pub fn handle(&mut self, msg_json: &[u8], env_json: &[u8]) -> Evaluation {
        assert!(
            !self.poisoned,
            "handle called on a ProcessInstance poisoned by an earlier failure"
        );
        let fuel = self.limits.fuel_per_message;
        self.store.set_fuel(fuel).expect("the runtime enables fuel metering");
        self.fresh = false;
        let outcome = self.evaluate(msg_json, env_json);
        let fuel_left = self.store.get_fuel().expect("the runtime enables fuel metering");
        assert!(fuel_left <= fuel, "fuel grew during a call");
        let gas_used = fuel - fuel_left;
        match outcome {
            Ok(output) => Evaluation::Returned { output, gas_used },
            Err(reason) => {
                self.poisoned = true;
                Evaluation::Failed { reason, gas_used }
            }
        }
    }

    /// The three calls of [`ProcessInstance::handle`]; a guest fault is the `Err` reason.
    fn evaluate(&mut self, msg_json: &[u8], env_json: &[u8]) -> Result<Vec<u8>, String> {
        let msg_ptr = self.write_input(msg_json, "msg")?;
        let env_ptr = self.write_input(env_json, "env")?;
        let output_ptr = self
            .handle
            .call(&mut self.store, (msg_ptr, env_ptr))
            .map_err(|err| fault_reason(&err, &self.limits))?;
        self.read_output(output_ptr)
    }

    /// Copies `bytes` and a NUL into a buffer from the guest's `malloc`; returns its address.
    fn write_input(&mut self, bytes: &[u8], what: &str) -> Result<i32, String> {
        let size = bytes
            .len()
            .checked_add(1)
            .and_then(|size| i32::try_from(size).ok())
            .ok_or_else(|| format!("the {what} of {} bytes is too large for a wasm32 malloc", bytes.len()))?;
        let ptr = self
            .malloc
            .call(&mut self.store, size)
            .map_err(|err| fault_reason(&err, &self.limits))?;
        let memory = self.memory.data_mut(&mut self.store);
        // The guest's i32 is an address: reinterpret it as unsigned.
        let start = ptr as u32 as usize;
        if start == 0 {
            return Err(format!("malloc({size}) for the {what} returned NULL"));
        }
        let Some(buffer) = memory.get_mut(start..start + bytes.len() + 1) else {
            return Err(format!(
                "malloc({size}) for the {what} returned {start:#x}, which is not {size} bytes inside the linear memory of {} bytes",
                memory.len()
            ));
        };
        let (body, nul) = buffer.split_at_mut(bytes.len());
        body.copy_from_slice(bytes);
        nul[0] = 0;
        Ok(ptr)
    }

    /// Copies out the NUL-terminated UTF-8 output at `ptr`, bounded by `output_bytes_max`.
    fn read_output(&self, ptr: i32) -> Result<Vec<u8>, String> {
        let memory = self.memory.data(&self.store);
        let start = ptr as u32 as usize;
        if start == 0 {
            return Err("handle returned NULL".to_string());
        }
        let Some(rest) = memory.get(start..).filter(|rest| !rest.is_empty()) else {
            return Err(format!(
                "handle returned {start:#x}, outside the linear memory of {} bytes",
                memory.len()
            ));
        };
        // Look for the NUL among at most output_bytes_max + 1 bytes.
        let window = usize::try_from(self.output_bytes_max)
            .ok()
            .and_then(|max| max.checked_add(1))
            .map_or(rest.len(), |window| window.min(rest.len()));
        let output = match CStr::from_bytes_until_nul(&rest[..window]) {
            Ok(output) => output.to_bytes(),
            Err(_) if window < rest.len() || rest.len() as u64 > self.output_bytes_max => {
                return Err(format!(
                    "the output at {start:#x} is longer than the limit of {} bytes",
                    self.output_bytes_max
                ));
            }
            Err(_) => {
                return Err(format!(
                    "the output at {start:#x} has no terminating NUL before the end of the linear memory"
                ));
            }
        };
        if let Err(err) = std::str::from_utf8(output) {
            return Err(format!("the output at {start:#x} is not UTF-8: {err}"));
        }
        Ok(output.to_vec())
    }

    fn globals_now(&mut self) -> Vec<(String, GlobalValue)> {
        self.globals
            .iter()
            .map(|(name, global)| {
                let value = match global.get(&mut self.store) {
                    Val::I32(v) => GlobalValue::I32(v),
                    Val::I64(v) => GlobalValue::I64(v),
                    Val::F32(bits) => GlobalValue::F32(bits),
                    Val::F64(bits) => GlobalValue::F64(bits),
                    Val::V128(v) => GlobalValue::V128(v.as_u128()),
                    other => unreachable!("compile refuses non-numeric mutable globals, yet `{name}` is {other:?}"),
                };
                (name.clone(), value)
            })
            .collect()
    }

    /// Starts page-level undo (see [`super::dirty`]): from now on a failed message can be put
    /// back by [`ProcessInstance::undo_message`] at the cost of the pages it wrote. `memory`,
    /// if given, is a copy of the memory as it is now (a snapshot the instance was made from),
    /// which saves copying it. Fails when the module hides a global that could not be exported,
    /// or the kernel refuses the tracking; the instance is unchanged then.
    pub fn track(
        &mut self,
        tracker: &std::sync::Arc<super::dirty::DirtyTracker>,
        memory: Option<Vec<u8>>,
    ) -> Result<(), String> {
        assert!(!self.poisoned, "track called on a poisoned ProcessInstance");
        if !self.globals_complete {
            return Err("the module keeps state a rollback in place would not restore (a hidden non-numeric global, tables or passive segments changed by code)".into());
        }
        self.undo = None;
        let data = self.memory.data(&self.store);
        let shadow = match memory {
            Some(memory) if memory.len() == data.len() => memory,
            _ => data.to_vec(),
        };
        debug_assert!(shadow == data, "the copy given is the memory");
        let base = data.as_ptr() as usize;
        if !base.is_multiple_of(super::dirty::PAGE_BYTES) {
            return Err(format!("linear memory at {base:#x} is not page-aligned"));
        }
        tracker.register(base, shadow.len()).map_err(|e| e.to_string())?;
        self.undo = Some(Undo {
            tracker: std::sync::Arc::clone(tracker),
            base,
            shadow,
            globals: self.globals_now(),
            written: Vec::new(),
        });
        Ok(())
    }

    /// Whether failed messages are undone in place.
    pub fn is_tracked(&self) -> bool {
        self.undo.is_some()
    }

    /// After a message that stands: the pages it wrote go into the undo copy (a grown memory is
    /// copied whole and tracked anew). Untracked instances: nothing to do.
    pub fn keep_message(&mut self) {
        let Some(mut undo) = self.undo.take() else { return };
        let data = self.memory.data(&self.store);
        if data.as_ptr() as usize == undo.base && data.len() > undo.shadow.len() {
            // Grown in place: the pages written below the old size, then the new pages whole,
            // which start being tracked.
            let old_len = undo.shadow.len();
            undo.written.clear();
            let grown = undo
                .tracker
                .take_written(undo.base, old_len, &mut undo.written)
                .and_then(|()| undo.tracker.register(undo.base + old_len, data.len() - old_len));
            if let Err(error) = grown {
                tracing::warn!(%error, "memory write tracking stopped after growth");
                return; // dropping `undo` unregisters the old range
            }
            for &(from, to) in &undo.written {
                undo.shadow[from..to].copy_from_slice(&data[from..to]);
            }
            undo.shadow.extend_from_slice(&data[old_len..]);
            undo.globals = self.globals_now();
            self.undo = Some(undo);
            return;
        }
        if data.as_ptr() as usize != undo.base || data.len() != undo.shadow.len() {
            let tracker = std::sync::Arc::clone(&undo.tracker);
            drop(undo); // stops tracking the old range
            if let Err(error) = self.track(&tracker, None) {
                tracing::warn!(%error, "memory write tracking stopped after growth");
            }
            return;
        }
        undo.written.clear();
        match undo
            .tracker
            .take_written(undo.base, undo.shadow.len(), &mut undo.written)
        {
            Ok(()) => {
                for &(from, to) in &undo.written {
                    undo.shadow[from..to].copy_from_slice(&data[from..to]);
                }
                undo.globals = self.globals_now();
                self.undo = Some(undo);
            }
            Err(error) => tracing::warn!(%error, "memory write tracking failed; rollbacks rebuild"),
        }
    }

    /// After a message that failed: puts back the pages it wrote and every global, and makes
    /// the instance usable again; or says it must be rebuilt.
    pub fn undo_message(&mut self) -> Undone {
        let Some(mut undo) = self.undo.take() else {
            return Undone::Rebuild;
        };
        let base = self.memory.data(&self.store).as_ptr() as usize;
        if base != undo.base || self.memory.data_size(&self.store) != undo.shadow.len() {
            return Undone::Rebuild; // grown: a memory cannot shrink
        }
        undo.written.clear();
        // Listed, put back, then protected again: one scan, and the protection costs the pages.
        if let Err(error) = undo
            .tracker
            .list_written(undo.base, undo.shadow.len(), &mut undo.written)
        {
            tracing::warn!(%error, "memory write tracking failed; rollbacks rebuild");
            return Undone::Rebuild;
        }
        let data = self.memory.data_mut(&mut self.store);
        let mut pages = 0;
        for &(from, to) in &undo.written {
            data[from..to].copy_from_slice(&undo.shadow[from..to]);
            pages += (to - from) / super::dirty::PAGE_BYTES;
        }
        for ((name, global), (saved, value)) in self.globals.iter().zip(&undo.globals) {
            debug_assert_eq!(name, saved);
            let val = value.val();
            global
                .set(&mut self.store, val)
                .expect("a global takes back its own value");
        }
        if let Err(error) = undo.tracker.protect(undo.base, &undo.written) {
            tracing::warn!(%error, "memory write tracking failed; rollbacks rebuild");
            return Undone::Rebuild;
        }
        self.undo = Some(undo);
        self.poisoned = false;
        Undone::InPlace { pages }
    }

    /// Whether an earlier message failed, leaving this instance unusable (see the type's docs).
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    /// The process's limits.
    pub fn limits(&self) -> ProcessLimits {
        self.limits
    }

    /// The linear memory as it is now, for `/state` and for hashing. Valid until the next call
    /// that takes `&mut self`.
    pub fn memory(&self) -> &[u8] {
        self.memory.data(&self.store)
    }

    /// The SHA-256 of the linear memory.
    pub fn memory_sha256(&self) -> [u8; 32] {
        Sha256::digest(self.memory()).into()
    }

    /// Copies the whole state (memory and exported mutable globals), for rollback, hibernation
    /// and checkpoints. Costs one copy of the memory.
    ///
    /// # Panics
    /// If the instance is poisoned: its state is not one a process may continue from.
    pub fn snapshot(&mut self) -> Snapshot {
        assert!(
            !self.poisoned,
            "snapshot of a ProcessInstance poisoned by an earlier failure"
        );
        let memory = self.memory.data(&self.store).to_vec();
        let memory_pages = self.memory.size(&self.store);
        assert_eq!(memory.len() as u64, memory_pages * WASM_PAGE_BYTES);
        let globals = self.globals_now();
        Snapshot {
            memory,
            memory_pages,
            globals,
        }
    }
}

/// The deterministic reason for a guest fault.
fn fault_reason(err: &wasmtime::Error, limits: &ProcessLimits) -> String {
    if let Some(exceeded) = err.downcast_ref::<MemoryLimitExceeded>() {
        return exceeded.to_string();
    }
    match err.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => format!("compute limit of {} exceeded", limits.fuel_per_message),
        Some(trap) => trap.to_string(),
        None => format!("evaluation failed: {err}"),
    }
}

/// Sorts an instantiation failure into pool exhaustion or a refusal.
fn instantiate_error(err: wasmtime::Error, limits: &ProcessLimits) -> ComputeError {
    if let Some(pool) = err.downcast_ref::<wasmtime::PoolConcurrencyLimitError>() {
        return ComputeError::PoolExhausted {
            reason: pool.to_string(),
        };
    }
    if err.is::<MemoryLimitExceeded>() {
        return ComputeError::Instantiate {
            reason: format!(
                "the module's initial memory does not fit: {}",
                fault_reason(&err, limits)
            ),
        };
    }
    ComputeError::Instantiate {
        reason: format!("{err:#}"),
    }
}
