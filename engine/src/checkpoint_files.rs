//! The shell around a shard's checkpoints: reading them back at start, taking one when enough
//! was evaluated (by count, fuel or time) and at a clean stop, and the file I/O, which runs on
//! glommio's blocking pool so that the shard's thread keeps serving.
//!
//! A checkpoint is taken in chunks (a few MB of process records each, the shard serving between
//! them), then committed: once the log is durable to where the shard stood and the results file
//! is synced, the commit record is appended and synced. Processes evaluated while the chunks are
//! written are simply written again by the next checkpoint (see `crate::checkpoint` for why such
//! a checkpoint is consistent). When the file has grown to several times its last whole rewrite,
//! the next checkpoint writes every process to a new file that replaces it.

use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use crate::checkpoint::{self, ResultsWriter};
use crate::node::{NodeState, StartError};

/// The checkpoints file of a shard's data dir.
pub const CHECKPOINTS_FILE: &str = "checkpoints";
/// The results file of a shard's data dir.
pub const RESULTS_FILE: &str = "results";

/// About the bytes of process records taken in one turn of the shard.
const CHUNK_BYTES: usize = 4 << 20;
/// The file is rewritten whole once it is this many times its last whole size (and at least
/// [`REWRITE_BYTES_MIN`]).
const REWRITE_FACTOR: u64 = 4;
const REWRITE_BYTES_MIN: u64 = 64 << 20;
/// How often the driver looks whether a checkpoint is due.
const DRIVE_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);

/// A shard's open checkpoints file.
pub struct Files {
    path: PathBuf,
    file: Arc<File>,
    /// Bytes in the file, and what it held after its last whole rewrite.
    size: u64,
    whole_size: u64,
    generation: u64,
    last: Instant,
    /// A checkpoint failed part way: the next one rewrites the file whole (what the failed one
    /// appended may be torn, and the processes it wrote are marked written).
    broken: bool,
}

fn data_dir_error(path: PathBuf) -> impl FnOnce(checkpoint::CheckpointError) -> StartError {
    move |error| StartError::DataDir {
        path,
        source: std::io::Error::other(error.to_string()),
    }
}

/// At start, after the log is read back: resumes the shard from its checkpoint (unless
/// checkpoints are off or a replay from genesis was asked for) and opens the files for the
/// checkpoints to come. A checkpoint that cannot be used is reported and left behind: the log
/// is replayed from genesis instead.
pub fn resume(state: &Rc<NodeState>) -> Result<(), StartError> {
    let config = state.checkpoint_config();
    if !config.enabled() {
        return Ok(());
    }
    let path = state.data_dir().join(CHECKPOINTS_FILE);
    let results_path = state.data_dir().join(RESULTS_FILE);
    let loaded = if config.from_genesis {
        tracing::info!("replaying from genesis as asked: the checkpoints are started over");
        None
    } else {
        match checkpoint::load(&path) {
            Ok(loaded) => loaded,
            Err(error) => {
                tracing::warn!(%error, "checkpoints unreadable: replaying from genesis");
                None
            }
        }
    };
    let (mut end, mut results_offset, mut generation, mut whole_size) = (0, 0, 0, 0);
    if let Some(loaded) = loaded {
        if let Some(damage) = &loaded.damage {
            tracing::warn!(%damage, "checkpoint damaged: resuming from its last good commit");
        }
        let (commit, loaded_end, records) = (loaded.commit, loaded.end, loaded.process_bytes);
        let began = Instant::now();
        match state.shard.borrow_mut().apply_checkpoint(loaded, &results_path) {
            Ok(spared) => {
                let commit = commit.expect("applied checkpoints have a commit");
                (end, results_offset, generation, whole_size) =
                    (loaded_end, commit.results_offset, commit.generation, records);
                tracing::info!(
                    generation,
                    messages_spared = spared,
                    ms = began.elapsed().as_millis() as u64,
                    "resumed from checkpoint"
                );
            }
            Err(reason) if commit.is_none() => tracing::debug!(%reason, "no checkpoint committed yet"),
            Err(reason) => tracing::warn!(%reason, "checkpoint not used: replaying from genesis"),
        }
    }
    let file = checkpoint::open_checkpoints(&path, end).map_err(data_dir_error(path.clone()))?;
    let size = end.max(8);
    let writer = ResultsWriter::open(&results_path, results_offset).map_err(data_dir_error(results_path))?;
    state.shard.borrow_mut().set_results(writer);
    *state.checkpoints().borrow_mut() = Some(Files {
        path,
        file: Arc::new(file),
        size,
        whole_size: whole_size.max(size),
        generation,
        last: Instant::now(),
        broken: false,
    });
    Ok(())
}

/// Starts the task that takes a checkpoint whenever one is due.
pub fn start(state: &Rc<NodeState>) {
    if state.checkpoints().borrow().is_none() {
        return;
    }
    let state = Rc::clone(state);
    glommio::spawn_local(tracing::Instrument::in_current_span(async move {
        loop {
            glommio::timer::sleep(DRIVE_INTERVAL).await;
            if !due(&state) {
                continue;
            }
            if let Err(error) = take(&state).await {
                tracing::warn!(%error, "checkpoint failed: the next start replays further");
            }
            if state.shard.borrow().checkpoints_failed().is_some() {
                return;
            }
        }
    }))
    .detach();
}

fn due(state: &NodeState) -> bool {
    let config = state.checkpoint_config();
    let (evaluations, gas) = state.shard.borrow().since_checkpoint();
    if evaluations == 0 {
        return false;
    }
    let last = state.checkpoints().borrow().as_ref().map(|f| f.last);
    (config.every_messages > 0 && evaluations >= config.every_messages)
        || (config.every_gas > 0 && gas >= config.every_gas)
        || (config.every_seconds > 0 && last.is_some_and(|l| l.elapsed().as_secs() >= config.every_seconds))
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, checkpoint::CheckpointError> + Send + 'static,
) -> Result<T, String> {
    glommio::executor()
        .spawn_blocking(work)
        .await
        .map_err(|e| e.to_string())
}

fn append(
    file: &Arc<File>,
    path: &std::path::Path,
    bytes: Vec<u8>,
) -> impl FnOnce() -> Result<(), checkpoint::CheckpointError> {
    let (file, path) = (Arc::clone(file), path.to_owned());
    move || {
        (&*file)
            .write_all(&bytes)
            .map_err(|source| checkpoint::CheckpointError::Io { path, source })
    }
}

/// Takes a checkpoint now (if checkpoints are on and anything was evaluated since the last).
pub async fn take(state: &Rc<NodeState>) -> Result<(), String> {
    let _one = state.checkpointing().acquire_permit(1).await;
    let taken = take_one(state).await;
    if taken.is_err() {
        if let Some(files) = state.checkpoints().borrow_mut().as_mut() {
            files.broken = true;
        }
    }
    taken
}

async fn take_one(state: &Rc<NodeState>) -> Result<(), String> {
    let (path, file, whole) = {
        let files = state.checkpoints().borrow();
        let Some(files) = files.as_ref() else { return Ok(()) };
        let whole = files.broken || files.size > (files.whole_size * REWRITE_FACTOR).max(REWRITE_BYTES_MIN);
        (files.path.clone(), Arc::clone(&files.file), whole)
    };
    if state.shard.borrow().since_checkpoint().0 == 0 && !whole {
        return Ok(());
    }
    // A whole rewrite goes to a new file; otherwise the records are appended, and count only
    // once their commit follows them.
    let target = if whole {
        let path = path.clone();
        Arc::new(blocking(move || checkpoint::begin_replacement(&path)).await?)
    } else {
        file
    };
    let target_path = if whole {
        checkpoint::replacement_path(&path)
    } else {
        path.clone()
    };
    let mut written = if whole { 8 } else { 0 };
    let mut cursor = 0;
    loop {
        let mut chunk = Vec::with_capacity(CHUNK_BYTES + (64 << 10));
        let more = state
            .shard
            .borrow_mut()
            .checkpoint_chunk(&mut cursor, whole, &mut chunk, CHUNK_BYTES);
        if !chunk.is_empty() {
            written += chunk.len() as u64;
            blocking(append(&target, &target_path, chunk)).await?;
        }
        if !more {
            break;
        }
        futures_lite::future::yield_now().await;
    }
    let generation = state.checkpoints().borrow().as_ref().map_or(0, |f| f.generation) + 1;
    let mut commit = Vec::new();
    let Some((log_end, results)) = state.shard.borrow_mut().checkpoint_commit(generation, &mut commit) else {
        return Err(state
            .shard
            .borrow()
            .checkpoints_failed()
            .unwrap_or("checkpoints are off")
            .to_owned());
    };
    if log_end.0 > 0 {
        state
            .committer
            .wait_durable(scheduler::log::Lsn(log_end.0 - 1))
            .await
            .map_err(|e| format!("the log did not become durable: {e}"))?;
    }
    written += commit.len() as u64;
    let sync = {
        let (target, target_path, path) = (Arc::clone(&target), target_path.clone(), path.clone());
        move || {
            let io = |path: &std::path::Path| {
                let path = path.to_owned();
                move |source| checkpoint::CheckpointError::Io { path, source }
            };
            results.sync_data().map_err(io(&path.with_file_name(RESULTS_FILE)))?;
            (&*target).write_all(&commit).map_err(io(&target_path))?;
            if whole {
                checkpoint::finish_replacement(&path, &target)
            } else {
                target.sync_data().map_err(io(&target_path))
            }
        }
    };
    blocking(sync).await?;
    state.shard.borrow_mut().checkpoint_committed();
    let mut files = state.checkpoints().borrow_mut();
    let files = files.as_mut().expect("checkpoints stay open");
    files.generation = generation;
    files.last = Instant::now();
    if whole {
        files.file = target;
        files.size = written;
        files.whole_size = written;
        files.broken = false;
    } else {
        files.size += written;
    }
    tracing::debug!(generation, bytes = written, whole, "checkpoint committed");
    Ok(())
}
