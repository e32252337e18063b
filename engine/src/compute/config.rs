//! The compute unit's limits: the node-wide [`ComputeConfig`] (pool sizes, fixed when the
//! [`Runtime`](super::Runtime) starts) and the per-process [`ProcessLimits`] (AO's
//! `Memory-Limit` and `Compute-Limit`).
//!
//! This file only holds and validates numbers; it does not parse AO's `1-gb` style tags.

use super::ComputeError;

/// The size of a wasm page, the unit in which linear memory grows.
pub const WASM_PAGE_BYTES: u64 = 64 * 1024;

/// The most linear memory a wasm32 module can address.
const WASM32_MEMORY_BYTES_MAX: u64 = 4 * 1024 * 1024 * 1024;

/// Node-wide limits of the compute unit. Every field bounds a resource of the instance pool,
/// which wasmtime reserves when the [`Runtime`](super::Runtime) starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComputeConfig {
    /// Live instances at once on this node (all shards together): one per hot process. Each slot
    /// reserves 4 GiB plus a 32 MiB guard of *virtual* address space (so that wasm32 bounds
    /// checks are free), backed by physical memory only as pages are touched: 1000 slots reserve
    /// about 4 TiB of the 128 TiB a 64-bit process can map. At the bound,
    /// [`CompiledModule::instantiate`](super::CompiledModule::instantiate) fails with
    /// [`ComputeError::PoolExhausted`].
    pub instance_count_max: u32,
    /// Linear memory bytes any one instance may reach; a multiple of [`WASM_PAGE_BYTES`], at
    /// most 4 GiB (wasm32). [`ProcessLimits::memory_bytes_max`] may not exceed it. Default 4 GiB:
    /// the slot's reservation covers it anyway, and per-process limits do the real bounding.
    pub memory_bytes_max: u64,
    /// Elements of the one table an instance may have (the function pointers of C and Lua
    /// code). A module whose table starts larger fails to instantiate. Every slot maps room for
    /// this many elements (8 to 16 bytes each), touched only as used. Default 20 000,
    /// wasmtime's own default; raise it for modules with larger function tables.
    pub table_elements_max: u32,
    /// Bytes of a result JSON (without its NUL) that the host reads out of guest memory. A
    /// longer output fails the message. Default 16 MiB: AO results carry messages and their
    /// data, which are bounded well below that.
    pub output_bytes_max: u64,
}

impl Default for ComputeConfig {
    fn default() -> Self {
        ComputeConfig {
            instance_count_max: 1000,
            memory_bytes_max: WASM32_MEMORY_BYTES_MAX,
            table_elements_max: 20_000,
            output_bytes_max: 16 * 1024 * 1024,
        }
    }
}

impl ComputeConfig {
    /// Checks that the limits are usable together; a node refuses to start otherwise.
    pub fn validate(&self) -> Result<(), ComputeError> {
        let refuse = |reason: String| Err(ComputeError::Config { reason });
        if self.instance_count_max == 0 {
            return refuse("instance_count_max must be at least 1".to_string());
        }
        if self.memory_bytes_max == 0 || !self.memory_bytes_max.is_multiple_of(WASM_PAGE_BYTES) {
            return refuse(format!(
                "memory_bytes_max must be a positive multiple of {WASM_PAGE_BYTES} (one wasm page), not {}",
                self.memory_bytes_max
            ));
        }
        if self.memory_bytes_max > WASM32_MEMORY_BYTES_MAX {
            return refuse(format!(
                "memory_bytes_max must be at most {WASM32_MEMORY_BYTES_MAX} (4 GiB, wasm32), not {}",
                self.memory_bytes_max
            ));
        }
        if self.table_elements_max == 0 {
            return refuse("table_elements_max must be at least 1".to_string());
        }
        if self.output_bytes_max == 0 || self.output_bytes_max >= self.memory_bytes_max {
            return refuse(format!(
                "output_bytes_max must be positive and below memory_bytes_max ({}), not {}",
                self.memory_bytes_max, self.output_bytes_max
            ));
        }
        Ok(())
    }
}

/// One process's limits, from its spawn tags. Both are enforced deterministically, so a limit
/// hit is the same on every node and every replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProcessLimits {
    /// Linear memory bytes the process may reach (AO's `Memory-Limit`); at most
    /// [`ComputeConfig::memory_bytes_max`]. Growth past it traps, and the message fails with
    /// "memory limit of N bytes exceeded".
    pub memory_bytes_max: u64,
    /// Fuel one message may consume (AO's `Compute-Limit`), refilled before every message. At
    /// the bound the message fails with "compute limit of N exceeded".
    pub fuel_per_message: u64,
}

/// The limits as the log records them with the process's spawn (`KIND_SPAWN`).
impl From<scheduler::record::SpawnLimits> for ProcessLimits {
    fn from(limits: scheduler::record::SpawnLimits) -> ProcessLimits {
        ProcessLimits {
            memory_bytes_max: limits.memory_bytes_max,
            fuel_per_message: limits.fuel_per_message,
        }
    }
}

impl From<ProcessLimits> for scheduler::record::SpawnLimits {
    fn from(limits: ProcessLimits) -> scheduler::record::SpawnLimits {
        scheduler::record::SpawnLimits {
            memory_bytes_max: limits.memory_bytes_max,
            fuel_per_message: limits.fuel_per_message,
        }
    }
}
