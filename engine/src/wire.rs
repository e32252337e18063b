//! AO's HTTP JSON shapes (AO.md, SU and CU APIs): how data items, assignments, timeline pages and
//! errors are rendered. Pure functions; no routing and no state.

use scheduler::data_item::DataItem;
use scheduler::id::b64url;
use serde_json::{json, Value};

use crate::abi::anchor_text;

/// `{"id","owner":{"address","key"},"tags","signature","anchor","target","data"}`; `data` is a
/// lossy UTF-8 rendering of the bytes and is left out for assignments (`with_data == false`).
pub fn item_json(item: &DataItem, with_data: bool) -> Value {
    let mut value = json!({
        "id": item.id().to_string(),
        "owner": {"address": item.owner_address().to_string(), "key": b64url(&item.owner)},
        "tags": item.tags,
        "signature": b64url(&item.signature),
        "anchor": item.anchor.as_ref().map(anchor_text),
        "target": item.target.as_ref().map(|t| b64url(t)),
    });
    if with_data {
        value["data"] = Value::String(String::from_utf8_lossy(&item.data).into_owned());
    }
    value
}

/// `{"message": ..., "assignment": ...}`; at nonce 0 the message is the process itself, and it
/// is null for an assignment of a message sent to another process (AO's SU shows the `assign`
/// flow so: the message is looked up by the assignment's `Message` tag).
pub fn timeline_node(assignment: &DataItem, message: Option<&DataItem>) -> Value {
    json!({"message": message.map(|m| item_json(m, true)), "assignment": item_json(assignment, false)})
}

/// The body of every error answer.
pub fn error_json(message: &str) -> Value {
    json!({ "error": message })
}
