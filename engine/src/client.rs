//! A blocking HTTP client of a Hewitt (or any AO TN.1) node, for the CLI's client verbs, the
//! demo and the tests: it signs data items with the caller's key and speaks AO's HTTP shapes.
//!
//! It retries nothing by itself: a 503 is returned to the caller, who decides.

use std::time::Duration;

use scheduler::data_item::DataItem;
use scheduler::signer::Signer;
use scheduler::tags::Tag;
use scheduler::{Address, MessageId, ModuleId, ProcessId};
use serde_json::Value;

/// Largest JSON answer the client reads: a full timeline page (`http::PAGE_BYTES_MAX` of
/// data, escaped) with room to spare. Larger is taken for a broken or hostile node.
pub const ANSWER_BYTES_MAX: u64 = 256 << 20;

/// What went wrong talking to a node.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("node answered {status}: {body}")]
    Status { status: u16, body: String },
    #[error("could not reach the node: {0}")]
    Transport(String),
    #[error("node answered something unexpected: {0}")]
    Unexpected(String),
}

impl ClientError {
    /// The HTTP status, when the node answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

pub struct Client {
    base: String,
    agent: ureq::Agent,
    signer: Signer,
    /// With [`Client::with_seeded_anchors`]: the seed and the items signed so far.
    seeded: std::sync::Mutex<Option<(u64, u64)>>,
}

/// A fresh 32-character anchor (ASCII, so it renders as text), making each signed item unique.
pub fn fresh_anchor() -> [u8; 32] {
    const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let mut raw = [0u8; 32];
    getrandom::getrandom(&mut raw).expect("the OS random source is available");
    raw.map(|byte| ALPHABET[usize::from(byte) % ALPHABET.len()])
}

/// AO's tags for an item of `kind` (`Data-Protocol`, `Variant`, `Type`), then `extra`.
pub fn ao_tags(kind: &str, extra: impl IntoIterator<Item = Tag>) -> Vec<Tag> {
    let mut tags = vec![
        Tag::new("Data-Protocol", "ao"),
        Tag::new("Variant", "ao.TN.1"),
        Tag::new("Type", kind),
    ];
    tags.extend(extra);
    tags
}

impl Client {
    /// A client of the node at `base` (e.g. `http://127.0.0.1:8734`) signing with `signer`.
    pub fn new(base: &str, signer: Signer) -> Client {
        let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(60)).build();
        Client {
            base: base.trim_end_matches('/').to_owned(),
            agent,
            signer,
            seeded: std::sync::Mutex::new(None),
        }
    }

    /// The same client with requests abandoned after `timeout` (60 s by default).
    pub fn with_timeout(mut self, timeout: Duration) -> Client {
        self.agent = ureq::AgentBuilder::new().timeout(timeout).build();
        self
    }

    /// Gives the items this client signs anchors drawn from `seed` and a counter instead of
    /// random ones: the same key, seed and sequence of calls sign the same items (same ids), so
    /// two runs of a workload can be compared item for item.
    pub fn with_seeded_anchors(self, seed: u64) -> Client {
        *self.seeded.lock().unwrap_or_else(|e| e.into_inner()) = Some((seed, 0));
        self
    }

    fn anchor(&self) -> [u8; 32] {
        let mut seeded = self.seeded.lock().unwrap_or_else(|e| e.into_inner());
        let Some((seed, count)) = *seeded else {
            return fresh_anchor();
        };
        *seeded = Some((seed, count + 1));
        let digest = <sha2::Sha256 as sha2::Digest>::digest([seed.to_le_bytes(), count.to_le_bytes()].concat());
        let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
        hex.as_bytes().try_into().expect("32 hex digits")
    }

    pub fn signer(&self) -> &Signer {
        &self.signer
    }

    fn read(response: Result<ureq::Response, ureq::Error>) -> Result<ureq::Response, ClientError> {
        match response {
            Ok(response) => Ok(response),
            Err(ureq::Error::Status(status, response)) => Err(ClientError::Status {
                status,
                body: response.into_string().unwrap_or_default(),
            }),
            Err(error) => Err(ClientError::Transport(error.to_string())),
        }
    }

    fn json(response: ureq::Response) -> Result<Value, ClientError> {
        // Not `into_string`, which refuses answers over 10 MB: a page may carry up to
        // `http::PAGE_BYTES_MAX` of messages, and one message as much as a data item holds.
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(
            &mut std::io::Read::take(response.into_reader(), ANSWER_BYTES_MAX + 1),
            &mut bytes,
        )
        .map_err(|e| ClientError::Transport(e.to_string()))?;
        if bytes.len() as u64 > ANSWER_BYTES_MAX {
            return Err(ClientError::Unexpected(format!(
                "the answer exceeds {ANSWER_BYTES_MAX} bytes"
            )));
        }
        serde_json::from_slice(&bytes)
            .map_err(|e| ClientError::Unexpected(format!("{e}: {}", String::from_utf8_lossy(&bytes))))
    }

    /// `GET {path}` as JSON.
    pub fn get(&self, path: &str) -> Result<Value, ClientError> {
        Self::json(Self::read(self.agent.get(&format!("{}{path}", self.base)).call())?)
    }

    /// `GET {path}` as bytes.
    pub fn get_bytes(&self, path: &str) -> Result<Vec<u8>, ClientError> {
        let response = Self::read(self.agent.get(&format!("{}{path}", self.base)).call())?;
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut response.into_reader(), &mut bytes)
            .map_err(|e| ClientError::Transport(e.to_string()))?;
        Ok(bytes)
    }

    /// `POST /` with raw bytes (the data item), answered as JSON.
    ///
    /// A transport error (a pooled keep-alive connection the server had already closed, say) is
    /// retried once on a fresh connection. That is safe because a data item is idempotent by
    /// id: if the first attempt did land, the node answers the retry 409, which is reported as
    /// the acceptance it is.
    pub fn post_bytes(&self, bytes: &[u8]) -> Result<Value, ClientError> {
        let send = || {
            let request = self
                .agent
                .post(&format!("{}/", self.base))
                .set("Content-Type", "application/octet-stream");
            Self::read(request.send_bytes(bytes)).and_then(Self::json)
        };
        match send() {
            Err(ClientError::Transport(first)) => match send() {
                Err(ClientError::Status { status: 409, .. }) => {
                    let id = DataItem::parse(bytes)
                        .map(|item| item.id().to_string())
                        .unwrap_or_default();
                    Ok(serde_json::json!({"message": "Processing DataItem", "id": id, "retried_after": first}))
                }
                other => other,
            },
            other => other,
        }
    }

    /// `POST /` with a data item; returns the node's answer.
    pub fn post_item(&self, item: &DataItem) -> Result<Value, ClientError> {
        self.post_bytes(&item.to_bytes())
    }

    /// The node's scheduler address (`GET /`).
    pub fn scheduler(&self) -> Result<Address, ClientError> {
        let answer = self.get("/")?;
        answer["address"]
            .as_str()
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| ClientError::Unexpected(format!("no address in {answer}")))
    }

    /// Loads a wasm module with `Module-Format` and extra tags.
    pub fn load_module(&self, wasm: Vec<u8>, format: &str, extra: &[Tag]) -> Result<ModuleId, ClientError> {
        let mut tags = ao_tags("Module", []);
        tags.extend([
            Tag::new("Module-Format", format),
            Tag::new("Input-Encoding", "JSON-1"),
            Tag::new("Output-Encoding", "JSON-1"),
            Tag::new("Content-Type", "application/wasm"),
        ]);
        tags.extend(extra.iter().cloned());
        let item = self.signer.sign(None, Some(self.anchor()), tags, wasm);
        self.post_item(&item)?;
        Ok(ModuleId::from(item.id()))
    }

    /// Spawns a process of `module` scheduled on `scheduler`.
    pub fn spawn(
        &self,
        module: ModuleId,
        scheduler: Address,
        extra: &[Tag],
        data: &[u8],
    ) -> Result<ProcessId, ClientError> {
        let mut tags = ao_tags("Process", []);
        tags.push(Tag::new("Module", module.to_string()));
        tags.push(Tag::new("Scheduler", scheduler.to_string()));
        tags.extend(extra.iter().cloned());
        let item = self.signer.sign(None, Some(self.anchor()), tags, data.to_vec());
        self.post_item(&item)?;
        Ok(ProcessId::from(item.id()))
    }

    /// Signs a message to `process` without sending it.
    pub fn message_item(&self, process: ProcessId, extra: &[Tag], data: &[u8]) -> DataItem {
        let mut tags = ao_tags("Message", []);
        tags.extend(extra.iter().cloned());
        self.signer
            .sign(Some(process.0), Some(self.anchor()), tags, data.to_vec())
    }

    /// Sends a message to `process`; returns its id once the node acknowledged it (durable).
    pub fn send(&self, process: ProcessId, extra: &[Tag], data: &[u8]) -> Result<MessageId, ClientError> {
        let item = self.message_item(process, extra, data);
        self.post_item(&item)?;
        Ok(MessageId::from(item.id()))
    }

    /// The result of `message` (waits on the node until it is evaluated).
    pub fn result(&self, process: ProcessId, message: MessageId) -> Result<Value, ClientError> {
        self.get(&format!("/result/{message}?process-id={process}"))
    }

    /// `POST {path}` with a JSON body, answered as JSON.
    pub fn post_json(&self, path: &str, body: &Value) -> Result<Value, ClientError> {
        let request = self.agent.post(&format!("{}{path}", self.base));
        Self::json(Self::read(
            request
                .set("Content-Type", "application/json")
                .send_string(&body.to_string()),
        )?)
    }

    /// The `assign` flow: puts `message` (held by the node) into `process`'s timeline too,
    /// without the fields named in `exclude`; returns the node's answer (`id` is the assignment's).
    pub fn assign(&self, process: ProcessId, message: MessageId, exclude: &[&str]) -> Result<Value, ClientError> {
        let mut url = format!("{}/?process-id={process}&assign={message}", self.base);
        if !exclude.is_empty() {
            url.push_str(&format!("&exclude={}", exclude.join(",")));
        }
        Self::json(Self::read(
            self.agent
                .post(&url)
                .set("Content-Type", "application/octet-stream")
                .send_bytes(&[]),
        )?)
    }

    /// Starts (`on`) or stops monitoring `process` as aoconnect's `monitor`/`unmonitor` do:
    /// `POST`/`DELETE /monitor/{process}` with a data item signed by this client targeting it.
    pub fn monitor(&self, process: ProcessId, on: bool) -> Result<Value, ClientError> {
        let item = self
            .signer
            .sign(Some(process.0), Some(self.anchor()), Vec::new(), b" ".to_vec());
        let url = format!("{}/monitor/{process}", self.base);
        let request = if on {
            self.agent.post(&url)
        } else {
            self.agent.delete(&url)
        };
        Self::json(Self::read(
            request
                .set("Content-Type", "application/octet-stream")
                .send_bytes(&item.to_bytes()),
        )?)
    }

    /// A dry run of `tags`/`data` against `process`.
    pub fn dry_run(&self, process: ProcessId, tags: &[Tag], data: &str) -> Result<Value, ClientError> {
        let body = serde_json::json!({"Tags": tags, "Data": data});
        let request = self.agent.post(&format!("{}/dry-run?process-id={process}", self.base));
        Self::json(Self::read(
            request
                .set("Content-Type", "application/json")
                .send_string(&body.to_string()),
        )?)
    }
}
