//! The HTTP edge of a node: AO's MU, SU and CU routes on one listener (AO.md), served by hyper on
//! the shard's glommio executor.
//!
//! Handlers parse and verify input, call the shard core, await durability through the committer,
//! and render AO's JSON shapes. Every body is bounded; every bad input is a 4xx with
//! `{"error": ...}` naming what was wrong. Not here: TLS.

// Handlers return `Result<Answer, Answer>`: the error side is the finished HTTP answer, built once
// on the (cold) error path and handed straight to hyper; boxing it would only add an allocation.
#![allow(clippy::result_large_err)]

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_channel::oneshot;
use futures_lite::{AsyncRead, AsyncWrite};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Body, Bytes, Incoming};
use scheduler::data_item::DataItem;
use scheduler::log::Lsn;
use scheduler::tags::Tag;
use scheduler::{MessageId, Nonce, ProcessId};
use serde_json::{json, Value};

use crate::mesh::{Ask, Asked, Forwarded, Reply, VerifiedItem};
use crate::node::{now, NodeState};
use crate::shard::{block_height_at, ShardError};
use crate::wire::{error_json, timeline_node};

/// Largest page of a timeline read (`limit`), as the reference SU allows.
pub const PAGE_LIMIT_MAX: usize = 1000;
/// Page size when the request names none.
pub const PAGE_LIMIT_DEFAULT: usize = 100;
/// Most bytes of messages (their data) or results (their JSON) one page of a timeline,
/// `/results` or `/cron` carries, whatever its `limit`: a page stops before the entry that
/// would pass it (keeping at least one) and says there is more, so that an answer's size,
/// and the memory it takes to build, stay bounded (a thousand 10 MiB messages would be 10 GiB).
pub const PAGE_BYTES_MAX: usize = 16 << 20;
/// What a timeline node takes beside its data (signatures, owners, tags), counted toward
/// [`PAGE_BYTES_MAX`].
const PAGE_NODE_BYTES: usize = 4096;

/// Largest dry-run request body.
pub const DRY_RUN_BYTES_MAX: usize = 1 << 20;

/// Largest GraphQL request body.
const GRAPHQL_BYTES_MAX: usize = 64 * 1024;

/// Most bytes one socket read takes (and zeroes first): large bodies arrive in several reads.
const READ_CHUNK_BYTES: usize = 32 << 10;

/// hyper's I/O traits over a glommio TCP stream.
pub struct GlommioIo(pub glommio::net::TcpStream);

impl hyper::rt::Read for GlommioIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        // SAFETY: the slice is only written to (zeroed, then filled by the read); nothing in it is
        // de-initialised, which is all `as_mut` requires of us.
        let spare = unsafe { buf.as_mut() };
        // Zeroing costs time in proportion to the length, so read at most one chunk per call.
        let chunk_len = spare.len().min(READ_CHUNK_BYTES);
        let unfilled = &mut spare[..chunk_len];
        for byte in unfilled.iter_mut() {
            byte.write(0);
        }
        // SAFETY: every byte of `unfilled` was initialised just above, so viewing it as `[u8]` is sound.
        let bytes = unsafe { &mut *(unfilled as *mut [std::mem::MaybeUninit<u8>] as *mut [u8]) };
        match Pin::new(&mut self.0).poll_read(cx, bytes) {
            Poll::Ready(Ok(read)) => {
                // SAFETY: the first `read` bytes were initialised (and written by the read).
                unsafe { buf.advance(read) };
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl hyper::rt::Write for GlommioIo {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_close(cx)
    }
}

type Answer = Response<Full<Bytes>>;

fn respond(status: StatusCode, body: &Value) -> Answer {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

/// An answer whose JSON is already text.
fn respond_text(status: StatusCode, text: &str) -> Answer {
    let mut response = Response::new(Full::new(Bytes::copy_from_slice(text.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

fn fail(status: StatusCode, message: impl AsRef<str>) -> Answer {
    let mut response = respond(status, &error_json(message.as_ref()));
    if status == StatusCode::SERVICE_UNAVAILABLE {
        response
            .headers_mut()
            .insert(http::header::RETRY_AFTER, http::HeaderValue::from_static("1"));
    }
    response
}

fn shard_fail(error: ShardError) -> Answer {
    let status = match &error {
        ShardError::BadRequest(_) => StatusCode::BAD_REQUEST,
        ShardError::NotFound(_) => StatusCode::NOT_FOUND,
        ShardError::Duplicate(_) => StatusCode::CONFLICT,
        ShardError::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
        ShardError::Log(scheduler::log::LogError::Backpressure { .. }) => StatusCode::SERVICE_UNAVAILABLE,
        ShardError::Log(scheduler::log::LogError::Full(_)) => StatusCode::SERVICE_UNAVAILABLE,
        ShardError::Log(scheduler::log::LogError::RecordTooLarge { .. }) => StatusCode::PAYLOAD_TOO_LARGE,
        // The node is stopping: the log no longer takes appends.
        ShardError::Log(scheduler::log::LogError::Closed) => StatusCode::SERVICE_UNAVAILABLE,
        ShardError::Compute(crate::compute::ComputeError::PoolExhausted { .. }) => StatusCode::SERVICE_UNAVAILABLE,
        _ => {
            tracing::error!(%error, "request failed inside the node");
            StatusCode::INTERNAL_SERVER_ERROR
        }
    };
    fail(status, error.to_string())
}

fn query<B>(request: &Request<B>) -> Vec<(String, String)> {
    let Some(text) = request.uri().query() else {
        return Vec::new();
    };
    text.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(key), percent_decode(value))
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        let escaped = (bytes[at] == b'%')
            .then(|| bytes.get(at + 1..at + 3))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match (escaped, bytes[at]) {
            (Some(byte), _) => {
                out.push(byte);
                at += 3;
                continue;
            }
            (None, b'+') => out.push(b' '),
            (None, other) => out.push(other),
        }
        at += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
}

fn parse_param<T: std::str::FromStr>(params: &[(String, String)], name: &str) -> Result<Option<T>, Answer> {
    match param(params, name) {
        None | Some("") => Ok(None),
        Some(text) => text.parse().map(Some).map_err(|_| {
            fail(
                StatusCode::BAD_REQUEST,
                format!("query parameter {name}={text:?} is not valid"),
            )
        }),
    }
}

fn process_param(params: &[(String, String)]) -> Result<ProcessId, Answer> {
    parse_param::<ProcessId>(params, "process-id")?
        .ok_or_else(|| fail(StatusCode::BAD_REQUEST, "query parameter process-id is required"))
}

/// A request body that must be one ANS-104 data item with a valid signature (bounded by
/// `http.body_bytes_max`): its bytes and the item, or a 4xx naming what was wrong.
async fn read_signed_item<B: RequestBody>(
    state: &NodeState,
    body: B,
    verified: Option<VerifiedItem>,
) -> Result<(Bytes, DataItem), Answer> {
    if let Some(VerifiedItem { bytes, item }) = verified {
        return Ok((bytes, item)); // parsed and verified by the shard the request reached
    }
    let bytes = read_body(body, state.http.body_bytes_max, state.http.idle_timeout()).await?;
    let item = DataItem::parse(&bytes).map_err(|e| fail(StatusCode::BAD_REQUEST, format!("invalid data item: {e}")))?;
    item.verify().map_err(|e| {
        fail(
            StatusCode::BAD_REQUEST,
            format!("data item {} has an invalid signature: {e}", item.id()),
        )
    })?;
    Ok((bytes, item))
}

/// The pace a request body must keep, on average, once its first `http.idle_timeout_ms` is
/// spent: each byte received buys this much more time (as Apache's `mod_reqtimeout`
/// `MinRate`). A body that trickles would otherwise hold its write slot (`WriteSlots`) for as
/// long as it keeps a byte coming within each idle timeout.
pub const BODY_BYTES_PER_S_MIN: u64 = 16 * 1024;

/// A request's body, at most `bytes_max` bytes; with `idle` (`None`: however long it takes),
/// each part within `idle` of the last and the whole within `idle` plus a second per
/// [`BODY_BYTES_PER_S_MIN`] bytes received. A 4xx otherwise: 413, or 408 with the connection
/// closed.
async fn read_body<B: RequestBody>(body: B, bytes_max: usize, idle: Option<Duration>) -> Result<Bytes, Answer> {
    let started = std::time::Instant::now();
    let mut body = std::pin::pin!(Limited::new(body, bytes_max));
    let mut parts: Vec<Bytes> = Vec::new();
    let mut received: u64 = 0;
    let ended = loop {
        let frame = match idle {
            None => Some(body.frame().await),
            Some(idle) => {
                let earned = Duration::from_secs_f64(received as f64 / BODY_BYTES_PER_S_MIN as f64);
                let wait = idle.min((started + idle + earned).saturating_duration_since(std::time::Instant::now()));
                futures_lite::future::or(async { Some(body.frame().await) }, async {
                    glommio::timer::sleep(wait).await;
                    None
                })
                .await
            }
        };
        match frame {
            None => {
                // Whatever it still sends is never read: this connection cannot carry another request.
                let mut answer = fail(
                    StatusCode::REQUEST_TIMEOUT,
                    format!(
                        "the body stalled for {} ms or came slower than {BODY_BYTES_PER_S_MIN} bytes/s \
                         ({received} bytes in {} ms)",
                        idle.unwrap_or_default().as_millis(),
                        started.elapsed().as_millis()
                    ),
                );
                answer
                    .headers_mut()
                    .insert(http::header::CONNECTION, http::HeaderValue::from_static("close"));
                return Err(answer);
            }
            Some(None) => break Ok(()),
            Some(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    if !data.is_empty() {
                        received += data.len() as u64;
                        parts.push(data);
                    }
                }
            }
            Some(Some(Err(error))) => break Err(error),
        }
    };
    match ended {
        Ok(()) => Ok(match parts.len() {
            0 => Bytes::new(),
            1 => parts.pop().unwrap_or_default(),
            _ => Bytes::from(parts.concat()),
        }),
        Err(error) => {
            if error.downcast_ref::<http_body_util::LengthLimitError>().is_some() {
                // The rest of the body is never read, so this connection cannot carry another request.
                let mut answer = fail(StatusCode::PAYLOAD_TOO_LARGE, format!("body exceeds {bytes_max} bytes"));
                answer
                    .headers_mut()
                    .insert(http::header::CONNECTION, http::HeaderValue::from_static("close"));
                Err(answer)
            } else {
                Err(fail(StatusCode::BAD_REQUEST, format!("could not read body: {error}")))
            }
        }
    }
}

/// A request body: hyper's, from a socket, or the bytes another shard forwarded.
pub trait RequestBody: Body<Data = Bytes, Error: Into<Box<dyn std::error::Error + Send + Sync>>> {}

impl<B: Body<Data = Bytes, Error: Into<Box<dyn std::error::Error + Send + Sync>>>> RequestBody for B {}

/// Serves one request on this shard; never panics on any input.
pub async fn serve<B: RequestBody>(
    state: Rc<NodeState>,
    mut request: Request<B>,
) -> Result<Answer, std::convert::Infallible> {
    let verified = request.extensions_mut().remove::<VerifiedItem>();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let params = query(&request);
    let segments: Vec<&str> = path.trim_matches('/').split('/').filter(|s| !s.is_empty()).collect();
    if let Some((read, total)) = state.recovering() {
        if !matches!(segments.as_slice(), ["health"] | ["ready"] | ["metrics"]) {
            return Ok(fail(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("recovering: read {read} of {total} bytes of the log"),
            ));
        }
    }
    let answer = match (&method, segments.as_slice()) {
        (&Method::GET, ["health"]) => health(&state),
        (&Method::GET, ["ready"]) => Ok(ready(&state)),
        (&Method::GET, []) => Ok(respond(StatusCode::OK, &node_info(&state))),
        (&Method::POST, []) => {
            let arrived = std::time::Instant::now();
            let answer = post_item(&state, request.into_body(), verified, &params).await;
            match &answer {
                Ok(_) => state.metrics.acknowledged(arrived.elapsed()),
                Err(refused) => state.metrics.rejected(refused.status().as_u16()),
            }
            answer
        }
        (&Method::GET, ["metrics"]) => Ok(metrics(&state)),
        (&Method::GET, ["timestamp"]) => {
            let now = now();
            Ok(respond(
                StatusCode::OK,
                &json!({"timestamp": now.0.to_string(), "block_height": block_height_at(now).to_string()}),
            ))
        }
        (&Method::GET, ["processes", pid]) => get_process(&state, pid),
        (&Method::GET, ["result", message]) => get_result(&state, message, &params).await,
        (&Method::GET, ["results", pid]) => get_results(&state, pid, &params),
        (&Method::POST, ["graphql"]) => graphql(&state, request.into_body()).await,
        (&Method::POST, ["dry-run"]) => dry_run(&state, request.into_body(), &params).await,
        (&Method::GET, ["state", pid]) => get_state(&state, pid),
        (&Method::GET, ["cron", pid]) => get_cron(&state, pid, &params).await,
        (&Method::POST, ["monitor", pid]) => monitor(&state, pid, request.into_body(), true).await,
        (&Method::DELETE, ["monitor", pid]) => monitor(&state, pid, request.into_body(), false).await,
        (&Method::GET, [pid, "latest"]) => get_latest(&state, pid).await,
        (&Method::GET, [id]) => get_su(&state, id, &params).await,
        _ => Err(fail(StatusCode::NOT_FOUND, format!("no route for {method} {path}"))),
    };
    Ok(answer.unwrap_or_else(|error| error))
}

/// The Prometheus text page (see [`crate::metrics`]).
fn metrics(state: &NodeState) -> Answer {
    let snapshot = {
        let shard = state.shard.borrow();
        crate::metrics::Snapshot {
            shard: state.mesh.index,
            counters: shard.counters(),
            commits: state.committer.stats(),
            backlog: shard.backlog(),
            outbox: shard.outbox_len(),
            spawns_awaiting: shard.spawns_awaiting(),
            processes: shard.process_count(),
            modules: shard.module_count(),
            instances_live: shard.instances_live(),
            processes_dormant: shard.processes_dormant(),
            live_memory_bytes: shard.live_memory_bytes(),
            results_memory_bytes: shard.results_memory_bytes(),
            log_unsynced_bytes: state.committer.unsynced_bytes(),
            open_connections: state.open_connections.get(),
            accepting: state.failure().is_none(),
            disk_full: shard.log_full().is_some(),
            modules_compiled: shard.compile_counts().0,
            modules_loaded: shard.compile_counts().1,
            ready: state.not_ready().is_none(),
            recovery_pending: state.shard.borrow().recovery_pending(),
        }
    };
    let mut response = Response::new(Full::new(Bytes::from(state.metrics.render(&snapshot))));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    response
}

/// `GET /ready`: 200 once the log is recovered, the recovered messages are replayed and writes
/// are accepted; 503 with the reason before (and after a log failure).
fn ready(state: &NodeState) -> Answer {
    match state.not_ready() {
        None => respond(StatusCode::OK, &json!({"ready": true})),
        Some(reason) => {
            let mut answer = respond(
                StatusCode::SERVICE_UNAVAILABLE,
                &json!({"ready": false, "reason": reason}),
            );
            answer
                .headers_mut()
                .insert(http::header::RETRY_AFTER, http::HeaderValue::from_static("1"));
            answer
        }
    }
}

/// `GET /`: the scheduler's clock and address (as AO's SU answers), and what a client needs to
/// send each request to the shard that owns its process: the shard count (the input of
/// `messenger::placement::shard_of`) and each shard's own port, if `http.shard_ports_base` is
/// set (shard `i` at index `i`).
fn node_info(state: &NodeState) -> Value {
    let base = state.http.shard_ports_base;
    let shard_ports: Vec<u32> = if base == 0 {
        Vec::new()
    } else {
        (0..state.mesh.count as u32).map(|i| u32::from(base) + i).collect()
    };
    json!({
        "timestamp": now().0.to_string(),
        "address": state.address().to_string(),
        "shards": state.mesh.count,
        "shard_ports": shard_ports,
    })
}

/// `GET /health`: the node is alive (200, also while it recovers) and accepts writes, or 503
/// with the reason it stopped accepting them.
fn health(state: &NodeState) -> Result<Answer, Answer> {
    if let Some((read, total)) = state.recovering() {
        return Ok(respond(
            StatusCode::OK,
            &json!({"status": "recovering", "log_bytes_read": read, "log_bytes": total}),
        ));
    }
    if let Some(reason) = state.failure() {
        return Err(fail(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("node stopped accepting writes: {reason}"),
        ));
    }
    if let Some(reason) = state.shard.borrow().log_full() {
        return Err(fail(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("disk full, writes refused until space is freed: {reason}"),
        ));
    }
    let shard = state.shard.borrow();
    let counters = shard.counters();
    let commits = state.committer.stats();
    Ok(respond(
        StatusCode::OK,
        &json!({
            "status": "ok",
            "address": shard.address().to_string(),
            "processes": shard.process_count(),
            "backlog": shard.backlog(),
            "assigned": counters.assigned,
            "evaluated": counters.evaluated,
            "delivered": counters.delivered,
            "log": {
                "batches": commits.batch_count,
                "records": commits.record_count,
                "bytes": commits.byte_count,
                "fdatasync_us_mean": commits.fdatasync_latency_us_total.checked_div(commits.batch_count).unwrap_or(0),
            },
        }),
    ))
}

async fn post_item<B: RequestBody>(
    state: &Rc<NodeState>,
    body: B,
    verified: Option<VerifiedItem>,
    params: &[(String, String)],
) -> Result<Answer, Answer> {
    if param(params, "assign").is_some() || param(params, "process-id").is_some() {
        return post_assign(state, params).await;
    }
    if let Some(reason) = state.failure() {
        return Err(fail(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("node stopped accepting writes: {reason}"),
        ));
    }
    let (bytes, item) = read_signed_item(state, body, verified).await?;
    let kind = item.tag("Type").ok_or_else(|| {
        fail(
            StatusCode::BAD_REQUEST,
            "data item has no Type tag (Module, Process or Message)",
        )
    })?;
    if kind == "Process" {
        fetch_module_if_needed(state, &item).await?;
    }
    let id = item.id().to_string();
    let target = item.target.map(ProcessId);
    let module_id = scheduler::ModuleId::from(item.id());
    let is_module = kind == "Module";
    // The answer's timestamp is the assignment's (as AO's SU answers); a module has none.
    let admitted = {
        let mut shard = state.shard.borrow_mut();
        match kind {
            "Module" => shard.admit_module(item, &bytes).map(|(_, lsn)| (lsn, now())),
            "Process" => shard
                .admit_process(item, &bytes, now())
                .map(|(pid, lsn)| (lsn, shard.assignment_time(pid, Nonce(0)))),
            "Message" => shard.admit_message(item, &bytes, now()).map(|(_, nonce, lsn)| {
                let pid = target.expect("admitted messages have a target");
                (lsn, shard.assignment_time(pid, nonce))
            }),
            other => Err(ShardError::BadRequest(format!(
                "Type {other:?} is not one of Module, Process, Message"
            ))),
        }
    };
    let (lsn, timestamp) = match admitted {
        Err(error @ ShardError::Duplicate(_)) if is_module => {
            // Held already: answered once its record is durable, so that a node of several
            // shards acknowledges a module only when every shard holds it durably.
            let held = state.shard.borrow().module_lsn(module_id);
            if let Some(lsn) = held {
                durable(state, lsn).await?;
            }
            return Err(shard_fail(error));
        }
        other => other.map_err(shard_fail)?,
    };
    acknowledge(
        state,
        lsn,
        json!({"message": "Processing DataItem", "id": id, "timestamp": timestamp.0}),
    )
    .await
}

/// Loads the module a process item names when this shard does not hold it: a copy of another
/// shard's record of it (one a gateway gave that shard), else from the configured gateway (see
/// `crate::gateway`). Nothing happens for a held module, or one no shard holds without a
/// gateway; the shard's own checks then answer for a missing or bad `Module` tag.
async fn fetch_module_if_needed(state: &Rc<NodeState>, item: &DataItem) -> Result<(), Answer> {
    let Some(module) = item.tag("Module").and_then(|m| m.parse::<scheduler::ModuleId>().ok()) else {
        return Ok(());
    };
    let bytes_max = {
        let shard = state.shard.borrow();
        if shard.has_module(module) {
            return Ok(());
        }
        // Everything that would refuse the spawn anyway is checked before fetching anything.
        shard.check_process_item(item).map_err(shard_fail)?;
        shard.gateway_module_bytes_max()
    };
    if module_from_other_shards(state, module).await? {
        return Ok(());
    }
    let Some(url) = &state.ao.gateway_url else {
        return Ok(());
    };
    let endpoint = crate::outbound::Endpoint::parse(url).map_err(|e| fail(StatusCode::INTERNAL_SERVER_ERROR, e))?;
    let fetched = crate::gateway::fetch_module(&endpoint, module, bytes_max)
        .await
        .map_err(|error| match error {
            crate::gateway::FetchError::NotFound(reason) => fail(StatusCode::NOT_FOUND, reason),
            crate::gateway::FetchError::Failed(reason) => fail(StatusCode::BAD_GATEWAY, reason),
            crate::gateway::FetchError::Refused(reason) => fail(StatusCode::UNPROCESSABLE_ENTITY, reason),
        })?;
    let mut shard = state.shard.borrow_mut();
    if shard.has_module(module) {
        return Ok(()); // another request fetched it meanwhile
    }
    // Its record precedes the process's in the log: the process's acknowledgement covers both.
    shard
        .admit_gateway_module(
            module,
            fetched.owner_address,
            fetched.owner_key,
            fetched.tags,
            &fetched.wasm,
            url,
        )
        .map(|_| ())
        .map_err(shard_fail)?;
    tracing::info!(%module, gateway = %url, bytes = fetched.wasm.len(), "module fetched from the gateway");
    Ok(())
}

/// Logs a copy of another shard's record of `module`, if one holds it durably; whether one did.
/// A shard that cannot answer now (reading its log back) is passed over.
async fn module_from_other_shards(state: &Rc<NodeState>, module: scheduler::ModuleId) -> Result<bool, Answer> {
    let Asked::Found((kind, payload)) = state.mesh.find_module(state.mesh.others(), module).await else {
        return Ok(false);
    };
    // (Held already if another request copied it meanwhile: nothing is done then.)
    let copied = state.shard.borrow_mut().admit_module_copy(module, kind, &payload);
    copied.map_err(shard_fail)?;
    tracing::info!(%module, "module copied from another shard for a spawn");
    Ok(true)
}

/// `POST /?process-id=P&assign=M[&exclude=Data,Anchor]` (no body): the `assign` flow. The
/// message, already in another process's timeline on this node, is assigned to `P` as well;
/// `exclude` names fields `P` will not see. Answers as AO's MU does (202, the assignment's id)
/// once the assignment is durable.
async fn post_assign(state: &Rc<NodeState>, params: &[(String, String)]) -> Result<Answer, Answer> {
    let pid = parse_param::<ProcessId>(params, "process-id")?
        .ok_or_else(|| fail(StatusCode::BAD_REQUEST, "assign= needs process-id= as well"))?;
    let message = parse_param::<MessageId>(params, "assign")?.ok_or_else(|| {
        fail(
            StatusCode::BAD_REQUEST,
            "process-id= on POST / needs assign= as well (the id of the message to assign)",
        )
    })?;
    if param(params, "base-layer").is_some() {
        return Err(fail(
            StatusCode::NOT_IMPLEMENTED,
            "base-layer: assigning an Arweave L1 transaction needs a gateway; this node assigns only messages in its own log",
        ));
    }
    if let Some(reason) = state.failure() {
        return Err(fail(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("node stopped accepting writes: {reason}"),
        ));
    }
    let exclude = param(params, "exclude").unwrap_or("");
    let admitted = state.shard.borrow_mut().admit_assignment(pid, message, exclude, now());
    let (id, nonce, lsn) = match admitted {
        Err(ShardError::NotFound(reason)) if state.mesh.count > 1 && state.shard.borrow().has_process(pid) => {
            // The message may be in another shard's log: assign a copy of it.
            let copy = match state.mesh.find_message(state.mesh.others(), message).await {
                Asked::Found(copy) => copy,
                Asked::Absent => return Err(fail(StatusCode::NOT_FOUND, reason)),
                Asked::Unsure(why) => return Err(fail(StatusCode::SERVICE_UNAVAILABLE, why)),
            };
            state
                .shard
                .borrow_mut()
                .admit_assignment_copy(pid, &copy, exclude, now())
                .map_err(shard_fail)?
        }
        other => other.map_err(shard_fail)?,
    };
    let timestamp = state.shard.borrow().assignment_time(pid, nonce);
    let body = json!({"message": "Processing Assignment", "id": id.to_string(), "timestamp": timestamp.0});
    acknowledge(state, lsn, body).await
}

/// Wakes the pump for what was just appended at `lsn`, waits until it is durable, then answers
/// 202 with `body` (AO's MU answer): nothing is acknowledged before its fdatasync.
async fn acknowledge(state: &NodeState, lsn: Lsn, body: Value) -> Result<Answer, Answer> {
    state.wake_pump();
    state
        .committer
        .wait_durable(lsn)
        .await
        .map_err(|e| fail(StatusCode::SERVICE_UNAVAILABLE, format!("not acknowledged: {e}")))?;
    Ok(respond(StatusCode::ACCEPTED, &body))
}

fn get_process(state: &NodeState, pid: &str) -> Result<Answer, Answer> {
    let pid: ProcessId = pid
        .parse()
        .map_err(|_| fail(StatusCode::BAD_REQUEST, format!("{pid:?} is not a process id")))?;
    let shard = state.shard.borrow();
    let (item, timestamp, block_height) = shard.process_item(pid).map_err(shard_fail)?;
    let data = std::str::from_utf8(&item.data).ok();
    Ok(respond(
        StatusCode::OK,
        &json!({
            "process_id": pid.to_string(),
            "block": block_height.to_string(),
            "owner": {"address": item.owner_address().to_string(), "key": scheduler::id::b64url(&item.owner)},
            "tags": item.tags,
            "timestamp": timestamp.0,
            "data": data,
            "anchor": item.anchor.as_ref().map(crate::abi::anchor_text),
            "signature": scheduler::id::b64url(&item.signature),
            "target": item.target.as_ref().map(|t| scheduler::id::b64url(t)),
        }),
    ))
}

async fn get_result(state: &Rc<NodeState>, message: &str, params: &[(String, String)]) -> Result<Answer, Answer> {
    let message: MessageId = message
        .parse()
        .map_err(|_| fail(StatusCode::BAD_REQUEST, format!("{message:?} is not a message id")))?;
    let pid = process_param(params)?;
    let nonce = state.shard.borrow().locate(pid, message).map_err(shard_fail)?;
    let (page, _) = state
        .shard
        .borrow()
        .timeline(pid, nonce.0.checked_sub(1), Some(nonce.0), None, None, 1)
        .map_err(shard_fail)?;
    if let Some(entry) = page.first() {
        // A result is served only for a message that is durable: never one a crash could undo.
        state
            .committer
            .wait_durable(entry.lsn)
            .await
            .map_err(|e| fail(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    }
    let result = state.wait_result(pid, message, nonce).await.map_err(shard_fail)?;
    Ok(respond_text(StatusCode::OK, result.text()))
}

/// Most results one `GET /results` page holds.
const RESULTS_LIMIT_MAX: u64 = 1000;

/// `GET /results/{pid}?from=&to=&sort=ASC|DESC&limit=`: the evaluated, durable results of a
/// process in pages, as AO's CU serves them (`edges` of `{cursor, node}` and `pageInfo`, in
/// camelCase). Cursors are nonces (as decimal strings); `from` is exclusive and `to` inclusive
/// in either direction; `limit` defaults to 25.
fn get_results(state: &NodeState, pid: &str, params: &[(String, String)]) -> Result<Answer, Answer> {
    let pid: ProcessId = pid
        .parse()
        .map_err(|_| fail(StatusCode::BAD_REQUEST, format!("{pid:?} is not a process id")))?;
    let limit = parse_param::<u64>(params, "limit")?
        .unwrap_or(25)
        .clamp(1, RESULTS_LIMIT_MAX);
    let descending = match param(params, "sort") {
        None | Some("") | Some("ASC") | Some("asc") => false,
        Some("DESC") | Some("desc") => true,
        Some(other) => {
            return Err(fail(
                StatusCode::BAD_REQUEST,
                format!("sort={other:?} is neither ASC nor DESC"),
            ))
        }
    };
    let from: Option<u64> = parse_param(params, "from")?;
    let to: Option<u64> = parse_param(params, "to")?;
    let shard = state.shard.borrow();
    let len = shard.timeline_len(pid).map_err(shard_fail)?;
    // The nonces the bounds allow, as a half-open range.
    let (low, high) = if descending {
        // Going back: from (exclusive) is the upper end, to (inclusive) the lower one.
        (to.unwrap_or(0), from.unwrap_or(len).min(len))
    } else {
        (
            from.map_or(0, |f| f + 1),
            to.map_or(len, |t| t.saturating_add(1)).min(len),
        )
    };
    let (page, more) = shard
        .results(pid, low..high.max(low), descending, limit as usize, PAGE_BYTES_MAX)
        .map_err(shard_fail)?;
    let edges: Vec<Value> = page
        .iter()
        .map(|(nonce, result)| json!({"cursor": nonce.0.to_string(), "node": result.json()}))
        .collect();
    Ok(respond(
        StatusCode::OK,
        &json!({"pageInfo": {"hasNextPage": more}, "edges": edges}),
    ))
}

/// Longest a `/cron` read waits for the process to evaluate up to the present.
const CRON_SETTLE_PATIENCE: std::time::Duration = std::time::Duration::from_secs(10);

/// A `/cron` cursor: `<ms>` or `<ms>,<cron>` (the position of the cron in the process's order).
fn parse_tick(text: &str) -> Option<crate::cron::Tick> {
    let (time, cron) = match text.split_once(',') {
        Some((time, cron)) => (time, cron.parse().ok()?),
        None => (text, u32::MAX),
    };
    Some(crate::cron::Tick {
        time: time.parse().ok()?,
        cron,
    })
}

/// `GET /cron/{pid}?from=&to=&limit=`: the results of the process's cron ticks, in tick order,
/// paged as `/results` is (`edges` of `{cursor, node}`, `pageInfo`). The process is first
/// evaluated up to the present (its messages, then its ticks), so the last page reaches now.
/// Cursors are `<ms>,<cron>`; `from` (exclusive) and `to` (inclusive) take a cursor or a time
/// in ms; `limit` defaults to 25. Only the latest results of each process are kept
/// (`shard::CRON_RESULTS_MAX`).
async fn get_cron(state: &Rc<NodeState>, pid: &str, params: &[(String, String)]) -> Result<Answer, Answer> {
    let pid: ProcessId = pid
        .parse()
        .map_err(|_| fail(StatusCode::BAD_REQUEST, format!("{pid:?} is not a process id")))?;
    let bound = |name: &str| -> Result<Option<crate::cron::Tick>, Answer> {
        match param(params, name) {
            None | Some("") => Ok(None),
            Some(text) => parse_tick(text).map(Some).ok_or_else(|| {
                fail(
                    StatusCode::BAD_REQUEST,
                    format!("{name}={text:?} is neither a time in ms nor a cron cursor like 1700000000000,0"),
                )
            }),
        }
    };
    let from = bound("from")?;
    let to = bound("to")?.map(|tick| tick.time);
    let limit = parse_param::<usize>(params, "limit")?
        .unwrap_or(25)
        .clamp(1, RESULTS_LIMIT_MAX as usize);
    let present = now();
    state
        .settle_crons(pid, present, CRON_SETTLE_PATIENCE)
        .await
        .map_err(shard_fail)?;
    let latest = state.shard.borrow().latest(pid).map_err(shard_fail)?;
    durable(state, latest).await?;
    let (page, more) = state
        .shard
        .borrow()
        .cron_results(pid, from, to, limit, PAGE_BYTES_MAX)
        .map_err(shard_fail)?;
    let edges: Vec<Value> = page
        .iter()
        .map(|(tick, result)| json!({"cursor": format!("{},{}", tick.time, tick.cron), "node": result.json()}))
        .collect();
    Ok(respond(
        StatusCode::OK,
        &json!({"pageInfo": {"hasNextPage": more}, "edges": edges}),
    ))
}

/// `POST /monitor/{pid}` (start) and `DELETE /monitor/{pid}` (stop), as aoconnect's `monitor`
/// and `unmonitor` send them: the body is a data item signed by the caller with the process as
/// its target. A monitored process's cron ticks are evaluated as time passes (not only when a
/// message or a `/cron` read comes), so their outboxes are delivered on time; the set survives
/// restarts.
async fn monitor<B: RequestBody>(state: &Rc<NodeState>, pid: &str, body: B, on: bool) -> Result<Answer, Answer> {
    let pid: ProcessId = pid
        .parse()
        .map_err(|_| fail(StatusCode::BAD_REQUEST, format!("{pid:?} is not a process id")))?;
    let (_, item) = read_signed_item(state, body, None).await?;
    if item.target != Some(pid.0) {
        return Err(fail(
            StatusCode::BAD_REQUEST,
            format!("the monitor request's data item must target {pid}"),
        ));
    }
    state.set_monitored(pid, on).await.map_err(shard_fail)?;
    let message = if on { "Process monitored" } else { "Process unmonitored" };
    Ok(respond(
        StatusCode::OK,
        &json!({"message": message, "id": item.id().to_string(), "process": pid.to_string()}),
    ))
}

/// `POST /graphql`: the small subset of Arweave's GraphQL that aoconnect needs to spawn,
/// `transactions(ids: [...])`, answered for the modules and processes this node holds. The ids
/// are taken from the variables (any list of strings, as `$transactionIds`) or written inline
/// (`ids: ["..."]`). Every node carries `id`, `anchor`, `recipient`, `owner {address key}`,
/// `tags {name value}`, `data {size type}` and `block {id height timestamp}` (null for a
/// module); clients read the fields they selected.
async fn graphql<B: RequestBody>(state: &NodeState, body: B) -> Result<Answer, Answer> {
    let bytes = read_body(body, GRAPHQL_BYTES_MAX, state.http.idle_timeout()).await?;
    let request: Value = serde_json::from_slice(&bytes)
        .map_err(|e| fail(StatusCode::BAD_REQUEST, format!("GraphQL request is not JSON: {e}")))?;
    let query = request["query"]
        .as_str()
        .ok_or_else(|| fail(StatusCode::BAD_REQUEST, "GraphQL request has no query"))?;
    if !query.contains("transactions") {
        return Err(fail(
            StatusCode::BAD_REQUEST,
            "this node answers only transactions(ids: [...]) queries",
        ));
    }
    let mut ids: Vec<String> = Vec::new();
    if let Some(variables) = request["variables"].as_object() {
        for value in variables.values() {
            if let Some(list) = value.as_array() {
                ids.extend(list.iter().filter_map(|v| v.as_str().map(str::to_owned)));
            }
        }
    }
    if let Some(at) = query.find("ids:") {
        let rest = &query[at..];
        if let (Some(open), Some(close)) = (rest.find('['), rest.find(']')) {
            if open < close {
                ids.extend(
                    rest[open + 1..close]
                        .split(',')
                        .map(|id| id.trim().trim_matches('"').to_owned())
                        .filter(|id| !id.is_empty() && !id.starts_with('$')),
                );
            }
        }
    }
    let shard = state.shard.borrow();
    let mut edges = Vec::new();
    for id in &ids {
        let node_of = |item: &DataItem, block: Value| {
            json!({
                "id": item.id().to_string(),
                "anchor": item.anchor.as_ref().map(crate::abi::anchor_text),
                "recipient": item.target.as_ref().map(|t| scheduler::id::b64url(t)).unwrap_or_default(),
                "owner": {"address": item.owner_address().to_string(), "key": scheduler::id::b64url(&item.owner)},
                "tags": item.tags,
                "data": {"size": item.data.len().to_string(), "type": item.tag("Content-Type")},
                "block": block,
            })
        };
        if let Ok(module) = id.parse::<scheduler::ModuleId>() {
            if let Some(meta) = shard.module_meta(module) {
                let node = json!({
                    "id": meta.id.to_string(),
                    "anchor": meta.anchor,
                    "recipient": "",
                    "owner": {"address": meta.owner_address, "key": meta.owner_key},
                    "tags": meta.tags,
                    "data": {"size": meta.data_len.to_string(), "type": meta.tag("Content-Type")},
                    "block": Value::Null,
                });
                edges.push(json!({"cursor": id, "node": node}));
                continue;
            }
        }
        if let Ok(pid) = id.parse::<ProcessId>() {
            if let Ok((item, timestamp, height)) = shard.process_item(pid) {
                let block = json!({"id": null, "height": height.0, "timestamp": timestamp.0 / 1000});
                edges.push(json!({"cursor": id, "node": node_of(item, block)}));
            }
        }
    }
    Ok(respond(
        StatusCode::OK,
        &json!({"data": {"transactions": {"pageInfo": {"hasNextPage": false}, "edges": edges}}}),
    ))
}

fn request_item_from_json(body: &Value, pid: ProcessId, state: &NodeState) -> Result<DataItem, Answer> {
    let tags: Vec<Tag> = match body.get("Tags") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(tags)) => tags
            .iter()
            .enumerate()
            .map(|(index, tag)| {
                let text = |key: &str| match tag.get(key) {
                    Some(Value::String(s)) => Some(s.clone()),
                    Some(Value::Null) | None => None,
                    Some(other) => Some(other.to_string()),
                };
                Ok(Tag::new(
                    text("name")
                        .ok_or_else(|| fail(StatusCode::BAD_REQUEST, format!("dry-run tag {index} has no name")))?,
                    text("value")
                        .ok_or_else(|| fail(StatusCode::BAD_REQUEST, format!("dry-run tag {index} has no value")))?,
                ))
            })
            .collect::<Result<_, Answer>>()?,
        Some(_) => return Err(fail(StatusCode::BAD_REQUEST, "dry-run Tags is not an array")),
    };
    let data = match body.get("Data") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => s.clone().into_bytes(),
        Some(other) => other.to_string().into_bytes(),
    };
    let mut tags = tags;
    tags.push(Tag::new("Read-Only", "true"));
    // A dry run is never stored; the node signs it only so that it has the shape of a message.
    Ok(state.shard.borrow().signer().sign(Some(pid.0), None, tags, data))
}

async fn dry_run<B: RequestBody>(
    state: &Rc<NodeState>,
    body: B,
    params: &[(String, String)],
) -> Result<Answer, Answer> {
    let pid = process_param(params)?;
    let bytes = read_body(body, DRY_RUN_BYTES_MAX, state.http.idle_timeout()).await?;
    let body: Value = serde_json::from_slice(&bytes)
        .map_err(|e| fail(StatusCode::BAD_REQUEST, format!("dry-run body is not JSON: {e}")))?;
    let item = request_item_from_json(&body, pid, state)?;
    let owner = body.get("Owner").and_then(Value::as_str);
    let from = body.get("From").and_then(Value::as_str);
    let result = state
        .shard
        .borrow_mut()
        .dry_run(pid, &item, now(), owner, from)
        .map_err(shard_fail)?;
    Ok(respond(StatusCode::OK, &result.json))
}

fn get_state(state: &NodeState, pid: &str) -> Result<Answer, Answer> {
    let pid: ProcessId = pid
        .parse()
        .map_err(|_| fail(StatusCode::BAD_REQUEST, format!("{pid:?} is not a process id")))?;
    let memory = state.shard.borrow_mut().memory(pid).map_err(shard_fail)?;
    let mut response = Response::new(Full::new(Bytes::from(memory)));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/octet-stream"),
    );
    Ok(response)
}

/// Waits until the record at `lsn` is durable: SU reads never show an assignment that a crash
/// could still take back (and give its nonce to another message).
async fn durable(state: &NodeState, lsn: Lsn) -> Result<(), Answer> {
    state
        .committer
        .wait_durable(lsn)
        .await
        .map_err(|e| fail(StatusCode::SERVICE_UNAVAILABLE, format!("not durable: {e}")))
}

fn render_node(state: &NodeState, lsn: Lsn) -> Result<Value, Answer> {
    let (assignment, message) = state.shard.borrow().assignment_at(lsn).map_err(shard_fail)?;
    Ok(timeline_node(&assignment, message.as_ref()))
}

async fn get_latest(state: &NodeState, pid: &str) -> Result<Answer, Answer> {
    let pid: ProcessId = pid
        .parse()
        .map_err(|_| fail(StatusCode::BAD_REQUEST, format!("{pid:?} is not a process id")))?;
    let latest = state.shard.borrow().latest(pid).map_err(shard_fail)?;
    durable(state, latest).await?;
    Ok(respond(StatusCode::OK, &render_node(state, latest)?))
}

async fn get_su(state: &NodeState, id: &str, params: &[(String, String)]) -> Result<Answer, Answer> {
    let pid = match parse_param::<ProcessId>(params, "process-id")? {
        Some(pid) => pid,
        None => id
            .parse()
            .map_err(|_| fail(StatusCode::BAD_REQUEST, format!("{id:?} is not an id")))?,
    };
    if id == pid.to_string() {
        let limit = parse_param::<usize>(params, "limit")?
            .unwrap_or(PAGE_LIMIT_DEFAULT)
            .clamp(1, PAGE_LIMIT_MAX);
        let from_nonce = parse_param(params, "from-nonce")?;
        let to_nonce = parse_param(params, "to-nonce")?;
        // Cursors are timestamps as AO's SU gives them; a client paging by nonce gets nonces
        // back, which never skip messages that share a millisecond.
        let nonce_cursors = from_nonce.is_some() || to_nonce.is_some();
        let (page, mut has_next_page) = state
            .shard
            .borrow()
            .timeline(
                pid,
                from_nonce,
                to_nonce,
                parse_param(params, "from")?,
                parse_param(params, "to")?,
                limit,
            )
            .map_err(shard_fail)?;
        if let Some(last) = page.last() {
            durable(state, last.lsn).await?;
        }
        let mut edges = Vec::with_capacity(page.len());
        let mut bytes = crate::shard::PageBytes::new(PAGE_BYTES_MAX);
        for entry in page {
            let cursor = if nonce_cursors {
                entry.nonce.0
            } else {
                entry.timestamp.0
            };
            let (assignment, message) = state.shard.borrow().assignment_at(entry.lsn).map_err(shard_fail)?;
            if !bytes.fits(PAGE_NODE_BYTES + message.as_ref().map_or(0, |m| m.data.len())) {
                has_next_page = true;
                break;
            }
            edges.push(json!({"cursor": cursor.to_string(), "node": timeline_node(&assignment, message.as_ref())}));
        }
        return Ok(respond(
            StatusCode::OK,
            &json!({"page_info": {"has_next_page": has_next_page}, "edges": edges}),
        ));
    }
    let message: MessageId = id
        .parse()
        .map_err(|_| fail(StatusCode::BAD_REQUEST, format!("{id:?} is not a message id")))?;
    let lsn = {
        let shard = state.shard.borrow();
        let nonce: Nonce = shard.locate(pid, message).map_err(shard_fail)?;
        let (page, _) = shard
            .timeline(pid, nonce.0.checked_sub(1), Some(nonce.0), None, None, 1)
            .map_err(shard_fail)?;
        page.first()
            .map(|entry| entry.lsn)
            .ok_or_else(|| fail(StatusCode::NOT_FOUND, format!("message {message} not found")))?
    };
    durable(state, lsn).await?;
    Ok(respond(StatusCode::OK, &render_node(state, lsn)?))
}

/// Where a request goes on a node of several shards.
enum Route {
    /// Any shard answers it (the clock, the node's address, a malformed path).
    Here,
    /// The shard that owns the request's process.
    Shard(usize),
    /// `POST /` with a data item: routed by what the item is (a module goes to every shard).
    Item,
    /// Every shard, answers combined.
    Health,
    Ready,
    Metrics,
    Graphql,
}

fn route(state: &NodeState, method: &Method, segments: &[&str], params: &[(String, String)]) -> Route {
    let (here, count) = (state.mesh.index, state.mesh.count);
    let owner = |pid: &str| {
        pid.parse::<ProcessId>()
            .map_or(here, |pid| messenger::placement::shard_of(&pid, count))
    };
    let by_param = || param(params, "process-id").map(owner);
    match (method, segments) {
        (&Method::GET, ["health"]) => Route::Health,
        (&Method::GET, ["ready"]) => Route::Ready,
        (&Method::GET, ["metrics"]) => Route::Metrics,
        (&Method::POST, ["graphql"]) => Route::Graphql,
        (&Method::GET, []) | (&Method::GET, ["timestamp"]) => Route::Here,
        (&Method::POST, []) => match by_param() {
            Some(shard) => Route::Shard(shard),
            None if param(params, "assign").is_some() => Route::Here, // refused there: no process-id
            None => Route::Item,
        },
        (&Method::GET, ["processes" | "results" | "state" | "cron", pid])
        | (&Method::POST | &Method::DELETE, ["monitor", pid])
        | (&Method::GET, [pid, "latest"]) => Route::Shard(owner(pid)),
        (&Method::GET, ["result", _]) | (&Method::POST, ["dry-run"]) => Route::Shard(by_param().unwrap_or(here)),
        (&Method::GET, [id]) => Route::Shard(by_param().unwrap_or_else(|| owner(id))),
        _ => Route::Here,
    }
}

/// Serves one request that reached this shard's listener: on a node of several shards, a
/// request for a process another shard owns is handed to that shard (whole, with its data
/// item already verified here) and its answer relayed; node-wide reads combine every shard's.
pub async fn ingress(state: Rc<NodeState>, request: Request<Incoming>) -> Result<Answer, std::convert::Infallible> {
    if request.method() == Method::POST && request.uri().path().trim_matches('/').is_empty() {
        let (max, waiting_max) = (state.http.writes_in_flight_max, state.http.writes_waiting_max);
        let wait = Duration::from_millis(state.http.write_wait_ms);
        // Released when the request ends, however it ends (a client that hangs up drops it).
        let Some(_slot) = state.writes.acquire(max, waiting_max, wait).await else {
            state.metrics.rejected(503);
            let refusal = fail(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "overloaded: {max} writes in flight on this shard and {waiting_max} waiting \
                     (http.writes_in_flight_max, http.writes_waiting_max)"
                ),
            );
            return Ok(drained(request, refusal).await);
        };
        return route_ingress(state, request).await;
    }
    route_ingress(state, request).await
}

/// Most bytes of a refused request's body read (and dropped) so that its connection can carry
/// the next request, and how long they may take to come.
const DRAIN_BYTES_MAX: usize = 64 << 10;
const DRAIN_PATIENCE: Duration = Duration::from_secs(1);

/// `answer`, once `request`'s body is read and dropped. A refused client sends its next request
/// on the same connection: without this, hyper closes a connection whose body it has not read,
/// and every refusal costs the client a new connection and the shard an accept. A body that is
/// larger, or not sent yet (`Expect: 100-continue`: reading would ask for it), or that does not
/// come, closes the connection instead. Frames are dropped as they come, not gathered.
async fn drained(request: Request<Incoming>, mut answer: Answer) -> Answer {
    let small = request
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|length| length.to_str().ok()?.parse::<usize>().ok())
        .is_some_and(|length| length <= DRAIN_BYTES_MAX);
    let expects = request.headers().contains_key(http::header::EXPECT);
    let read = small
        && !expects
        && futures_lite::future::or(
            async {
                let mut body = request.into_body();
                let mut read = 0;
                while let Some(frame) = body.frame().await {
                    match frame {
                        Ok(frame) => read += frame.data_ref().map_or(0, |data| data.len()),
                        Err(_) => return false,
                    }
                    if read > DRAIN_BYTES_MAX {
                        return false;
                    }
                }
                true
            },
            async {
                glommio::timer::sleep(DRAIN_PATIENCE).await;
                false
            },
        )
        .await;
    if !read {
        answer
            .headers_mut()
            .insert(http::header::CONNECTION, http::HeaderValue::from_static("close"));
    }
    answer
}

/// The `POST /` requests one shard's listener holds (at most `http.writes_in_flight_max`), and
/// those waiting in line for one to end (at most `http.writes_waiting_max`, first come first
/// served, each for at most `http.write_wait_ms`).
///
/// A request beyond the line is held for `http.write_wait_ms` too, then answered 503. A held
/// or waiting request has had only its head read: it costs no CPU, and its client, waiting
/// for the answer, sends nothing more. So under a flood each connection costs at most one
/// refusal per wait, which keeps the cores for the writes in flight: answering 503 at once
/// lets clients that retry at once spend the cores on refusals (on 8 shard cores of the
/// 16-core machine, 10x the peak offered by 2048 such clients kept 52 % of the peak). The
/// line bounds the latency of what is accepted; held requests are bounded by the shard's
/// connections (one request at a time each).
#[derive(Default)]
pub struct WriteSlots(Rc<SlotsInner>);

#[derive(Default)]
struct SlotsInner {
    held: Cell<usize>,
    /// Oldest first; entries whose request stopped waiting are skipped when a slot is handed on.
    waiters: RefCell<VecDeque<oneshot::Sender<WriteSlot>>>,
    /// Requests waiting now (the queue above can hold more: those that gave up).
    waiting: Cell<usize>,
}

/// One held write slot: handed on to the oldest waiter, or freed, when dropped.
pub struct WriteSlot(Option<Rc<SlotsInner>>);

impl WriteSlots {
    /// Writes held now.
    pub fn held(&self) -> usize {
        self.0.held.get()
    }

    /// A slot, at once if fewer than `max` are held, else the first one freed within `wait`
    /// if fewer than `waiting_max` wait for one; `None` if none was (after `wait`, also when
    /// the line was full).
    pub async fn acquire(&self, max: usize, waiting_max: usize, wait: Duration) -> Option<WriteSlot> {
        let inner = &self.0;
        if inner.held.get() < max {
            inner.held.set(inner.held.get() + 1);
            return Some(WriteSlot(Some(Rc::clone(inner))));
        }
        if wait.is_zero() {
            return None;
        }
        if inner.waiting.get() >= waiting_max {
            glommio::timer::sleep(wait).await;
            return None;
        }
        let (tx, rx) = oneshot::channel();
        {
            let mut waiters = inner.waiters.borrow_mut();
            // Drop the entries of requests that stopped waiting, once they outnumber the live.
            if waiters.len() >= 64 && waiters.len() >= 2 * inner.waiting.get() {
                waiters.retain(|waiter| !waiter.is_canceled());
            }
            waiters.push_back(tx);
        }
        inner.waiting.set(inner.waiting.get() + 1);
        struct Waiting<'a>(&'a SlotsInner);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.waiting.set(self.0.waiting.get() - 1);
            }
        }
        let _waiting = Waiting(inner);
        // A slot handed over wins over the timer when both are ready.
        futures_lite::future::or(async { rx.await.ok() }, async {
            glommio::timer::sleep(wait).await;
            None
        })
        .await
    }
}

impl Drop for WriteSlot {
    fn drop(&mut self) {
        let Some(inner) = self.0.take() else {
            return;
        };
        let mut slot = WriteSlot(Some(inner));
        loop {
            let inner = slot.0.as_ref().expect("a slot being handed on");
            let next = inner.waiters.borrow_mut().pop_front();
            let Some(waiter) = next else {
                inner.held.set(inner.held.get() - 1);
                slot.0 = None;
                return;
            };
            // A waiter that stopped waiting hands the slot back; one that took it but drops it
            // unread hands it on through this drop again.
            match waiter.send(slot) {
                Ok(()) => return,
                Err(back) => slot = back,
            }
        }
    }
}

async fn route_ingress(state: Rc<NodeState>, request: Request<Incoming>) -> Result<Answer, std::convert::Infallible> {
    if state.mesh.count == 1 {
        return serve(state, request).await;
    }
    let path = request.uri().path().to_owned();
    let params = query(&request);
    let segments: Vec<&str> = path.trim_matches('/').split('/').filter(|s| !s.is_empty()).collect();
    let route = route(&state, request.method(), &segments, &params);
    let (parts, body) = match route {
        Route::Here => return serve(state, request).await,
        Route::Shard(to) if to == state.mesh.index => return serve(state, request).await,
        _ => request.into_parts(),
    };
    let head = Forwarded {
        method: parts.method,
        uri: parts.uri,
        headers: parts.headers,
        body: Bytes::new(),
        item: None,
    };
    let answer = async {
        match route {
            Route::Item => {
                let (bytes, item) = match read_signed_item(&state, body, None).await {
                    Ok(read) => read,
                    Err(refused) => {
                        state.metrics.rejected(refused.status().as_u16());
                        return Err(refused);
                    }
                };
                let count = state.mesh.count;
                let to = match item.tag("Type") {
                    Some("Module") => None,
                    Some("Process") => Some(messenger::placement::shard_of(&ProcessId::from(item.id()), count)),
                    Some("Message") => Some(item.target.map_or(state.mesh.index, |t| {
                        messenger::placement::shard_of(&ProcessId(t), count)
                    })),
                    _ => Some(state.mesh.index), // refused there, with the reason
                };
                let verified = VerifiedItem { bytes, item };
                match to {
                    Some(to) => {
                        if to != state.mesh.index {
                            state.metrics.handed_over();
                        }
                        dispatch(&state, to, &head, Bytes::new(), Some(verified)).await
                    }
                    None => load_module_everywhere(&state, &head, verified).await,
                }
            }
            Route::Shard(to) => {
                // The owner applies the route's own limit; this one only bounds the copy.
                let bytes_max = state.http.body_bytes_max.max(DRY_RUN_BYTES_MAX).max(GRAPHQL_BYTES_MAX);
                let body = read_body(body, bytes_max, state.http.idle_timeout()).await?;
                state.metrics.handed_over();
                dispatch(&state, to, &head, body, None).await
            }
            _ => {
                let body = read_body(body, GRAPHQL_BYTES_MAX, state.http.idle_timeout()).await?;
                let answers = everywhere(&state, &head, body).await?;
                match route {
                    Route::Health => combine_health(answers),
                    Route::Ready => combine_ready(answers),
                    Route::Metrics => combine_metrics(answers),
                    _ => combine_graphql(answers),
                }
            }
        }
    }
    .await;
    Ok(answer.unwrap_or_else(|error| error))
}

fn copy_head(head: &Forwarded, body: Bytes, item: Option<VerifiedItem>) -> Forwarded {
    Forwarded {
        method: head.method.clone(),
        uri: head.uri.clone(),
        headers: head.headers.clone(),
        body,
        item,
    }
}

/// Serves `forwarded` on this shard.
async fn serve_forwarded(state: &Rc<NodeState>, forwarded: Forwarded) -> Answer {
    let mut request = Request::new(Full::new(forwarded.body));
    *request.method_mut() = forwarded.method;
    *request.uri_mut() = forwarded.uri;
    *request.headers_mut() = forwarded.headers;
    if let Some(item) = forwarded.item {
        request.extensions_mut().insert(item);
    }
    let Ok(answer) = serve(Rc::clone(state), request).await;
    answer
}

/// Serves the request on shard `to` (this one or another) and returns its answer.
async fn dispatch(
    state: &Rc<NodeState>,
    to: usize,
    head: &Forwarded,
    body: Bytes,
    item: Option<VerifiedItem>,
) -> Result<Answer, Answer> {
    let forwarded = copy_head(head, body, item);
    if to == state.mesh.index {
        return Ok(serve_forwarded(state, forwarded).await);
    }
    match state.mesh.ask(to, Ask::Http(Box::new(forwarded))).await {
        Ok(crate::mesh::Answer::Http(reply)) => {
            let mut answer = Response::new(Full::new(reply.body));
            *answer.status_mut() = reply.status;
            *answer.headers_mut() = reply.headers;
            Ok(answer)
        }
        Ok(_) => Err(fail(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("shard {to} answered out of turn"),
        )),
        Err(reason) => Err(fail(StatusCode::SERVICE_UNAVAILABLE, reason)),
    }
}

/// Answers another shard's request.
pub async fn answer_ask(state: &Rc<NodeState>, ask: Ask) -> crate::mesh::Answer {
    match ask {
        Ask::Http(forwarded) => {
            let answer = serve_forwarded(state, *forwarded).await;
            let (parts, body) = answer.into_parts();
            let body = match body.collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(never) => match never {},
            };
            crate::mesh::Answer::Http(Reply {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        }
        Ask::Message(id) => crate::mesh::Answer::Message(match state.recovering() {
            Some(_) => Err("still reading its log back".to_owned()),
            None => state.shard.borrow().held_message(id).map_err(|e| e.to_string()),
        }),
        Ask::Module(id) => crate::mesh::Answer::Module(match state.recovering() {
            Some(_) => Err("still reading its log back".to_owned()),
            None => state.shard.borrow().module_record(id).map_err(|e| e.to_string()),
        }),
    }
}

/// The request served by every shard, answers in shard order.
async fn everywhere(state: &Rc<NodeState>, head: &Forwarded, body: Bytes) -> Result<Vec<Answer>, Answer> {
    let tasks: Vec<_> = (0..state.mesh.count)
        .map(|to| {
            let (state, forwarded) = (Rc::clone(state), copy_head(head, body.clone(), None));
            glommio::spawn_local(async move { dispatch(&state, to, &forwarded, forwarded.body.clone(), None).await })
        })
        .collect();
    let mut answers = Vec::with_capacity(tasks.len());
    for task in tasks {
        answers.push(task.await.unwrap_or_else(|error| error));
    }
    Ok(answers)
}

/// A module goes into every shard's log (every shard may spawn from it); acknowledged once
/// every shard has it durably. A shard that already holds it (a retry after a partial
/// failure) counts as done.
async fn load_module_everywhere(state: &Rc<NodeState>, head: &Forwarded, item: VerifiedItem) -> Result<Answer, Answer> {
    let tasks: Vec<_> = (0..state.mesh.count)
        .map(|to| {
            let (state, head, item) = (Rc::clone(state), copy_head(head, Bytes::new(), None), item.clone());
            glommio::spawn_local(async move { dispatch(&state, to, &head, Bytes::new(), Some(item)).await })
        })
        .collect();
    let mut answers = Vec::with_capacity(tasks.len());
    for task in tasks {
        answers.push(task.await.unwrap_or_else(|error| error));
    }
    if let Some(failed) = answers
        .iter()
        .position(|a| !a.status().is_success() && a.status() != StatusCode::CONFLICT)
    {
        return Err(answers.swap_remove(failed));
    }
    match answers.iter().position(|a| a.status().is_success()) {
        Some(done) => Ok(answers.swap_remove(done)),
        None => Err(answers.swap_remove(0)), // every shard already held it: 409
    }
}

async fn json_of(answer: Answer) -> (StatusCode, Value) {
    let status = answer.status();
    let body = match answer.into_body().collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(never) => match never {},
    };
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

fn first_failure(answers: &mut Vec<Answer>) -> Option<Answer> {
    let failed = answers.iter().position(|a| !a.status().is_success())?;
    Some(answers.swap_remove(failed))
}

/// `/ready` of the node: ready when every shard is.
fn combine_ready(mut answers: Vec<Answer>) -> Result<Answer, Answer> {
    match first_failure(&mut answers) {
        Some(failed) => Err(failed),
        None => Ok(respond(
            StatusCode::OK,
            &json!({"ready": true, "shards": answers.len()}),
        )),
    }
}

/// `/health` of the node: the sums of every shard's figures.
fn combine_health(mut answers: Vec<Answer>) -> Result<Answer, Answer> {
    if let Some(failed) = first_failure(&mut answers) {
        return Err(failed);
    }
    let shards = answers.len();
    let values: Vec<Value> = answers
        .into_iter()
        .map(|a| futures_lite::future::block_on(json_of(a)).1)
        .collect();
    let sum = |path: &[&str]| -> u64 {
        values
            .iter()
            .map(|v| path.iter().fold(v, |v, key| &v[*key]).as_u64().unwrap_or(0))
            .sum()
    };
    if values.iter().any(|v| v["status"] == "recovering") {
        return Ok(respond(
            StatusCode::OK,
            &json!({"status": "recovering", "log_bytes_read": sum(&["log_bytes_read"]), "log_bytes": sum(&["log_bytes"]), "shards": shards}),
        ));
    }
    Ok(respond(
        StatusCode::OK,
        &json!({
            "status": "ok",
            "address": values[0]["address"],
            "shards": shards,
            "processes": sum(&["processes"]),
            "backlog": sum(&["backlog"]),
            "assigned": sum(&["assigned"]),
            "evaluated": sum(&["evaluated"]),
            "delivered": sum(&["delivered"]),
            "log": {
                "batches": sum(&["log", "batches"]),
                "records": sum(&["log", "records"]),
                "bytes": sum(&["log", "bytes"]),
                "fdatasync_us_mean": sum(&["log", "fdatasync_us_mean"]) / shards as u64,
            },
        }),
    ))
}

/// `POST /graphql` of the node: every shard's edges, each id once (modules are on every shard).
fn combine_graphql(mut answers: Vec<Answer>) -> Result<Answer, Answer> {
    if let Some(failed) = first_failure(&mut answers) {
        return Err(failed);
    }
    let mut edges: Vec<Value> = Vec::new();
    for answer in answers {
        let (_, value) = futures_lite::future::block_on(json_of(answer));
        for edge in value["data"]["transactions"]["edges"].as_array().into_iter().flatten() {
            if !edges.iter().any(|e| e["cursor"] == edge["cursor"]) {
                edges.push(edge.clone());
            }
        }
    }
    Ok(respond(
        StatusCode::OK,
        &json!({"data": {"transactions": {"pageInfo": {"hasNextPage": false}, "edges": edges}}}),
    ))
}

/// `/metrics` of the node: one page, each family once. Samples labelled by shard stay apart;
/// node-wide samples combine: the lowest of `ready` and `accepting_writes`, the highest of the
/// figures every shard shares (`modules`, the node's compile counts, `uptime`, `log_disk_full`,
/// `build`), the sum of the rest.
fn combine_metrics(answers: Vec<Answer>) -> Result<Answer, Answer> {
    let mut pages = Vec::with_capacity(answers.len());
    for answer in answers {
        if !answer.status().is_success() {
            return Err(answer);
        }
        let body = match futures_lite::future::block_on(answer.into_body().collect()) {
            Ok(collected) => collected.to_bytes(),
            Err(never) => match never {},
        };
        pages.push(String::from_utf8_lossy(&body).into_owned());
    }
    let mut response = Response::new(Full::new(Bytes::from(merge_metric_pages(&pages))));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    Ok(response)
}

/// One metric family of several pages: its header lines, and its samples in first-seen order,
/// each with the values the pages gave it.
type Family = (Vec<String>, Vec<(String, Vec<String>)>);

/// Merges OpenMetrics pages of the same families (see [`combine_metrics`]).
pub fn merge_metric_pages(pages: &[String]) -> String {
    // family -> (header lines, samples in first-seen order: key -> values)
    let mut order: Vec<String> = Vec::new();
    let mut families: std::collections::HashMap<String, Family> = std::collections::HashMap::new();
    for page in pages {
        let mut family = String::new();
        for line in page.lines() {
            if line == "# EOF" || line.is_empty() {
                continue;
            }
            if let Some(rest) = line.strip_prefix("# ") {
                let name = rest.split_whitespace().nth(1).unwrap_or("").to_owned();
                if name != family {
                    family = name;
                    if !families.contains_key(&family) {
                        order.push(family.clone());
                        families.insert(family.clone(), (Vec::new(), Vec::new()));
                    }
                }
                let (headers, _) = families.get_mut(&family).expect("inserted above");
                if !headers.iter().any(|h| h == line) {
                    headers.push(line.to_owned());
                }
                continue;
            }
            let Some((key, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let (_, samples) = families.entry(family.clone()).or_default();
            match samples.iter_mut().find(|(k, _)| k == key) {
                Some((_, values)) => values.push(value.to_owned()),
                None => samples.push((key.to_owned(), vec![value.to_owned()])),
            }
        }
    }
    let mut page = String::new();
    for family in &order {
        let (headers, samples) = &families[family];
        for header in headers {
            page.push_str(header);
            page.push('\n');
        }
        let rule = match family.as_str() {
            "hewitt_ready" | "hewitt_accepting_writes" => "min",
            "hewitt_modules"
            | "hewitt_modules_compiled"
            | "hewitt_modules_loaded"
            | "hewitt_uptime_seconds"
            | "hewitt_log_disk_full"
            | "hewitt_build" => "max",
            _ => "sum",
        };
        for (key, values) in samples {
            page.push_str(key);
            page.push(' ');
            page.push_str(&combine_values(values, rule));
            page.push('\n');
        }
    }
    page.push_str("# EOF\n");
    page
}

fn combine_values(values: &[String], rule: &str) -> String {
    if values.len() == 1 {
        return values[0].clone();
    }
    if let Ok(ints) = values.iter().map(|v| v.parse::<i64>()).collect::<Result<Vec<_>, _>>() {
        let combined = match rule {
            "min" => ints.iter().copied().min(),
            "max" => ints.iter().copied().max(),
            _ => Some(ints.iter().sum()),
        };
        return combined.unwrap_or(0).to_string();
    }
    let floats: Vec<f64> = values.iter().filter_map(|v| v.parse::<f64>().ok()).collect();
    let combined = match rule {
        "min" => floats.iter().copied().fold(f64::INFINITY, f64::min),
        "max" => floats.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        _ => floats.iter().sum(),
    };
    let text = combined.to_string();
    if text.contains('.') || text.contains('e') || text.contains("inf") || text.contains("NaN") {
        text
    } else {
        format!("{text}.0")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_slots_are_handed_to_the_oldest_waiter_still_waiting() {
        glommio::LocalExecutorBuilder::default()
            .spawn(|| async {
                let slots = Rc::new(WriteSlots::default());
                let long = Duration::from_secs(10);
                let first = slots.acquire(1, 8, long).await.expect("a free slot at once");
                assert!(
                    slots.acquire(1, 8, Duration::ZERO).await.is_none(),
                    "no wait: refused at once"
                );
                let began = std::time::Instant::now();
                let line_full = slots.acquire(1, 0, Duration::from_millis(5)).await;
                assert!(line_full.is_none(), "no room in line: refused");
                assert!(began.elapsed() >= Duration::from_millis(5), "but only after the wait");
                // One waiter gives up; the next, still waiting, gets the slot when it is freed.
                let gives_up = slots.acquire(1, 8, Duration::from_millis(5)).await;
                assert!(gives_up.is_none(), "refused once its wait is over");
                let waiter = {
                    let slots = Rc::clone(&slots);
                    glommio::spawn_local(async move { slots.acquire(1, 8, long).await.is_some() })
                };
                let late = {
                    let slots = Rc::clone(&slots);
                    glommio::spawn_local(async move { slots.acquire(1, 8, Duration::from_millis(20)).await.is_some() })
                };
                glommio::timer::sleep(Duration::from_millis(2)).await;
                drop(first);
                assert_eq!(slots.held(), 1, "handed on, not freed");
                assert!(waiter.await, "the oldest waiter got it");
                // The waiter's task ended, dropping its slot: handed to `late`, which then drops it.
                assert!(late.await, "the next waiter got it in turn");
                assert_eq!(slots.held(), 0, "freed once nobody waits");
                assert!(slots.acquire(1, 8, Duration::ZERO).await.is_some());
            })
            .expect("executor")
            .join()
            .expect("test task");
    }
}
