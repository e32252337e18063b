//! The node's wasmtime engine ([`Runtime`]) and checked, compiled modules ([`CompiledModule`]).
//!
//! Everything that can be known about a module before it runs is checked here, once, so that a
//! bad module is refused with a clear reason when it is loaded rather than when a message
//! arrives: its format, its imports (the format decides which it may have), and the exports
//! AO's C-level ABI needs. The runtime, shared by every shard of a node, compiles each module
//! (keyed by its wasm bytes' SHA-256) once per node: a shard that loads a module another shard
//! already compiled gets the same machine code; [`Runtime::compile_cached`] also keeps it on disk
//! between restarts.
//!
//! ## The artifact cache
//!
//! Compiling costs milliseconds for a small module and seconds for an aos one. With an artifact
//! path, the compiled module is written there (`<path>`, wasmtime's serialized form) beside a
//! sum file (`<path>.sum`: SHA-256 of the module's wasm bytes, then SHA-256 of the artifact),
//! and a later start loads it back by mapping the file instead of compiling. The artifact is
//! used only when both sums match (it was made from these very bytes and is whole) and wasmtime
//! accepts it (same wasmtime version and engine settings); otherwise the module is compiled
//! again and the files rewritten. Loading machine code is trusting it: the files live in the
//! node's data dir, written by the node, and are checked as above before they are mapped.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use sha2::{Digest, Sha256};

use wasmtime::{
    Config, Engine, ExternType, FuncType, InstanceAllocationStrategy, InstancePre, Linker, Module, Mutability,
    PoolingAllocationConfig, ValType, WasmFeatures,
};

use super::config::{ComputeConfig, ProcessLimits, WASM_PAGE_BYTES};
use super::instance::{ProcessInstance, Snapshot, StoreState};
use super::ComputeError;

/// The `Module-Format` of a freestanding module that uses only AO's C-level ABI and imports
/// nothing; Hewitt's samples use it.
pub const MODULE_FORMAT_WASM32: &str = "wasm32-unknown-unknown";

/// The node's compute runtime: one wasmtime `Engine` and its instance pool, shared by every
/// shard (cloning it is cheap and shares them).
///
/// Its configuration makes execution deterministic: fuel metering (AO's `Compute-Limit`), NaN
/// canonicalisation, no threads, no relaxed SIMD (whose results may differ by CPU), no wasm
/// backtraces in failure reasons. SIMD is on: aos modules need it.
#[derive(Clone)]
pub struct Runtime {
    engine: Engine,
    config: Arc<ComputeConfig>,
    counts: Arc<CompileCounts>,
    /// Modules compiled (or loaded) so far, by the SHA-256 of their wasm: each is compiled once
    /// per node, the first shard to need it compiling while the others wait for it.
    compiled: Arc<Mutex<HashMap<[u8; 32], CompileOnce>>>,
}

/// One module's compilation, shared by the shards that need it.
type CompileOnce = Arc<OnceLock<Result<Module, String>>>;

/// How modules were obtained since the runtime started.
#[derive(Debug, Default)]
pub struct CompileCounts {
    /// Compiled from wasm.
    pub compiled: AtomicU64,
    /// Loaded from the artifact cache.
    pub loaded: AtomicU64,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Runtime {
    /// Validates `config` and builds the engine; this reserves the whole instance pool's
    /// address space up front.
    pub fn new(config: ComputeConfig) -> Result<Runtime, ComputeError> {
        config.validate()?;
        let memory_bytes_max = usize::try_from(config.memory_bytes_max).map_err(|_| ComputeError::Config {
            reason: format!(
                "memory_bytes_max of {} does not fit this machine's address space",
                config.memory_bytes_max
            ),
        })?;
        let mut pool = PoolingAllocationConfig::default();
        pool.total_core_instances(config.instance_count_max)
            .total_memories(config.instance_count_max)
            .total_tables(config.instance_count_max)
            .max_memories_per_module(1)
            .max_tables_per_module(1)
            .max_memory_size(memory_bytes_max)
            .table_elements(config.table_elements_max as usize);

        let mut wasm = Config::new();
        wasm.allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
            .memory_init_cow(true)
            .consume_fuel(true)
            .cranelift_nan_canonicalization(true)
            .wasm_features(WasmFeatures::THREADS, false)
            .wasm_relaxed_simd(false)
            .wasm_simd(true)
            .wasm_multi_memory(false)
            // Failure reasons must be deterministic and cheap; a backtrace is neither.
            .wasm_backtrace_max_frames(None)
            .parallel_compilation(true);
        let engine = Engine::new(&wasm).map_err(|err| ComputeError::Config {
            reason: format!("wasmtime refused the engine configuration: {err:#}"),
        })?;
        Ok(Runtime {
            engine,
            config: Arc::new(config),
            counts: Arc::default(),
            compiled: Arc::default(),
        })
    }

    /// Modules compiled and loaded from the artifact cache since start.
    pub fn compile_counts(&self) -> (u64, u64) {
        (
            self.counts.compiled.load(Ordering::Relaxed),
            self.counts.loaded.load(Ordering::Relaxed),
        )
    }

    /// [`Runtime::compile`], keeping the machine code in `artifact` (a file path) between
    /// restarts: see "The artifact cache" above. A cache that cannot be read or written only
    /// costs a compilation (with a warning); the module is checked the same way either way.
    pub fn compile_cached(
        &self,
        wasm: &[u8],
        module_format: &str,
        artifact: &Path,
    ) -> Result<CompiledModule, ComputeError> {
        check_format(module_format)?;
        let source_sum = source_sum(wasm);
        let module = self.once(source_sum, || {
            if let Some(module) = self.load_artifact(artifact, &source_sum) {
                self.counts.loaded.fetch_add(1, Ordering::Relaxed);
                return Ok(module);
            }
            let module = self.compile_wasm(wasm)?;
            if let Err(error) = write_artifact(&module, artifact, &source_sum) {
                tracing::warn!(path = %artifact.display(), %error, "compiled module not cached");
            }
            Ok(module)
        })?;
        self.checked(source_sum, module, module_format, undo_in_place_possible(wasm))
    }

    /// [`Runtime::check`]; a module that fails it leaves the node-wide cache.
    fn checked(
        &self,
        source_sum: [u8; 32],
        module: Module,
        module_format: &str,
        globals_complete: bool,
    ) -> Result<CompiledModule, ComputeError> {
        let checked = self.check(module, module_format, globals_complete);
        if checked.is_err() {
            self.compiled
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&source_sum);
        }
        checked
    }

    /// The module of `source_sum`, made by `make` the first time any shard asks.
    fn once(
        &self,
        source_sum: [u8; 32],
        make: impl FnOnce() -> Result<Module, ComputeError>,
    ) -> Result<Module, ComputeError> {
        let cell = {
            let mut compiled = self.compiled.lock().unwrap_or_else(|e| e.into_inner());
            Arc::clone(compiled.entry(source_sum).or_default())
        };
        let made = cell
            .get_or_init(|| {
                make().map_err(|error| match error {
                    ComputeError::ModuleRefused { reason } => reason,
                    other => other.to_string(),
                })
            })
            .clone();
        if made.is_err() {
            // A failure is not kept: the next load of these bytes tries again.
            self.compiled
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&source_sum);
        }
        made.map_err(|reason| ComputeError::ModuleRefused { reason })
    }

    /// The module at `artifact` if its sums match `source_sum` and its bytes, and wasmtime takes it.
    fn load_artifact(&self, artifact: &Path, source_sum: &[u8; 32]) -> Option<Module> {
        let sums = std::fs::read(sum_path(artifact)).ok()?;
        if sums.len() != 64 || &sums[..32] != source_sum {
            return None;
        }
        let bytes = std::fs::read(artifact).ok()?;
        if Sha256::digest(&bytes).as_slice() != &sums[32..] {
            tracing::warn!(path = %artifact.display(), "cached module is damaged; compiling again");
            return None;
        }
        // SAFETY: the file is the node's own serialization of a module compiled from these very
        // wasm bytes (its sums match), and wasmtime checks that it was made by this version with
        // this engine's settings; nothing else writes into the data dir.
        match unsafe { Module::deserialize_file(&self.engine, artifact) } {
            Ok(module) => Some(module),
            Err(error) => {
                tracing::info!(path = %artifact.display(), error = %format!("{error:#}"), "cached module not usable here; compiling again");
                None
            }
        }
    }

    fn compile_wasm(&self, wasm: &[u8]) -> Result<Module, ComputeError> {
        let rewritten = export_hidden_globals(wasm);
        let module = Module::new(&self.engine, rewritten.as_deref().unwrap_or(wasm)).map_err(|err| {
            ComputeError::ModuleRefused {
                reason: format!("the module is not valid wasm: {err:#}"),
            }
        })?;
        self.counts.compiled.fetch_add(1, Ordering::Relaxed);
        Ok(module)
    }

    /// The configuration the runtime was built with.
    pub fn config(&self) -> &ComputeConfig {
        &self.config
    }

    /// Checks and compiles a module of the given `Module-Format`. Compiling costs milliseconds
    /// to seconds (an aos module); do it once per module per node and clone the result.
    ///
    /// Only [`MODULE_FORMAT_WASM32`] is accepted for now. Such a module imports nothing and
    /// exports `memory` (32-bit, 64 KiB pages, not shared), `malloc(i32) -> i32` and
    /// `handle(i32, i32) -> i32`; its exported mutable globals must be numeric so that
    /// snapshots can hold them.
    pub fn compile(&self, wasm: &[u8], module_format: &str) -> Result<CompiledModule, ComputeError> {
        check_format(module_format)?;
        let source_sum = source_sum(wasm);
        let module = self.once(source_sum, || self.compile_wasm(wasm))?;
        self.checked(source_sum, module, module_format, undo_in_place_possible(wasm))
    }

    /// The checks of a compiled module's imports and exports, then its `InstancePre`.
    fn check(
        &self,
        module: Module,
        module_format: &str,
        globals_complete: bool,
    ) -> Result<CompiledModule, ComputeError> {
        let refuse = |reason: String| ComputeError::ModuleRefused { reason };
        if let Some(import) = module.imports().next() {
            return Err(refuse(format!(
                "module format {module_format:?} provides no imports, but the module imports `{}.{}` ({})",
                import.module(),
                import.name(),
                extern_kind(&import.ty())
            )));
        }
        check_memory_export(&module).map_err(refuse)?;
        check_func_export(&module, "malloc", &[ValType::I32], &[ValType::I32]).map_err(refuse)?;
        check_func_export(&module, "handle", &[ValType::I32, ValType::I32], &[ValType::I32]).map_err(refuse)?;
        let global_names = mutable_global_names(&module).map_err(refuse)?;

        let linker = Linker::<StoreState>::new(&self.engine);
        let pre = linker
            .instantiate_pre(&module)
            .map_err(|err| refuse(format!("the module cannot be instantiated: {err:#}")))?;
        Ok(CompiledModule {
            inner: Arc::new(ModuleInner {
                pre,
                globals_complete,
                initial_memory: std::sync::OnceLock::new(),
                global_names,
                config: Arc::clone(&self.config),
            }),
        })
    }
}

/// A checked, compiled module, ready to instantiate; cheap to clone (an `Arc`).
#[derive(Clone)]
pub struct CompiledModule {
    inner: Arc<ModuleInner>,
}

impl std::fmt::Debug for CompiledModule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledModule")
            .field("global_names", &self.inner.global_names)
            .finish_non_exhaustive()
    }
}

/// What instances of one module share.
pub(super) struct ModuleInner {
    pub(super) pre: InstancePre<StoreState>,
    /// Export names of the module's mutable globals, in export order: the globals a
    /// [`Snapshot`] holds.
    pub(super) global_names: Vec<String>,
    /// Whether a failed message can be undone in place with the outcome of a rebuild (see
    /// [`undo_in_place_possible`]).
    pub(super) globals_complete: bool,
    pub(super) config: Arc<ComputeConfig>,
    /// The memory of a fresh instance (its copy-on-write image, start function run), kept on
    /// the host once the first snapshot is restored: a restore compares against it and writes
    /// only the pages that differ, without reading (faulting in) the instance's own pages.
    pub(super) initial_memory: std::sync::OnceLock<Box<[u8]>>,
}

impl CompiledModule {
    /// The names of the module's mutable globals (its own exports, then the hidden ones this
    /// node exported), in the order snapshots hold them.
    pub fn global_names(&self) -> &[String] {
        &self.inner.global_names
    }

    /// A fresh process instance (the module's initial memory, from its copy-on-write image),
    /// holding one pool slot until dropped. Fails with [`ComputeError::PoolExhausted`] when
    /// every slot is taken.
    pub fn instantiate(&self, limits: ProcessLimits) -> Result<ProcessInstance, ComputeError> {
        ProcessInstance::start(&self.inner, limits)
    }

    /// A fresh process instance whose memory (grown to the snapshot's size) and exported mutable
    /// globals are those of `snapshot`, taken from an instance of this module.
    pub fn instantiate_from(
        &self,
        limits: ProcessLimits,
        snapshot: &Snapshot,
    ) -> Result<ProcessInstance, ComputeError> {
        ProcessInstance::restore(&self.inner, limits, snapshot)
    }
}

fn check_format(module_format: &str) -> Result<(), ComputeError> {
    if module_format != MODULE_FORMAT_WASM32 {
        return Err(ComputeError::ModuleRefused {
            reason: format!(
                "module format {module_format:?} is not supported; this node runs {MODULE_FORMAT_WASM32:?} (emscripten formats are not supported yet)"
            ),
        });
    }
    Ok(())
}

fn sum_path(artifact: &Path) -> std::path::PathBuf {
    let mut name = artifact.as_os_str().to_owned();
    name.push(".sum");
    name.into()
}

/// Writes the artifact and its sums, each through a temporary file and a rename.
fn write_artifact(module: &Module, artifact: &Path, source_sum: &[u8; 32]) -> std::io::Result<()> {
    let bytes = module.serialize().map_err(std::io::Error::other)?;
    if let Some(dir) = artifact.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let replace = |path: &Path, contents: &[u8]| -> std::io::Result<()> {
        let mut temporary = path.as_os_str().to_owned();
        temporary.push(".new");
        std::fs::write(&temporary, contents)?;
        std::fs::rename(&temporary, path)
    };
    // The sums go last: until they are written, a half-written artifact is never trusted.
    let _ = std::fs::remove_file(sum_path(artifact));
    replace(artifact, &bytes)?;
    let mut sums = source_sum.to_vec();
    sums.extend_from_slice(&Sha256::digest(&bytes));
    replace(&sum_path(artifact), &sums)
}

/// A word for an import or export's kind, for error messages.
fn extern_kind(ty: &ExternType) -> &'static str {
    match ty {
        ExternType::Func(_) => "a function",
        ExternType::Global(_) => "a global",
        ExternType::Table(_) => "a table",
        ExternType::Memory(_) => "a memory",
        ExternType::Tag(_) => "a tag",
    }
}

fn check_memory_export(module: &Module) -> Result<(), String> {
    let memory = match module.get_export("memory") {
        Some(ExternType::Memory(memory)) => memory,
        Some(other) => return Err(format!("the export `memory` is {}, not a memory", extern_kind(&other))),
        None => return Err("the module does not export `memory`".to_string()),
    };
    if memory.is_64() {
        return Err("the exported `memory` is 64-bit; this format needs a 32-bit memory".to_string());
    }
    if memory.is_shared() {
        return Err("the exported `memory` is shared; threads are not supported".to_string());
    }
    if memory.page_size() != WASM_PAGE_BYTES {
        return Err(format!(
            "the exported `memory` has pages of {} bytes; only {WASM_PAGE_BYTES} are supported",
            memory.page_size()
        ));
    }
    Ok(())
}

fn check_func_export(module: &Module, name: &str, params: &[ValType], results: &[ValType]) -> Result<(), String> {
    let expected = FuncType::new(module.engine(), params.iter().cloned(), results.iter().cloned());
    match module.get_export(name) {
        Some(ExternType::Func(func)) if FuncType::eq(&func, &expected) => Ok(()),
        Some(ExternType::Func(func)) => Err(format!(
            "the export `{name}` has type {func}; the C-level ABI needs {expected}"
        )),
        Some(other) => Err(format!(
            "the export `{name}` is {}, not a function",
            extern_kind(&other)
        )),
        None => Err(format!(
            "the module does not export `{name}`; the C-level ABI needs {expected}"
        )),
    }
}

/// The export names of the module's mutable globals, all of which must be numeric.
fn mutable_global_names(module: &Module) -> Result<Vec<String>, String> {
    let mut names = Vec::new();
    for export in module.exports() {
        let ExternType::Global(global) = export.ty() else {
            continue;
        };
        if global.mutability() != Mutability::Var {
            continue;
        }
        match global.content() {
            ValType::I32 | ValType::I64 | ValType::F32 | ValType::F64 | ValType::V128 => {
                names.push(export.name().to_string());
            }
            other => {
                return Err(format!(
                    "the exported mutable global `{}` has type {other}, which a snapshot cannot hold",
                    export.name()
                ))
            }
        }
    }
    Ok(names)
}

/// What compiled modules are cached under: the SHA-256 of the wasm, salted with how it is
/// compiled (a module from before its hidden globals were exported is compiled again).
fn source_sum(wasm: &[u8]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(b"hewitt: mutable globals exported\n");
    hasher.update(wasm);
    hasher.finalize().into()
}

/// Export-name prefix of the mutable globals a module did not export itself.
pub const HIDDEN_GLOBAL_PREFIX: &str = "__hewitt_global_";

/// Whether a failed message of this module can be undone in place (memory and globals put
/// back, see `ProcessInstance::undo_message`) with the same outcome as a rebuild: every mutable
/// global is exported (by the module or by [`export_hidden_globals`]) and no instruction changes
/// state outside memory and globals (tables, passive segments).
pub(super) fn undo_in_place_possible(wasm: &[u8]) -> bool {
    let Some(hidden) = hidden_globals(wasm) else {
        return false;
    };
    if !hidden.complete || (!hidden.numeric.is_empty() && export_hidden_globals(wasm).is_none()) {
        return false;
    }
    for payload in wasmparser::Parser::new(0).parse_all(wasm) {
        let Ok(payload) = payload else { return false };
        if let wasmparser::Payload::CodeSectionEntry(body) = payload {
            let Ok(mut operators) = body.get_operators_reader() else {
                return false;
            };
            while !operators.eof() {
                let Ok(operator) = operators.read() else { return false };
                use wasmparser::Operator as O;
                if matches!(
                    operator,
                    O::TableSet { .. }
                        | O::TableGrow { .. }
                        | O::TableFill { .. }
                        | O::TableCopy { .. }
                        | O::TableInit { .. }
                        | O::ElemDrop { .. }
                        | O::DataDrop { .. }
                ) {
                    return false;
                }
            }
        }
    }
    true
}

/// The mutable globals a module defines without exporting them.
struct HiddenGlobals {
    /// Numeric ones (by global index), which [`export_hidden_globals`] exports.
    numeric: Vec<u32>,
    /// No other (reference-typed) mutable global is hidden.
    complete: bool,
}

/// Reads the module's globals and exports; `None` if it does not parse (compiling says why).
fn hidden_globals(wasm: &[u8]) -> Option<HiddenGlobals> {
    let (mut imported, mut defined, mut exported) = (0u32, Vec::new(), std::collections::HashSet::new());
    let mut prefix_taken = false;
    for payload in wasmparser::Parser::new(0).parse_all(wasm) {
        match payload.ok()? {
            wasmparser::Payload::ImportSection(section) => {
                for import in section.into_imports() {
                    if matches!(import.ok()?.ty, wasmparser::TypeRef::Global(_)) {
                        imported += 1;
                    }
                }
            }
            wasmparser::Payload::GlobalSection(section) => {
                for global in section {
                    defined.push(global.ok()?.ty);
                }
            }
            wasmparser::Payload::ExportSection(section) => {
                for export in section {
                    let export = export.ok()?;
                    prefix_taken |= export.name.starts_with(HIDDEN_GLOBAL_PREFIX);
                    if export.kind == wasmparser::ExternalKind::Global {
                        exported.insert(export.index);
                    }
                }
            }
            _ => {}
        }
    }
    let mut hidden = HiddenGlobals {
        numeric: Vec::new(),
        complete: true,
    };
    for (i, ty) in defined.iter().enumerate() {
        let index = imported + i as u32;
        if !ty.mutable || exported.contains(&index) {
            continue;
        }
        use wasmparser::ValType as V;
        match ty.content_type {
            V::I32 | V::I64 | V::F32 | V::F64 | V::V128 => hidden.numeric.push(index),
            V::Ref(_) => hidden.complete = false,
        }
    }
    if prefix_taken && !hidden.numeric.is_empty() {
        // The module uses the names this node would export under: leave it as it is.
        hidden.numeric.clear();
        hidden.complete = false;
    }
    Some(hidden)
}

/// The module with every numeric mutable global it defines exported (as
/// `__hewitt_global_<index>` when it did not export it itself), or `None` when there is none
/// to add. Exports change no code, no fuel and no behaviour; they let snapshots, hibernation and
/// in-place rollback read and restore every global, such as LLVM's `__stack_pointer`, which a
/// trap can leave moved. Modules this cannot parse are returned as they are (compiling them
/// reports why).
pub fn export_hidden_globals(wasm: &[u8]) -> Option<Vec<u8>> {
    use wasm_encoder::reencode::{utils, Error, Reencode};

    let hidden = hidden_globals(wasm)?.numeric;
    if hidden.is_empty() {
        return None;
    }

    struct AddExports {
        hidden: Vec<u32>,
    }
    impl Reencode for AddExports {
        type Error = std::convert::Infallible;

        fn parse_export_section(
            &mut self,
            exports: &mut wasm_encoder::ExportSection,
            section: wasmparser::ExportSectionReader<'_>,
        ) -> Result<(), Error<Self::Error>> {
            utils::parse_export_section(self, exports, section)?;
            for index in &self.hidden {
                exports.export(
                    &format!("{HIDDEN_GLOBAL_PREFIX}{index}"),
                    wasm_encoder::ExportKind::Global,
                    *index,
                );
            }
            Ok(())
        }
    }
    let mut module = wasm_encoder::Module::new();
    AddExports { hidden }
        .parse_core_module(&mut module, wasmparser::Parser::new(0), wasm)
        .ok()?;
    Some(module.finish())
}
