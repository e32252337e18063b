//! The JSON-1 ABI between the node and a process (AO.md, "What the process sees"): the `msg` and
//! `env` documents handed to `handle`, and the decoding of what `handle` returns.
//!
//! Encoding uses typed serde structs so that key order is fixed and nothing is built by string
//! concatenation. Decoding is strict about shape and lenient about value types where the
//! reference is (a tag value or `Data` written as a number is turned into its text). This module
//! does not run wasm and keeps no state.

use messenger::{OutboxMessage, SpawnRequest, OUTBOX_ENTRIES_MAX};
use scheduler::data_item::DataItem;
use scheduler::tags::Tag;
use scheduler::{BlockHeight, HashChain, MessageId, ModuleId, Nonce, ProcessId, Timestamp};
use serde::Serialize;
use serde_json::{json, Map, Value};

/// Where a message sits in its timeline; the fields of its assignment the process sees.
#[derive(Clone, Copy, Debug)]
pub struct Placement {
    pub process: ProcessId,
    pub nonce: Nonce,
    pub timestamp: Timestamp,
    pub block_height: BlockHeight,
    pub hash_chain: HashChain,
}

#[derive(Serialize)]
struct MsgJson<'a> {
    #[serde(rename = "Id")]
    id: String,
    // The fields an assignment can exclude are `None` when excluded, and then left out.
    #[serde(rename = "Signature", skip_serializing_if = "Option::is_none")]
    signature: Option<String>,
    #[serde(rename = "Data", skip_serializing_if = "Option::is_none")]
    data: Option<std::borrow::Cow<'a, str>>,
    #[serde(rename = "Owner", skip_serializing_if = "Option::is_none")]
    owner: Option<String>,
    #[serde(rename = "Target")]
    target: String,
    #[serde(rename = "Anchor", skip_serializing_if = "Option::is_none")]
    anchor: Option<Option<String>>,
    #[serde(rename = "From")]
    from: String,
    #[serde(rename = "Forwarded-By")]
    forwarded_by: Option<String>,
    #[serde(rename = "Tags", skip_serializing_if = "Option::is_none")]
    tags: Option<Vec<&'a Tag>>,
    #[serde(rename = "Epoch")]
    epoch: u64,
    #[serde(rename = "Nonce")]
    nonce: u64,
    #[serde(rename = "Timestamp")]
    timestamp: u64,
    #[serde(rename = "Block-Height")]
    block_height: u64,
    #[serde(rename = "Hash-Chain")]
    hash_chain: String,
    #[serde(rename = "Cron")]
    cron: bool,
    #[serde(rename = "Read-Only")]
    read_only: bool,
}

/// Renders an anchor: its text when it is UTF-8 (aos anchors are digit strings), else base64url.
pub fn anchor_text(anchor: &[u8; 32]) -> String {
    match std::str::from_utf8(anchor) {
        Ok(text) => text.to_owned(),
        Err(_) => scheduler::id::b64url(anchor),
    }
}

/// The `msg` document for `item` evaluated at `placement`. `From` is the `From-Process` tag when
/// present, else the owner's address; `Forwarded-By` is the item's `Forwarded-By` tag, else, for
/// a pushed message (one with `From-Process`), its signer: the node whose messenger pushed it.
pub fn msg_json(item: &DataItem, placement: &Placement, read_only: bool) -> Vec<u8> {
    msg_json_excluding(item, placement, read_only, "")
}

/// [`msg_json`] without the fields named in `exclude` (comma-separated; any of `Data`, `Anchor`,
/// `Tags`, `Signature`, `Owner`): what a process sees of a message assigned to it with
/// `exclude`. Other names are ignored here (the shard refuses them before they are logged).
pub fn msg_json_excluding(item: &DataItem, placement: &Placement, read_only: bool, exclude: &str) -> Vec<u8> {
    let keep = |name: &str| exclude.is_empty() || !exclude.split(',').any(|e| e == name);
    let owner = item.owner_address().to_string();
    let from_process = item.tag("From-Process");
    let msg = MsgJson {
        id: item.id().to_string(),
        signature: keep("Signature").then(|| scheduler::id::b64url(&item.signature)),
        data: keep("Data").then(|| String::from_utf8_lossy(&item.data)),
        target: placement.process.to_string(),
        anchor: keep("Anchor").then(|| item.anchor.as_ref().map(anchor_text)),
        from: from_process.map(str::to_owned).unwrap_or_else(|| owner.clone()),
        // A pushed message is signed by the node that pushed it (this one, or a trusted peer),
        // unless it names the node that forwarded it.
        forwarded_by: item
            .tag("Forwarded-By")
            .map(str::to_owned)
            .or_else(|| from_process.map(|_| owner.clone())),
        owner: keep("Owner").then_some(owner),
        tags: keep("Tags").then(|| {
            item.tags
                .iter()
                .filter(|t| t.name != "From" && t.name != "Owner")
                .collect()
        }),
        epoch: 0,
        nonce: placement.nonce.0,
        timestamp: placement.timestamp.0,
        block_height: placement.block_height.0,
        hash_chain: placement.hash_chain.to_string(),
        cron: false,
        read_only,
    };
    serde_json::to_vec(&msg).expect("msg JSON serialises: all fields are strings and numbers")
}

#[derive(Serialize)]
struct CronMsgJson<'a> {
    #[serde(rename = "Target")]
    target: String,
    #[serde(rename = "Owner")]
    owner: String,
    #[serde(rename = "From")]
    from: String,
    #[serde(rename = "Tags")]
    tags: &'a [Tag],
    #[serde(rename = "Timestamp")]
    timestamp: u64,
    #[serde(rename = "Block-Height")]
    block_height: u64,
    #[serde(rename = "Cron")]
    cron: bool,
    #[serde(rename = "Read-Only")]
    read_only: bool,
}

/// The `msg` document of a cron tick (AO.md, "Cron"): no id, signature, data or nonce (it is
/// not a logged message); `Owner` and `From` are the process's owner, `Tags` its cron's tags.
pub fn cron_msg_json(
    process: &DataItem,
    pid: ProcessId,
    tags: &[Tag],
    timestamp: Timestamp,
    block_height: BlockHeight,
) -> Vec<u8> {
    let owner = process.owner_address().to_string();
    let msg = CronMsgJson {
        target: pid.to_string(),
        from: owner.clone(),
        owner,
        tags,
        timestamp: timestamp.0,
        block_height: block_height.0,
        cron: true,
        read_only: false,
    };
    serde_json::to_vec(&msg).expect("cron msg JSON serialises")
}

/// The `env` document of a process: its own and its module's id, owner and tags.
pub fn env_json(process: &DataItem, module: &DataItem) -> Vec<u8> {
    env_json_parts(
        process,
        &module.id().to_string(),
        &module.owner_address().to_string(),
        &module.tags,
    )
}

/// [`env_json`] from the module's id, owner address and tags (a module fetched from a gateway
/// has no signed item).
pub fn env_json_parts(process: &DataItem, module_id: &str, module_owner: &str, module_tags: &[Tag]) -> Vec<u8> {
    // Written straight from borrowed fields (it is rebuilt whenever a process wakes), in the
    // order a JSON object with sorted keys has: the bytes every earlier version gave.
    #[derive(serde::Serialize)]
    struct Part<'a> {
        #[serde(rename = "Id")]
        id: &'a str,
        #[serde(rename = "Owner")]
        owner: &'a str,
        #[serde(rename = "Tags")]
        tags: &'a [Tag],
    }
    #[derive(serde::Serialize)]
    struct Env<'a> {
        #[serde(rename = "Module")]
        module: Part<'a>,
        #[serde(rename = "Process")]
        process: Part<'a>,
    }
    let (id, owner) = (process.id().to_string(), process.owner_address().to_string());
    let env = Env {
        module: Part {
            id: module_id,
            owner: module_owner,
            tags: module_tags,
        },
        process: Part {
            id: &id,
            owner: &owner,
            tags: &process.tags,
        },
    };
    serde_json::to_vec(&env).expect("env JSON serialises")
}

/// One evaluation's outcome as the node keeps and serves it.
#[derive(Clone, Debug)]
pub struct ProcessResult {
    /// `{"Messages","Spawns","Assignments","Output","Error"?,"GasUsed"}` exactly as `/result` serves it.
    pub json: Value,
    /// True when the result carries `Error`: the memory was rolled back.
    pub is_error: bool,
    pub messages: Vec<OutboxMessage>,
    pub spawns: Vec<SpawnRequest>,
    /// `Assignments`: each message id is to join the timelines of the listed processes.
    pub assignments: Vec<(Vec<ProcessId>, MessageId)>,
}

/// A result as kept for `/result`, `/results` and `/cron`: its JSON as text (a few hundred bytes
/// where the parsed tree takes kilobytes; kept for every message of every process) and whether
/// it is an `Error` (a rollback's replay skips those).
#[derive(Debug)]
pub struct StoredResult {
    text: Box<str>,
    pub is_error: bool,
}

impl StoredResult {
    pub fn of(result: &ProcessResult) -> StoredResult {
        StoredResult {
            text: result.json.to_string().into_boxed_str(),
            is_error: result.is_error,
        }
    }

    /// A result kept earlier as text (read back from the results file).
    pub fn from_text(text: Box<str>, is_error: bool) -> StoredResult {
        StoredResult { text, is_error }
    }

    /// The JSON text, as `/result` serves it.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The JSON, parsed.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).expect("the text was written by serde_json")
    }
}

impl ProcessResult {
    /// The result of a message the process could not complete (trap, fuel, memory, bad output).
    pub fn failed(reason: &str, gas_used: u64) -> ProcessResult {
        ProcessResult {
            json: json!({"Messages": [], "Spawns": [], "Assignments": [], "Output": "", "Error": reason, "GasUsed": gas_used}),
            is_error: true,
            messages: Vec::new(),
            spawns: Vec::new(),
            assignments: Vec::new(),
        }
    }
}

/// Decodes what `handle` returned. Any shape error becomes an `Error` result naming the problem:
/// a malformed result is the process's fault and must not disturb the node.
pub fn decode_result(output: &[u8], gas_used: u64) -> ProcessResult {
    match try_decode(output, gas_used) {
        Ok(result) => result,
        Err(problem) => ProcessResult::failed(&format!("invalid result from handle: {problem}"), gas_used),
    }
}

fn text_of(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Most tags an outbox entry may carry: the messenger adds up to this many of its own
/// (`Data-Protocol`, `Variant`, `Type`, `From-Process`, `From-Module`, `Pushed-For`, `Module`,
/// `Scheduler`, `Action`, `Process`) and the pushed item must stay within ANS-104's tag limit.
pub const OUTBOX_TAG_COUNT_MAX: usize = scheduler::tags::TAG_COUNT_MAX - 10;

/// Most bytes of `Data` in one outbox entry: what a client may send in one message.
pub const OUTBOX_DATA_BYTES_MAX: usize = 10 << 20;

fn decode_tags(value: Option<&Value>, what: &str) -> Result<Vec<Tag>, String> {
    let Some(value) = value else { return Ok(Vec::new()) };
    let array = value.as_array().ok_or_else(|| format!("{what} Tags is not an array"))?;
    if array.len() > OUTBOX_TAG_COUNT_MAX {
        return Err(format!(
            "{what} has {} tags, at most {OUTBOX_TAG_COUNT_MAX}",
            array.len()
        ));
    }
    array
        .iter()
        .enumerate()
        .map(|(index, tag)| {
            let name = tag
                .get("name")
                .ok_or_else(|| format!("{what} tag {index} has no name"))?;
            let value = tag
                .get("value")
                .ok_or_else(|| format!("{what} tag {index} has no value"))?;
            let tag = Tag::new(text_of(name), text_of(value));
            if tag.name.is_empty() || tag.name.len() > scheduler::tags::TAG_NAME_BYTES_MAX {
                return Err(format!(
                    "{what} tag {index} has a name of {} bytes (1 to {})",
                    tag.name.len(),
                    scheduler::tags::TAG_NAME_BYTES_MAX
                ));
            }
            if tag.value.len() > scheduler::tags::TAG_VALUE_BYTES_MAX {
                return Err(format!(
                    "{what} tag {index} has a value of {} bytes, at most {}",
                    tag.value.len(),
                    scheduler::tags::TAG_VALUE_BYTES_MAX
                ));
            }
            Ok(tag)
        })
        .collect()
}

fn decode_data(value: Option<&Value>, what: &str) -> Result<Vec<u8>, String> {
    let data = value.map(text_of).unwrap_or_default().into_bytes();
    if data.len() > OUTBOX_DATA_BYTES_MAX {
        return Err(format!(
            "{what} has {} bytes of Data, at most {OUTBOX_DATA_BYTES_MAX}",
            data.len()
        ));
    }
    Ok(data)
}

fn try_decode(output: &[u8], gas_used: u64) -> Result<ProcessResult, String> {
    let envelope: Value = serde_json::from_slice(output).map_err(|e| format!("not JSON ({e})"))?;
    let ok = envelope.get("ok").and_then(Value::as_bool).ok_or("no boolean \"ok\"")?;
    let response = envelope.get("response").cloned().unwrap_or(Value::Null);
    if !ok {
        let error = match &response {
            Value::Object(map) => map.get("Error").map(text_of).unwrap_or_else(|| response.to_string()),
            other => text_of(other),
        };
        return Ok(ProcessResult::failed(&error, gas_used));
    }
    let response = match response {
        Value::Object(map) => map,
        _ => return Err("\"response\" is not an object".into()),
    };
    let array = |key: &str| -> Result<Vec<Value>, String> {
        match response.get(key) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(items)) => Ok(items.clone()),
            Some(_) => Err(format!("{key} is not an array")),
        }
    };
    let raw_messages = array("Messages")?;
    let raw_spawns = array("Spawns")?;
    let assignments = array("Assignments")?;
    if raw_messages.len() + raw_spawns.len() > OUTBOX_ENTRIES_MAX {
        return Err(format!(
            "{} messages and spawns, at most {OUTBOX_ENTRIES_MAX}",
            raw_messages.len() + raw_spawns.len()
        ));
    }
    let error = response.get("Error").filter(|e| !e.is_null()).cloned();
    let mut messages = Vec::with_capacity(raw_messages.len());
    for (index, message) in raw_messages.iter().enumerate() {
        let what = format!("message {index}");
        let target = message
            .get("Target")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("{what} has no Target"))?;
        let target: ProcessId = target
            .parse()
            .map_err(|_| format!("{what} Target {target:?} is not a process id"))?;
        messages.push(OutboxMessage {
            target,
            data: decode_data(message.get("Data"), &what)?,
            tags: decode_tags(message.get("Tags"), &what)?,
        });
    }
    let mut spawns = Vec::with_capacity(raw_spawns.len());
    for (index, spawn) in raw_spawns.iter().enumerate() {
        let what = format!("spawn {index}");
        spawns.push(SpawnRequest {
            data: decode_data(spawn.get("Data"), &what)?,
            tags: decode_tags(spawn.get("Tags"), &what)?,
        });
    }
    if assignments.len() > OUTBOX_ENTRIES_MAX {
        return Err(format!(
            "{} assignments, at most {OUTBOX_ENTRIES_MAX}",
            assignments.len()
        ));
    }
    let mut decoded_assignments = Vec::with_capacity(assignments.len());
    for (index, assignment) in assignments.iter().enumerate() {
        let what = format!("assignment {index}");
        let message = assignment
            .get("Message")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("{what} has no Message"))?;
        let message: MessageId = message
            .parse()
            .map_err(|_| format!("{what} Message {message:?} is not a message id"))?;
        let processes = match assignment.get("Processes") {
            Some(Value::Array(items)) if items.len() <= OUTBOX_ENTRIES_MAX => items
                .iter()
                .map(|p| {
                    p.as_str()
                        .and_then(|text| text.parse::<ProcessId>().ok())
                        .ok_or_else(|| format!("{what} lists {p} among its Processes, not a process id"))
                })
                .collect::<Result<Vec<_>, _>>()?,
            _ => {
                return Err(format!(
                    "{what} has no Processes array (of at most {OUTBOX_ENTRIES_MAX})"
                ))
            }
        };
        decoded_assignments.push((processes, message));
    }
    // Each (process, message) pair is a log record with a copy of the message: bound them all.
    let pairs: usize = decoded_assignments.iter().map(|(processes, _)| processes.len()).sum();
    if pairs > OUTBOX_ENTRIES_MAX {
        return Err(format!(
            "assignments name {pairs} processes in all, at most {OUTBOX_ENTRIES_MAX}"
        ));
    }
    let mut json = Map::new();
    json.insert("Messages".into(), Value::Array(raw_messages));
    json.insert("Spawns".into(), Value::Array(raw_spawns));
    json.insert("Assignments".into(), Value::Array(assignments));
    json.insert(
        "Output".into(),
        response.get("Output").cloned().unwrap_or(Value::String(String::new())),
    );
    let is_error = error.is_some();
    if let Some(error) = error {
        json.insert("Error".into(), error);
    }
    json.insert("GasUsed".into(), gas_used.into());
    if is_error {
        // An Error result rolls the memory back, so nothing it asked to send may leave.
        messages.clear();
        spawns.clear();
        decoded_assignments.clear();
    }
    Ok(ProcessResult {
        json: Value::Object(json),
        is_error,
        messages,
        spawns,
        assignments: decoded_assignments,
    })
}

/// The module id a spawn asks for, if it names one.
pub fn spawn_module(spawn: &SpawnRequest) -> Option<ModuleId> {
    scheduler::tags::tag_value(&spawn.tags, "Module").and_then(|text| text.parse().ok())
}

/// The message id a result's `Pushed-For` chain continues: a pushed message's own `Pushed-For`,
/// or the message itself when a user sent it.
pub fn pushed_for(item: &DataItem, id: MessageId) -> MessageId {
    item.tag("Pushed-For").and_then(|text| text.parse().ok()).unwrap_or(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_bytes_are_those_of_the_sorted_json_object() {
        let signer = scheduler::signer::Signer::generate_ed25519();
        let tags = vec![Tag::new("Type", "Process"), Tag::new("Name", "a \"quoted\" name")];
        let item = signer.sign(None, Some([7; 32]), tags.clone(), b"data".to_vec());
        let module_tags = vec![Tag::new("Module-Format", "wasm32-unknown-unknown")];
        let expected = serde_json::to_vec(&json!({
            "Process": {"Id": item.id().to_string(), "Owner": item.owner_address().to_string(), "Tags": item.tags},
            "Module": {"Id": "m-id", "Owner": "m-owner", "Tags": module_tags},
        }))
        .unwrap();
        assert_eq!(env_json_parts(&item, "m-id", "m-owner", &module_tags), expected);
    }

    fn check(output: &str, is_error: bool, message_count: usize) -> ProcessResult {
        let result = decode_result(output.as_bytes(), 5);
        assert_eq!(result.is_error, is_error, "{output} -> {}", result.json);
        assert_eq!(result.messages.len(), message_count, "{output}");
        assert_eq!(result.json["GasUsed"], 5);
        result
    }

    #[test]
    fn results_decode_by_shape() {
        let pid = ProcessId([3; 32]).to_string();
        check(r#"{"ok":true,"response":{"Output":"7"}}"#, false, 0);
        let ok = check(
            &format!(
                r#"{{"ok":true,"response":{{"Output":"x","Messages":[{{"Target":"{pid}","Data":1,"Tags":[{{"name":"Action","value":"Ball"}},{{"name":"N","value":3}}]}}]}}}}"#
            ),
            false,
            1,
        );
        assert_eq!(ok.messages[0].data, b"1");
        assert_eq!(ok.messages[0].tags[1].value, "3");
        let refused = check(
            &format!(r#"{{"ok":true,"response":{{"Error":"no","Messages":[{{"Target":"{pid}"}}]}}}}"#),
            true,
            0,
        );
        assert_eq!(refused.json["Error"], "no");
        check(r#"{"ok":false,"response":{"Error":"bad"}}"#, true, 0);
        check(r#"not json"#, true, 0);
        check(r#"{"response":{}}"#, true, 0);
        check(r#"{"ok":true,"response":{"Messages":[{"Data":"no target"}]}}"#, true, 0);
        check(r#"{"ok":true,"response":{"Messages":[{"Target":"short"}]}}"#, true, 0);
        check(r#"{"ok":true,"response":{"Messages":{}}}"#, true, 0);
        let long_value = "v".repeat(scheduler::tags::TAG_VALUE_BYTES_MAX + 1);
        check(
            &format!(
                r#"{{"ok":true,"response":{{"Messages":[{{"Target":"{pid}","Tags":[{{"name":"X","value":"{long_value}"}}]}}]}}}}"#
            ),
            true,
            0,
        );
        let many: Vec<String> = (0..=OUTBOX_TAG_COUNT_MAX)
            .map(|i| format!(r#"{{"name":"T{i}","value":"v"}}"#))
            .collect();
        check(
            &format!(
                r#"{{"ok":true,"response":{{"Messages":[{{"Target":"{pid}","Tags":[{}]}}]}}}}"#,
                many.join(",")
            ),
            true,
            0,
        );
    }
}
