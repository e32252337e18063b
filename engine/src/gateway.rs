//! Modules from an Arweave gateway: when a process names a module this node does not hold and
//! `arweave.gateway_url` is set, its owner and tags come from the gateway's GraphQL
//! (`transactions(ids: [...])`) and its bytes from `GET /raw/{id}`; the shard then compiles it
//! and logs it (`KIND_GATEWAY_MODULE`), so the log is the cache: after a restart the module is
//! read back from the log, never fetched again. The gateway is trusted for what it returns, as
//! AO's compute units trust theirs (a module fetched this way carries no signature to check).

use http::{Method, StatusCode};
use hyper::body::Bytes;
use scheduler::tags::Tag;
use scheduler::ModuleId;
use serde_json::{json, Value};

use crate::outbound::{call, Endpoint};

/// Largest GraphQL answer read.
const GRAPHQL_ANSWER_BYTES_MAX: usize = 1 << 20;

/// A module as the gateway describes it.
#[derive(Debug)]
pub struct Fetched {
    pub owner_address: String,
    /// The owner's public key, base64url.
    pub owner_key: String,
    pub tags: Vec<Tag>,
    pub wasm: Bytes,
}

/// Why a module could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The gateway does not know the module.
    #[error("{0}")]
    NotFound(String),
    /// The gateway could not be reached or answered something unusable.
    #[error("{0}")]
    Failed(String),
    /// What the gateway has under that id is not a module this node can take.
    #[error("{0}")]
    Refused(String),
}

/// Fetches module `id`'s owner, tags and bytes (at most `bytes_max`) from the gateway at
/// `endpoint`. The transaction must be tagged `Type: Module`.
pub async fn fetch_module(endpoint: &Endpoint, id: ModuleId, bytes_max: usize) -> Result<Fetched, FetchError> {
    let gateway = &endpoint.authority;
    let mut slot = None;
    let query = json!({
        "query": "query ($ids: [ID!]!) { transactions(ids: $ids) { edges { node { id owner { address key } tags { name value } } } } }",
        "variables": {"ids": [id.to_string()]},
    });
    let (status, answer) = call(
        &mut slot,
        endpoint,
        Method::POST,
        "/graphql",
        Some(("application/json", Bytes::from(query.to_string()))),
        GRAPHQL_ANSWER_BYTES_MAX,
    )
    .await
    .map_err(|e| FetchError::Failed(format!("gateway {gateway}: {e}")))?;
    if !status.is_success() {
        return Err(FetchError::Failed(format!(
            "gateway {gateway} answered GraphQL with {status}"
        )));
    }
    let answer: Value = serde_json::from_slice(&answer)
        .map_err(|e| FetchError::Failed(format!("gateway {gateway}: GraphQL answer is not JSON: {e}")))?;
    let edges = answer["data"]["transactions"]["edges"]
        .as_array()
        .ok_or_else(|| FetchError::Failed(format!("gateway {gateway}: GraphQL answer has no transactions")))?;
    let node = edges
        .iter()
        .map(|edge| &edge["node"])
        .find(|node| node["id"] == id.to_string())
        .ok_or_else(|| FetchError::NotFound(format!("module {id} is neither on this node nor on gateway {gateway}")))?;
    let text = |value: &Value, what: &str| {
        value
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| FetchError::Failed(format!("gateway {gateway}: module {id} has no {what}")))
    };
    let owner_address = text(&node["owner"]["address"], "owner address")?;
    let owner_key = text(&node["owner"]["key"], "owner key")?;
    let tags: Vec<Tag> = serde_json::from_value(node["tags"].clone())
        .map_err(|e| FetchError::Failed(format!("gateway {gateway}: module {id} tags: {e}")))?;
    if scheduler::tags::tag_value(&tags, "Type") != Some("Module") {
        return Err(FetchError::Refused(format!(
            "transaction {id} on gateway {gateway} is not tagged Type: Module"
        )));
    }
    let (status, wasm) = call(&mut slot, endpoint, Method::GET, &format!("/raw/{id}"), None, bytes_max)
        .await
        .map_err(|e| {
            FetchError::Failed(format!(
                "gateway {gateway}: {e} (this node takes modules of at most {bytes_max} bytes)"
            ))
        })?;
    match status {
        StatusCode::OK => Ok(Fetched {
            owner_address,
            owner_key,
            tags,
            wasm,
        }),
        StatusCode::NOT_FOUND => Err(FetchError::NotFound(format!(
            "gateway {gateway} has no data for module {id}"
        ))),
        other => Err(FetchError::Failed(format!(
            "gateway {gateway} answered GET /raw/{id} with {other}"
        ))),
    }
}
