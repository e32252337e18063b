//! Uploads to Arweave through a bundler: every record of the log (modules, processes, messages
//! and the node's assignments) and the node's `Scheduler-Location` item (AO.md, "Arweave, where
//! it appears"). Log items travel in ANS-104 bundles (up to 512 items or 1 MiB each) signed by
//! the node, as AO's scheduler uploads them: one request carries many items.
//!
//! Durability stays local: a message is acknowledged once the log holds it, never after an
//! upload. The log itself is the upload queue. A cursor (`upload/cursor` in the data dir: the
//! log position up to which everything was accepted) moves forward only after the bundler took
//! every item before it, and is written with a rename after an fdatasync, so after a crash the
//! uploader starts again at the last saved cursor: an item may be uploaded twice (a bundler
//! answers the same id idempotently), none is skipped. The records are read from the log's
//! mmaps, only up to what is durable, in batches; each batch is uploaded on
//! `arweave.upload_connections` keep-alive connections at once and the cursor passes it once
//! all of it is accepted. A node busier than the bundler takes builds an upload backlog
//! (`hewitt_upload_lag_bytes`) that it works off when load drops.
//!
//! Errors: a connection failure, a timeout, a 5xx, 408 or 429 is retried with exponential
//! backoff (100 ms doubling to 30 s), forever, with a warning once an item failed three times
//! and at each doubling after; the backlog
//! shows in `hewitt_upload_lag_bytes`. A 400, 413 or 422 means the bundler refuses the item
//! itself: it is logged as an error with the bundler's answer, counted, and passed over, so that
//! one refused item cannot stop every later upload.
//!
//! The client (`crate::outbound`) speaks plain HTTP/1.1; a bundler behind HTTPS is reached
//! through a local TLS proxy.

use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use hyper::body::Bytes;
use scheduler::data_item::DataItem;
use scheduler::log::Lsn;
use scheduler::tags::Tag;

use crate::node::NodeState;
use crate::outbound::{call, Endpoint, Sender};

/// Records read from the log per batch.
const BATCH_RECORDS: usize = 256;
/// First wait before a retry; doubled at each failure of the same item, up to `BACKOFF_MAX`.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// How often the cursor is saved while uploads go on (and whenever the uploader goes idle).
const SAVE_INTERVAL: Duration = Duration::from_secs(1);
/// How long an idle uploader waits before it looks at the log again.
const IDLE_POLL: Duration = Duration::from_millis(20);

/// How an upload ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Accepted,
    /// The bundler refused the item itself (400, 413, 422); retrying cannot help.
    Refused,
}

/// Uploads one data item (`id` for the log lines), retrying until the bundler accepts or refuses it.
async fn upload(state: &NodeState, slot: &mut Option<Sender>, endpoint: &Endpoint, id: &str, body: Bytes) -> Outcome {
    let mut backoff = BACKOFF_MIN;
    let mut failures = 0u32;
    loop {
        let sent = call(
            slot,
            endpoint,
            http::Method::POST,
            "/tx/arweave",
            Some(("application/octet-stream", body.clone())),
            64 << 10,
        )
        .await;
        let failure = match sent.map(|(status, answer)| {
            (
                status,
                String::from_utf8_lossy(&answer[..answer.len().min(512)]).into_owned(),
            )
        }) {
            Ok((status, _)) if status.is_success() => {
                if failures > 0 {
                    tracing::info!(%id, failures, "upload accepted after retries");
                }
                state.metrics.uploaded("accepted");
                return Outcome::Accepted;
            }
            Ok((status, answer)) if matches!(status.as_u16(), 400 | 413 | 422) => {
                tracing::error!(%id, %status, %answer, "the bundler refuses this item; it is not uploaded");
                state.metrics.uploaded("refused");
                return Outcome::Refused;
            }
            Ok((status, answer)) => format!("bundler answered {status}: {answer}"),
            Err(error) => error,
        };
        failures += 1;
        state.metrics.uploaded("retried");
        // A flaky bundler fails single requests all the time: warn only when one item keeps failing.
        if failures == 3 || (failures > 3 && failures.is_power_of_two()) {
            tracing::warn!(%id, failures, retry_in = ?backoff, %failure, "upload keeps failing; retrying");
        } else {
            tracing::debug!(%id, failures, retry_in = ?backoff, %failure, "upload failed; retrying");
        }
        glommio::timer::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Uploads `items` on up to `slots.len()` connections at once; returns when every item is
/// accepted or refused.
async fn upload_all(state: &Rc<NodeState>, slots: &mut [Option<Sender>], endpoint: &Endpoint, items: Vec<DataItem>) {
    let mut lanes: Vec<Vec<DataItem>> = (0..slots.len()).map(|_| Vec::new()).collect();
    for (index, item) in items.into_iter().enumerate() {
        lanes[index % slots.len()].push(item);
    }
    let mut tasks = Vec::new();
    for (lane, slot) in lanes.into_iter().zip(slots.iter_mut()) {
        if lane.is_empty() {
            continue;
        }
        let mut taken = slot.take();
        let state = Rc::clone(state);
        let endpoint = endpoint.clone();
        let task = crate::outbound::spawn_here(async move {
            for item in lane {
                let id = item.id().to_string();
                upload(&state, &mut taken, &endpoint, &id, Bytes::from(item.to_bytes())).await;
            }
            taken
        });
        tasks.push((task, slot));
    }
    for (task, slot) in tasks {
        *slot = task.await;
    }
}

/// Modules are in every shard's log (any shard may spawn from them), and shard 0 uploads them:
/// another shard drops from `items` each module shard 0 holds durably, and uploads the others
/// (a load that failed on shard 0), as it does any module when shard 0 cannot tell. Shard 0 is
/// asked for a while ([`MODULE_ASKS`] times, [`MODULE_ASK_WAIT`] apart): a load is logged by
/// every shard at once, and shard 0's copy may become durable a little after this shard's.
async fn leave_modules_to_shard_zero(state: &NodeState, items: Vec<DataItem>) -> Vec<DataItem> {
    if state.mesh.index == 0 {
        return items;
    }
    let mut kept = Vec::with_capacity(items.len());
    'items: for item in items {
        if item.tag("Type") == Some("Module") {
            let module = scheduler::ModuleId::from(item.id());
            for ask in 0..MODULE_ASKS {
                if ask > 0 {
                    glommio::timer::sleep(MODULE_ASK_WAIT).await;
                }
                if let crate::mesh::Asked::Found(_) = state.mesh.find_module([0], module).await {
                    continue 'items;
                }
            }
        }
        kept.push(item);
    }
    kept
}

/// How often, and how far apart, a shard asks shard 0 whether it holds a module to upload.
const MODULE_ASKS: u32 = 10;
const MODULE_ASK_WAIT: Duration = Duration::from_millis(100);

/// Most items in one bundle, and most bytes (the node signs each bundle on its own thread: the
/// deep hash of its data costs about 2 ms a MiB).
const BUNDLE_ITEMS_MAX: usize = 512;
const BUNDLE_BYTES_MAX: usize = 1 << 20;

/// Packs `items` into ANS-104 bundles (`scheduler::bundle`), each the data of a data item the
/// node signs, as AO's scheduler uploads: one request carries many items. An item larger than
/// a bundle's bound travels in a bundle of its own.
fn bundle(state: &NodeState, items: Vec<DataItem>) -> Vec<DataItem> {
    let mut bundles = Vec::new();
    let mut entries: Vec<(Vec<u8>, [u8; 32])> = Vec::new();
    let mut bytes = 0;
    let seal = |entries: &mut Vec<(Vec<u8>, [u8; 32])>, bundles: &mut Vec<DataItem>| {
        if entries.is_empty() {
            return;
        }
        let data = scheduler::bundle::encode(entries);
        entries.clear();
        let anchor = crate::client::fresh_anchor();
        let signed = state
            .shard
            .borrow()
            .signer()
            .sign(None, Some(anchor), scheduler::bundle::bundle_tags(), data);
        bundles.push(signed);
    };
    for item in items {
        let encoded = item.to_bytes();
        if !entries.is_empty() && (entries.len() == BUNDLE_ITEMS_MAX || bytes + encoded.len() > BUNDLE_BYTES_MAX) {
            seal(&mut entries, &mut bundles);
            bytes = 0;
        }
        bytes += encoded.len();
        entries.push((encoded, item.id().0));
    }
    seal(&mut entries, &mut bundles);
    bundles
}

/// The saved cursor: 8 bytes of log position and a CRC32C of them.
pub fn encode_cursor(lsn: Lsn) -> Vec<u8> {
    let mut bytes = lsn.0.to_le_bytes().to_vec();
    bytes.extend_from_slice(&crc32c::crc32c(&lsn.0.to_le_bytes()).to_le_bytes());
    bytes
}

fn decode_cursor(bytes: &[u8]) -> Option<Lsn> {
    let raw: [u8; 8] = bytes.get(..8)?.try_into().ok()?;
    let crc: [u8; 4] = bytes.get(8..12)?.try_into().ok()?;
    (bytes.len() == 12 && crc32c::crc32c(&raw) == u32::from_le_bytes(crc)).then(|| Lsn(u64::from_le_bytes(raw)))
}

/// Reads the saved cursor; a missing one starts at the beginning of the log, and so does an
/// unreadable one (with a warning): uploading again is safe, skipping is not.
pub fn read_cursor(dir: &Path) -> Lsn {
    let path = dir.join("cursor");
    match std::fs::read(&path) {
        Ok(bytes) => decode_cursor(&bytes).unwrap_or_else(|| {
            tracing::warn!(path = %path.display(), "upload cursor is damaged; uploading the log again from its start");
            Lsn(0)
        }),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Lsn(0),
        Err(error) => {
            tracing::warn!(path = %path.display(), %error, "upload cursor unreadable; uploading the log again from its start");
            Lsn(0)
        }
    }
}

/// Replaces `dir/name` with `bytes` durably: a new file, fdatasync, rename over the old one,
/// sync of the directory. A crash leaves the old file or the new one, never a mix.
pub async fn replace_file(dir: &Path, name: &str, bytes: Vec<u8>) -> Result<(), String> {
    let temporary = dir.join(format!("{name}.new"));
    let mut file = glommio::io::BufferedFile::create(&temporary)
        .await
        .map_err(|e| format!("{}: {e}", temporary.display()))?;
    let written = async {
        file.write_at(bytes, 0).await?;
        file.fdatasync().await?;
        file.rename(dir.join(name)).await?;
        Ok::<(), glommio::GlommioError<()>>(())
    }
    .await;
    let _ = file.close().await;
    written.map_err(|e| format!("writing {name} in {}: {e}", dir.display()))?;
    let directory = glommio::io::Directory::open(dir)
        .await
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    directory.sync().await.map_err(|e| format!("{}: {e}", dir.display()))?;
    let _ = directory.close().await;
    Ok(())
}

async fn save_cursor(dir: &Path, lsn: Lsn) -> Result<(), String> {
    replace_file(dir, "cursor", encode_cursor(lsn)).await
}

/// Uploads the log to the bundler at `endpoint`, from the cursor saved in `dir` onwards, for as
/// long as the node runs.
pub async fn run(state: Rc<NodeState>, endpoint: Endpoint, dir: PathBuf, connections: usize) {
    if let Err(error) = std::fs::create_dir_all(&dir) {
        tracing::error!(dir = %dir.display(), %error, "no upload directory: nothing will be uploaded");
        return;
    }
    let mut cursor = read_cursor(&dir);
    let end = state.shard.borrow().log_end();
    if cursor > end {
        // The log is shorter than what was uploaded (`hewitt log repair` cut it): upload it all
        // again rather than skip what is appended from now on.
        tracing::warn!(
            cursor = cursor.0,
            log_end = end.0,
            "upload cursor is past the end of the log; uploading from its start"
        );
        cursor = Lsn(0);
    }
    let mut saved = cursor;
    let mut last_save = Instant::now();
    let mut slots: Vec<Option<Sender>> = (0..connections.max(1)).map(|_| None).collect();
    tracing::info!(bundler = %endpoint.authority, from = cursor.0, "uploading the log");
    loop {
        let batch = state.shard.borrow().upload_items(cursor, BATCH_RECORDS);
        let (items, next) = match batch {
            Ok(batch) => batch,
            Err(error) => {
                tracing::error!(%error, at = cursor.0, "cannot read the log to upload it; retrying in a second");
                glommio::timer::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let items = leave_modules_to_shard_zero(&state, items).await;
        let durable = state.shard.borrow().durable_lsn();
        state.metrics.upload_lag(durable.0.saturating_sub(cursor.0));
        if next == cursor {
            if saved != cursor {
                match save_cursor(&dir, cursor).await {
                    Ok(()) => saved = cursor,
                    Err(error) => tracing::warn!(%error, "upload cursor not saved; uploads may repeat after a restart"),
                }
                last_save = Instant::now();
            }
            glommio::timer::sleep(IDLE_POLL).await;
            continue;
        }
        let bundles = bundle(&state, items);
        upload_all(&state, &mut slots, &endpoint, bundles).await;
        cursor = next;
        if last_save.elapsed() >= SAVE_INTERVAL {
            match save_cursor(&dir, cursor).await {
                Ok(()) => saved = cursor,
                Err(error) => tracing::warn!(%error, "upload cursor not saved; uploads may repeat after a restart"),
            }
            last_save = Instant::now();
        }
    }
}

/// The node's `Scheduler-Location` item: where clients reach the scheduler at this address.
pub fn scheduler_location(state: &NodeState, url: &str, ttl_ms: u64) -> DataItem {
    let tags = vec![
        Tag::new("Data-Protocol", "ao"),
        Tag::new("Variant", "ao.TN.1"),
        Tag::new("Type", "Scheduler-Location"),
        Tag::new("Url", url),
        Tag::new("Time-To-Live", ttl_ms.to_string()),
    ];
    let anchor = crate::client::fresh_anchor();
    state.shard.borrow().signer().sign(None, Some(anchor), tags, Vec::new())
}

/// Publishes the node's `Scheduler-Location` through the bundler at start and again after every
/// half of its `Time-To-Live`, for as long as the node runs.
pub async fn publish_location(state: Rc<NodeState>, endpoint: Endpoint, url: String, ttl_ms: u64) {
    let mut slot = None;
    loop {
        let item = scheduler_location(&state, &url, ttl_ms);
        let id = item.id().to_string();
        if upload(&state, &mut slot, &endpoint, &id, Bytes::from(item.to_bytes())).await == Outcome::Accepted {
            tracing::info!(%id, %url, ttl_ms, "Scheduler-Location published");
        }
        glommio::timer::sleep(Duration::from_millis(ttl_ms / 2)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_damage_is_detected() {
        let bytes = encode_cursor(Lsn(123_456_789));
        assert_eq!(decode_cursor(&bytes), Some(Lsn(123_456_789)));
        for at in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[at] ^= 0x10;
            assert_eq!(decode_cursor(&damaged), None, "flip at {at}");
        }
        assert_eq!(decode_cursor(&bytes[..11]), None);
    }
}
