//! The shell around a shard's saved index (`crate::index`): reading it at start (before the log
//! is opened, so that the log can trust the sealed segments it vouches for), saving it when
//! enough was appended and at a clean stop, and checking, off the shard's thread, the segments
//! a start trusted.
//!
//! A start with an index that checks reads only the log after it, and opens the sealed segments
//! below it without reading their frames. Those segments are then read whole on glommio's
//! blocking pool while the node serves: damage found there stops the node's writes (ingress
//! answers 503 and `/ready` names the file and offset) exactly as a start that read them would
//! have refused to start.

use std::path::Path;
use std::rc::Rc;
use std::time::{Duration, Instant};

use scheduler::log::{Log, LogConfig, LogError};

use crate::index::{self, Files, Loaded, INDEX_DIR};
use crate::node::NodeState;

/// A save is due once `index.every_records` records were appended since the last, or this long
/// after it, if anything was appended.
const SAVE_INTERVAL: Duration = Duration::from_secs(60);
/// How often the driver looks whether a save is due.
const DRIVE_INTERVAL: Duration = Duration::from_millis(100);

/// A shard's index files, between saves.
pub struct IndexFiles {
    files: Option<Files>,
    /// The last save, or the last failed one (a failure waits [`SAVE_INTERVAL`] to try again).
    last: Instant,
    failed: bool,
}

/// Reads the saved index of the shard in `shard_dir`, if there is one that reads back.
pub fn read(shard_dir: &Path) -> Option<Loaded> {
    match index::load(&shard_dir.join(INDEX_DIR)) {
        Ok(loaded) => loaded,
        Err(error) => {
            tracing::warn!(%error, "saved index unreadable: the log is read whole");
            None
        }
    }
}

/// Opens the log in `log_dir`, trusting the sealed segments `loaded` vouches for, and checks
/// `loaded` against it. When it does not describe the log (a segment ends elsewhere, the record
/// it ends with differs), it is dropped and the segments it vouched for are checked now, as a
/// plain open would have.
pub fn open_log(log_dir: &Path, config: LogConfig, loaded: &mut Option<Loaded>) -> Result<Log, LogError> {
    let trusted = loaded
        .as_ref()
        .map(|l| l.commit.sealed_ends.clone())
        .unwrap_or_default();
    let mut log = Log::open_trusting(log_dir, config, &trusted)?;
    let mismatch = match (log.trust_failed(), loaded.as_ref()) {
        (true, Some(_)) => Some("sealed segments do not end where it says".to_owned()),
        (_, Some(loaded)) => loaded.matches(&log).err(),
        _ => None,
    };
    if let Some(reason) = mismatch {
        tracing::warn!(%reason, "saved index does not match the log: the log is read whole");
        *loaded = None;
        log.check_trusted()?;
    }
    Ok(log)
}

/// At start, before the log is read back: loads the saved index into the shard (returning
/// where the log must be read from) and opens the index files for the saves to come.
pub fn load(state: &Rc<NodeState>, loaded: Option<Loaded>) -> Result<scheduler::log::Lsn, crate::node::StartError> {
    let began = Instant::now();
    let mut from = scheduler::log::Lsn(0);
    let mut used = None;
    if let Some(loaded) = loaded {
        match state.shard.borrow_mut().load_index(&loaded) {
            Ok(to) => {
                tracing::info!(
                    read_from = to.0,
                    runs = loaded.runs.len(),
                    ms = began.elapsed().as_millis() as u64,
                    "saved index loaded"
                );
                from = to;
                used = Some(loaded);
            }
            Err(error) => {
                // Whatever failed (the index, or the log where the index pointed), a full read
                // decides: it starts from an empty shard and checks every segment.
                tracing::warn!(%error, "saved index not used: the log is read whole");
                let mut shard = state.shard.borrow_mut();
                shard.reset_index();
                shard.with_log(|log| log.check_trusted())?;
            }
        }
    }
    let dir = state.data_dir().join(INDEX_DIR);
    let files = match Files::open(&dir, used.as_ref()) {
        Ok(files) => Some(files),
        Err(error) => {
            tracing::warn!(%error, "index files cannot be written: every start reads the log whole");
            None
        }
    };
    *state.index_files().borrow_mut() = Some(IndexFiles {
        files,
        last: Instant::now(),
        failed: false,
    });
    Ok(from)
}

/// Reads, on the blocking pool, the sealed segments the start trusted; damage found there stops
/// the node's writes with the file and offset. Until it is done, those segments are not packed.
pub fn check_trusted(state: &Rc<NodeState>) {
    let trusted = state.shard.borrow().with_log(|log| log.trusted_ends());
    if trusted.is_empty() {
        return;
    }
    let state = Rc::clone(state);
    glommio::spawn_local(tracing::Instrument::in_current_span(async move {
        let (dir, segment_bytes) = {
            let shard = state.shard.borrow();
            (shard.log_dir(), shard.log_config().segment_bytes)
        };
        let began = Instant::now();
        let segments = trusted.len();
        let checked = glommio::executor()
            .spawn_blocking(move || scheduler::log::check_sealed(&dir, segment_bytes, &trusted))
            .await;
        match checked {
            Ok(()) => {
                state.shard.borrow().with_log(|log| log.trusted_checked());
                tracing::info!(
                    segments,
                    ms = began.elapsed().as_millis() as u64,
                    "log segments below the saved index checked"
                )
            }
            Err(error) => {
                tracing::error!(%error, "log damaged below the saved index: writes stop");
                state.fail(format!("log damaged: {error}"));
            }
        }
    }))
    .detach();
}

/// Starts the task that saves the index whenever a save is due.
pub fn start(state: &Rc<NodeState>) {
    let state = Rc::clone(state);
    glommio::spawn_local(tracing::Instrument::in_current_span(async move {
        loop {
            glommio::timer::sleep(DRIVE_INTERVAL).await;
            let unsaved = state.shard.borrow().index_unsaved();
            let last = state.index_files().borrow().as_ref().map(|f| (f.last, f.failed));
            let Some((last, failed)) = last else { return };
            let waited = last.elapsed() >= SAVE_INTERVAL;
            if (unsaved >= state.index_every_records() && !failed) || (unsaved > 0 && waited) {
                if let Err(error) = save(&state).await {
                    tracing::warn!(%error, "index not saved: the next start reads more of the log");
                }
            }
        }
    }))
    .detach();
}

/// Saves the index now, if anything was appended since the last save.
pub async fn save(state: &Rc<NodeState>) -> Result<(), String> {
    if state.failure().is_some() {
        return Ok(());
    }
    let _one = state.index_saving().acquire_permit(1).await;
    let Some(files) = state.index_files().borrow_mut().as_mut().and_then(|f| f.files.take()) else {
        return Ok(());
    };
    let Some(save) = state.shard.borrow_mut().index_save() else {
        put_back(state, files, false, false);
        return Ok(());
    };
    if let Err(error) = state.committer.wait_durable(save.last).await {
        state.shard.borrow_mut().index_saved(Err(save));
        put_back(state, files, true, false);
        return Err(format!("the log did not become durable: {error}"));
    }
    let runs = state.shard.borrow().index_runs();
    let began = Instant::now();
    let records = save.records;
    let (files, save, saved) = glommio::executor()
        .spawn_blocking(move || {
            let (mut files, mut save) = (files, save);
            let saved = files.save(&mut save, runs);
            (files, save, saved)
        })
        .await;
    let outcome = match saved {
        Ok(runs) => {
            tracing::debug!(
                records,
                runs = runs.len(),
                ms = began.elapsed().as_millis() as u64,
                "index saved"
            );
            state.shard.borrow_mut().index_saved(Ok(runs));
            Ok(())
        }
        Err(error) => {
            state.shard.borrow_mut().index_saved(Err(save));
            Err(error.to_string())
        }
    };
    put_back(state, files, true, outcome.is_ok());
    outcome
}

/// Returns the files after a save; `attempted`: a save was written (`saved`: and committed).
fn put_back(state: &NodeState, files: Files, attempted: bool, saved: bool) {
    if let Some(index) = state.index_files().borrow_mut().as_mut() {
        index.files = Some(files);
        if attempted {
            index.last = Instant::now();
            index.failed = !saved;
        }
    }
}
