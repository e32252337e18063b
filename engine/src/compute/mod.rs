//! The compute unit's wasmtime side: compile a process's module once, keep its instance hot
//! between messages, evaluate one message through AO's C-level ABI, snapshot and restore it.
//!
//! The pieces, from the node down to one message:
//! - [`Runtime`]: one per node. A wasmtime `Engine` configured for deterministic execution
//!   (fuel metering, NaN canonicalisation, no threads, no relaxed SIMD) with the pooling
//!   allocator and copy-on-write memory images. Its pool sizes come from [`ComputeConfig`].
//! - [`CompiledModule`]: a checked, compiled module with its `InstancePre`; compiled once per
//!   module per node and cached by the caller (cloning it is an `Arc` clone).
//! - [`ProcessInstance`]: one live process, holding one pool slot. Its linear memory *is* the
//!   process state and stays in place between messages: [`ProcessInstance::handle`] writes the
//!   msg and env into guest memory through the guest's `malloc`, calls `handle`, and copies
//!   out only the output. Nothing copies the linear memory per message.
//! - [`Evaluation`]: what a message did. Guest faults (trap, out of fuel, memory limit, a bad
//!   output) are `Evaluation::Failed`, never host errors and never panics.
//! - [`Snapshot`]: the full linear memory plus the exported mutable globals, from which
//!   [`CompiledModule::instantiate_from`] rebuilds an equivalent instance (rollback, hibernation,
//!   checkpoints).
//!
//! Gas: AO's reference CU meters with injected `usegas` calls; Hewitt uses wasmtime fuel, which
//! costs about one unit per wasm operator. `Compute-Limit` maps to
//! [`ProcessLimits::fuel_per_message`] and `GasUsed` is the fuel a message consumed, including
//! the guest's `malloc` calls for its inputs.
//!
//! Deliberately absent for now: emscripten module formats (their imports), the on-disk cache of
//! precompiled artifacts, async (preemptible) calls, and incremental rollback (a
//! [`Snapshot`] copies the whole memory; cost proportional to touched pages comes later). This
//! module does no I/O, reads no clock and keeps no process registry: callers own placement,
//! caching and scheduling.

mod config;
pub mod dirty;
mod instance;
mod module;
pub mod samples;

#[cfg(test)]
mod exchange_tests;
#[cfg(test)]
mod tests;

pub use config::{ComputeConfig, ProcessLimits, WASM_PAGE_BYTES};
pub use instance::{Evaluation, GlobalValue, ProcessInstance, Snapshot, Undone};
pub use module::{CompiledModule, Runtime, MODULE_FORMAT_WASM32};

/// Why the compute unit could not do what was asked. Guest faults during a message are not
/// errors: they are [`Evaluation::Failed`].
#[derive(Debug, thiserror::Error)]
pub enum ComputeError {
    /// The node's [`ComputeConfig`] is inconsistent; the node must not start.
    #[error("invalid compute configuration: {reason}")]
    Config { reason: String },
    /// The module cannot run here (unsupported format, invalid wasm, an import the format does
    /// not provide, a missing or mistyped export). Permanent: callers report it to the client and
    /// do not retry.
    #[error("module refused: {reason}")]
    ModuleRefused { reason: String },
    /// Every instance slot of the pool is in use. Transient: callers answer 503 (or hibernate an
    /// idle process) and retry later.
    #[error("compute instance pool exhausted: {reason}")]
    PoolExhausted { reason: String },
    /// This process cannot be instantiated with these limits or from this snapshot (its limits
    /// exceed the node's, its initial memory exceeds its limit, its start function failed, the
    /// snapshot does not fit the module). Permanent for this process and input.
    #[error("instantiation refused: {reason}")]
    Instantiate { reason: String },
}
