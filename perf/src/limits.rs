//! The limits every report is compared against, measured in the same run on the same machine
//! and disk (PERF.md: a figure without its limit means nothing on a shared, noisy machine):
//!
//! - memcpy bandwidth (a copy into a buffer already mapped);
//! - sequential O_DIRECT write bandwidth into a preallocated file, synced at the end;
//! - append + fdatasync latency at the log's batch sizes;
//! - a raw wasmtime loop on the very modules and messages the scenarios run: a default engine
//!   (no pooling, no fuel), the same three calls as AO's C ABI (`malloc` and copy the msg, the
//!   same for the env, `handle`), the output read up to its NUL. Beside it, the engine's own
//!   `ProcessInstance::handle` and the whole per-message path (`abi::msg_json`, `handle`,
//!   `abi::decode_result`), which tells whether the JSON-1 encoding matters.
//!
//! Plain std and libc I/O on purpose: a probe measures the device, not our code.

use std::ffi::CStr;
use std::fs::OpenOptions;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

use engine::abi::{decode_result, env_json, msg_json, Placement};
use engine::compute::{samples, ComputeConfig, Evaluation, ProcessLimits, Runtime, MODULE_FORMAT_WASM32};
use scheduler::data_item::DataItem;
use scheduler::signer::Signer;
use scheduler::tags::Tag;
use scheduler::{BlockHeight, HashChain, Nonce, ProcessId, Timestamp};
use serde::Serialize;

use crate::report::{histogram, record, Latency};
use crate::workload::{mix, Workload, EXCHANGE_RESTING_ORDERS};
use engine::client::ao_tags as ao;

const MIB: usize = 1024 * 1024;

/// How much the probes do; `smoke` only proves they work.
#[derive(Clone, Copy, Debug)]
pub struct LimitOptions {
    pub memcpy_bytes: usize,
    pub direct_bytes: usize,
    pub fdatasync_rounds: usize,
    pub wasm_calls: usize,
}

impl LimitOptions {
    pub fn full() -> LimitOptions {
        LimitOptions {
            memcpy_bytes: 256 * MIB,
            direct_bytes: 512 * MIB,
            fdatasync_rounds: 1000,
            wasm_calls: 20_000,
        }
    }

    pub fn smoke() -> LimitOptions {
        LimitOptions {
            memcpy_bytes: 8 * MIB,
            direct_bytes: 8 * MIB,
            fdatasync_rounds: 20,
            wasm_calls: 50,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Fdatasync {
    pub append_bytes: usize,
    pub latency: Latency,
    /// Syncs per second one thread gets: 1 / mean latency.
    pub per_s: f64,
}

/// One module's call costs, µs per message.
#[derive(Clone, Debug, Serialize)]
pub struct WasmCall {
    pub module: String,
    pub message: String,
    /// Default wasmtime engine, the same module and bytes: malloc + copy in, handle, read out.
    pub raw_wasmtime_us: f64,
    /// `ProcessInstance::handle` (pooled instance, fuel, bounds and UTF-8 checks).
    pub engine_handle_us: f64,
    /// `abi::msg_json` of the message (the JSON-1 encoding of msg; env is encoded once per
    /// process).
    pub encode_msg_us: f64,
    /// `abi::decode_result` of the output.
    pub decode_result_us: f64,
    pub msg_json_bytes: usize,
    pub output_bytes: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct Limits {
    pub memcpy_gb_per_s: f64,
    pub o_direct_write_gb_per_s: f64,
    pub o_direct_block_bytes: usize,
    pub o_direct_total_bytes: usize,
    pub fdatasync: Vec<Fdatasync>,
    pub wasm: Vec<WasmCall>,
}

impl Limits {
    /// The 4 KiB append + fdatasync figure, the floor under a single acknowledgement.
    pub fn fdatasync_4k(&self) -> &Fdatasync {
        self.fdatasync
            .iter()
            .find(|f| f.append_bytes == 4096)
            .unwrap_or(&self.fdatasync[0])
    }
}

/// Measures every limit, with scratch files in `dir`.
pub fn measure(dir: &Path, options: LimitOptions) -> Result<Limits, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut fdatasync = Vec::new();
    for append_bytes in [4096, 64 * 1024, MIB] {
        // A fifth of the rounds for 1 MiB appends: the figure settles sooner, and a full set
        // would write a GiB.
        let rounds = if append_bytes >= MIB {
            options.fdatasync_rounds.div_ceil(5)
        } else {
            options.fdatasync_rounds
        };
        let latencies = engine::probe::fdatasync_latencies(dir, rounds, append_bytes)
            .map_err(|e| format!("fdatasync probe in {}: {e}", dir.display()))?;
        let mut h = histogram();
        let total: Duration = latencies.iter().sum();
        for sample in &latencies {
            record(&mut h, *sample);
        }
        fdatasync.push(Fdatasync {
            append_bytes,
            latency: Latency::of(&h),
            per_s: latencies.len() as f64 / total.as_secs_f64(),
        });
    }
    // The bandwidth probe last: half a GiB of writes leaves the disk busy for a while, which
    // would show in the latency probes.
    let memcpy_gb_per_s = memcpy(options.memcpy_bytes);
    let block = MIB.min(options.direct_bytes);
    let o_direct_write_gb_per_s = o_direct_write(dir, options.direct_bytes, block)
        .map_err(|e| format!("O_DIRECT probe in {}: {e}", dir.display()))?;
    let wasm = vec![
        wasm_calls("counter", options.wasm_calls)?,
        wasm_calls("exchange", options.wasm_calls)?,
    ];
    Ok(Limits {
        memcpy_gb_per_s,
        o_direct_write_gb_per_s,
        o_direct_block_bytes: block,
        o_direct_total_bytes: options.direct_bytes,
        fdatasync,
        wasm,
    })
}

/// The best of five copies of `bytes` into a buffer already mapped, in GB/s.
fn memcpy(bytes: usize) -> f64 {
    let source = vec![0x5a_u8; bytes];
    let mut target = vec![0_u8; bytes];
    target.copy_from_slice(&source);
    let mut best = Duration::MAX;
    for _ in 0..5 {
        let began = Instant::now();
        target.copy_from_slice(std::hint::black_box(&source));
        best = best.min(began.elapsed());
    }
    std::hint::black_box(&target);
    bytes as f64 / best.as_secs_f64() / 1e9
}

/// Sequential O_DIRECT writes of `block` bytes into a file preallocated to `total` bytes, then
/// one fdatasync; GB/s over the whole.
fn o_direct_write(dir: &Path, total: usize, block: usize) -> std::io::Result<f64> {
    let path = dir.join(".hewitt-o-direct-probe");
    let file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(&path)?;
    let length = libc::off_t::try_from(total).map_err(|_| std::io::Error::other("size overflows off_t"))?;
    // SAFETY: a plain system call on an open file descriptor.
    let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, length) };
    if rc != 0 {
        return Err(std::io::Error::from_raw_os_error(rc));
    }
    file.sync_all()?;
    // O_DIRECT wants the buffer, offset and length aligned to the logical block (4 KiB covers
    // every device here).
    let mut buffer = vec![0xa5_u8; block + 4096];
    let offset = buffer.as_ptr().align_offset(4096);
    let aligned = &mut buffer[offset..offset + block];
    let began = Instant::now();
    let mut written = 0;
    while written + block <= total {
        file.write_all_at(aligned, written as u64)?;
        written += block;
    }
    file.sync_data()?;
    let seconds = began.elapsed().as_secs_f64();
    drop(file);
    std::fs::remove_file(&path)?;
    Ok(written as f64 / seconds / 1e9)
}

/// The messages a module's loop alternates between: two `Increment`s for the counter, two moves
/// of a resting order (after the exchange's book is built) for the exchange.
fn loop_messages(module: &str, signer: &Signer, process: ProcessId) -> (Vec<DataItem>, Vec<DataItem>) {
    let message = |tags: Vec<Tag>| signer.sign(Some(process.0), Some([7; 32]), ao("Message", tags), Vec::new());
    match module {
        "exchange" => {
            let book = (1..=EXCHANGE_RESTING_ORDERS)
                .map(|id| message(Workload::resting_order(id, mix(id) % 20)))
                .collect();
            let moves = [9_990, 9_980]
                .map(|price| {
                    message(vec![
                        Tag::new("Action", "Move"),
                        Tag::new("Order-Id", "1"),
                        Tag::new("Price", price.to_string()),
                    ])
                })
                .to_vec();
            (book, moves)
        }
        _ => {
            let increments = (0..2).map(|_| message(vec![Tag::new("Action", "Increment")])).collect();
            (Vec::new(), increments)
        }
    }
}

/// The module's three call costs on the same messages.
fn wasm_calls(module: &str, calls: usize) -> Result<WasmCall, String> {
    let wasm = samples::wasm(module).ok_or("no such sample")?;
    let signer = Signer::generate_ed25519();
    let module_item = signer.sign(
        None,
        None,
        ao("Module", vec![Tag::new("Module-Format", MODULE_FORMAT_WASM32)]),
        Vec::new(),
    );
    let process_item = signer.sign(None, None, ao("Process", vec![]), Vec::new());
    let process = ProcessId::from(process_item.id());
    let env = env_json(&process_item, &module_item);
    let mut placement = Placement {
        process,
        nonce: Nonce(1),
        timestamp: Timestamp(1_700_000_000_000),
        block_height: BlockHeight(1_393_008),
        hash_chain: HashChain([3; 32]),
    };
    let (setup, looped) = loop_messages(module, &signer, process);
    let mut encode = |item: &DataItem| {
        placement.nonce.0 += 1;
        msg_json(item, &placement, false)
    };
    let setup: Vec<Vec<u8>> = setup.iter().map(&mut encode).collect();
    let looped_json: Vec<Vec<u8>> = looped.iter().map(&mut encode).collect();

    // The raw loop: a default engine.
    let raw_us = {
        let engine = wasmtime::Engine::default();
        let compiled = wasmtime::Module::new(&engine, &wasm).map_err(|e| e.to_string())?;
        let mut store = wasmtime::Store::new(&engine, ());
        let instance = wasmtime::Instance::new(&mut store, &compiled, &[]).map_err(|e| e.to_string())?;
        let memory = instance.get_memory(&mut store, "memory").ok_or("no memory export")?;
        let malloc = instance
            .get_typed_func::<i32, i32>(&mut store, "malloc")
            .map_err(|e| e.to_string())?;
        let handle = instance
            .get_typed_func::<(i32, i32), i32>(&mut store, "handle")
            .map_err(|e| e.to_string())?;
        let mut call = |msg: &[u8]| -> Result<usize, String> {
            let mut put = |bytes: &[u8]| -> Result<i32, String> {
                let ptr = malloc
                    .call(&mut store, bytes.len() as i32 + 1)
                    .map_err(|e| e.to_string())?;
                let start = ptr as u32 as usize;
                let data = memory.data_mut(&mut store);
                data[start..start + bytes.len()].copy_from_slice(bytes);
                data[start + bytes.len()] = 0;
                Ok(ptr)
            };
            let (m, e) = (put(msg)?, put(&env)?);
            let out = handle.call(&mut store, (m, e)).map_err(|e| e.to_string())?;
            let output =
                CStr::from_bytes_until_nul(&memory.data(&store)[out as u32 as usize..]).map_err(|e| e.to_string())?;
            Ok(std::hint::black_box(output.to_bytes().to_vec()).len())
        };
        for msg in &setup {
            call(msg)?;
        }
        let began = Instant::now();
        for i in 0..calls {
            call(&looped_json[i % looped_json.len()])?;
        }
        began.elapsed().as_secs_f64() * 1e6 / calls.max(1) as f64
    };

    // The engine's instance, and the whole per-message path around it.
    let runtime = Runtime::new(ComputeConfig {
        instance_count_max: 4,
        ..ComputeConfig::default()
    })
    .map_err(|e| e.to_string())?;
    let compiled = runtime
        .compile(&wasm, MODULE_FORMAT_WASM32)
        .map_err(|e| e.to_string())?;
    let limits = ProcessLimits {
        memory_bytes_max: 256 << 20,
        fuel_per_message: 1_000_000_000,
    };
    let mut instance = compiled.instantiate(limits).map_err(|e| e.to_string())?;
    let output = |evaluation: Evaluation| match evaluation {
        Evaluation::Returned { output, .. } => Ok(output),
        Evaluation::Failed { reason, .. } => Err(format!("{module} failed: {reason}")),
    };
    for msg in &setup {
        output(instance.handle(msg, &env))?;
    }
    let began = Instant::now();
    let mut output_bytes = 0;
    for i in 0..calls {
        output_bytes = output(instance.handle(&looped_json[i % looped_json.len()], &env))?.len();
    }
    let handle_us = began.elapsed().as_secs_f64() * 1e6 / calls.max(1) as f64;
    let sample_output = output(instance.handle(&looped_json[0], &env))?;

    let began = Instant::now();
    for i in 0..calls {
        std::hint::black_box(msg_json(&looped[i % looped.len()], &placement, false));
    }
    let encode_us = began.elapsed().as_secs_f64() * 1e6 / calls.max(1) as f64;
    let began = Instant::now();
    for _ in 0..calls {
        std::hint::black_box(decode_result(&sample_output, 1));
    }
    let decode_us = began.elapsed().as_secs_f64() * 1e6 / calls.max(1) as f64;
    let message = looped[0].tag("Action").unwrap_or("?").to_owned();
    Ok(WasmCall {
        module: module.to_owned(),
        message,
        raw_wasmtime_us: raw_us,
        engine_handle_us: handle_us,
        encode_msg_us: encode_us,
        decode_result_us: decode_us,
        msg_json_bytes: looped_json[0].len(),
        output_bytes,
    })
}
