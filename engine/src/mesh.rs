//! The wires between a node's shards: two bounded single-producer rings per ordered pair of
//! shards (glommio shared channels), one for requests and answers, one for deliveries.
//!
//! - **Requests** (`Control`): an HTTP request that reached the wrong shard is handed, whole and
//!   with its verified data item, to the shard that owns its process, and the answer comes back
//!   the same way; a shard asks the others for a copy of a message (the `assign` flow). Each
//!   answer finds its request by a number local to the asking shard. Requests and answers
//!   cross in batches: those posted to one peer during one turn of the executor (every
//!   connection task that ran) go as one ring slot, so that a peer is woken once per batch,
//!   not once per request. A full ring holds the batch back; what is posted meanwhile joins
//!   the next one, and is bounded by the requests in flight (one per connection).
//! - **Deliveries** (`Vec<Remote>`): outbox messages, spawns and assignment copies for processes
//!   another shard owns, in batches, sent only once their cause is durable on the sending shard
//!   (see [`crate::shard::Remote`]). A full ring stops the sender (`send` awaits), which stops its
//!   shard's evaluation once its own bounded queue is full: backpressure, never growth.
//!
//! Nothing mutable is shared: each shard owns its ends. A ring hop costs tens of ns; waking a
//! parked shard costs tens of µs, which glommio's spin-before-park (`shards_spin_before_park_us`)
//! trades against idle CPU.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use futures_channel::oneshot;
use glommio::channels::shared_channel::{self, ConnectedReceiver, ConnectedSender, SharedReceiver, SharedSender};
use http::{HeaderMap, Method, StatusCode, Uri};
use hyper::body::Bytes;
use scheduler::data_item::DataItem;
use scheduler::{MessageId, ModuleId};

use crate::shard::Remote;

/// Slots of each request ring; each slot holds a batch of up to [`CONTROL_BATCH_MAX`] requests
/// and answers.
pub const CONTROL_RING_SLOTS: usize = 128;
/// Most requests and answers one batch carries.
pub const CONTROL_BATCH_MAX: usize = 256;
/// Most requests waiting to be handed to one peer while its ring is full; more fail at once
/// (the client gets 503). Answers are never held back: each answers a request received.
pub const CONTROL_QUEUE_ASKS_MAX: usize = 4096;
/// Slots of each delivery ring; each slot holds a batch of up to [`DELIVERY_BATCH_MAX`] items.
pub const DELIVERY_RING_SLOTS: usize = 64;
/// Most items one delivery batch carries.
pub const DELIVERY_BATCH_MAX: usize = 256;

/// How long a request to another shard waits before the wait is logged.
const ASK_PATIENCE: std::time::Duration = std::time::Duration::from_secs(10);

/// An HTTP request handed to the shard that owns its process.
#[derive(Debug)]
pub struct Forwarded {
    pub method: Method,
    pub uri: Uri,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The request's data item, already parsed and verified by the shard it reached.
    pub item: Option<VerifiedItem>,
}

/// A data item whose signature a shard has verified, with its bytes (travels in a request's
/// extensions so that the owning shard does not verify it again).
#[derive(Clone, Debug)]
pub struct VerifiedItem {
    pub bytes: Bytes,
    pub item: DataItem,
}

/// An HTTP answer on its way back to the shard holding the connection.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// What one shard asks another.
#[derive(Debug)]
pub enum Ask {
    Http(Box<Forwarded>),
    /// The bytes of a message, if the shard holds it durably.
    Message(MessageId),
    /// The log record of a module (kind and payload), if the shard holds it durably.
    Module(ModuleId),
}

/// The answer to an [`Ask`].
#[derive(Debug)]
pub enum Answer {
    Http(Reply),
    /// `Ok(None)`: not held here (or not durable yet); `Err`: the shard cannot tell now.
    Message(Result<Option<Vec<u8>>, String>),
    /// As for a message: the record's kind and payload.
    Module(Result<Option<(u8, Vec<u8>)>, String>),
}

#[derive(Debug)]
pub enum Control {
    Ask { id: u64, ask: Ask },
    Answer { id: u64, answer: Answer },
}

/// One shard's unconnected ends, made on the thread that starts the node and moved to the
/// shard's thread. Index `j` of each vector is the peer shard `j` (`None` at the shard's own).
pub struct Ends {
    pub index: usize,
    pub count: usize,
    control_tx: Vec<Option<SharedSender<Vec<Control>>>>,
    control_rx: Vec<Option<SharedReceiver<Vec<Control>>>>,
    data_tx: Vec<Option<SharedSender<Vec<Remote>>>>,
    data_rx: Vec<Option<SharedReceiver<Vec<Remote>>>>,
    settled: Arc<[AtomicU64]>,
}

/// The ends of every shard of a node of `count` shards.
pub fn ends(count: usize) -> Vec<Ends> {
    let settled: Arc<[AtomicU64]> = (0..count * count).map(|_| AtomicU64::new(0)).collect();
    let mut all: Vec<Ends> = (0..count)
        .map(|index| Ends {
            index,
            count,
            control_tx: (0..count).map(|_| None).collect(),
            control_rx: (0..count).map(|_| None).collect(),
            data_tx: (0..count).map(|_| None).collect(),
            data_rx: (0..count).map(|_| None).collect(),
            settled: Arc::clone(&settled),
        })
        .collect();
    for from in 0..count {
        for to in (0..count).filter(|&to| to != from) {
            let (tx, rx) = shared_channel::new_bounded(CONTROL_RING_SLOTS);
            all[from].control_tx[to] = Some(tx);
            all[to].control_rx[from] = Some(rx);
            let (tx, rx) = shared_channel::new_bounded(DELIVERY_RING_SLOTS);
            all[from].data_tx[to] = Some(tx);
            all[to].data_rx[from] = Some(rx);
        }
    }
    all
}

/// The sending end of a request ring and what waits to be sent on it.
struct Lane {
    sender: ConnectedSender<Vec<Control>>,
    /// The asking shard's requests waiting for answers (shared with [`Mesh::pending`]).
    pending: Pending,
    queue: RefCell<Vec<Control>>,
    /// Requests in `queue`.
    queued_asks: Cell<usize>,
    /// A task is sending the queue (it takes what is posted until the queue is empty).
    flushing: Cell<bool>,
}

impl Lane {
    /// Queues `control`; starts a task that sends the queue once this turn's posts are in.
    fn post(self: &Rc<Lane>, control: Control) {
        if matches!(control, Control::Ask { .. }) {
            self.queued_asks.set(self.queued_asks.get() + 1);
        }
        self.queue.borrow_mut().push(control);
        if self.flushing.replace(true) {
            return;
        }
        let lane = Rc::clone(self);
        // Spawned, the task runs after every task already runnable (the other connections of
        // this turn), whose posts join its first batch.
        glommio::spawn_local(async move {
            loop {
                let batch: Vec<Control> = {
                    let mut queue = lane.queue.borrow_mut();
                    let take = queue.len().min(CONTROL_BATCH_MAX);
                    let pending = lane.pending.borrow();
                    let mut batch = Vec::with_capacity(take);
                    for control in queue.drain(..take) {
                        if let Control::Ask { id, .. } = control {
                            lane.queued_asks.set(lane.queued_asks.get() - 1);
                            if !pending.contains_key(&id) {
                                // Its client went away while it waited here: not worth sending.
                                continue;
                            }
                        }
                        batch.push(control);
                    }
                    batch
                };
                if batch.is_empty() {
                    if lane.queue.borrow().is_empty() {
                        break;
                    }
                    continue;
                }
                let asks: Vec<u64> = batch
                    .iter()
                    .filter_map(|control| match control {
                        Control::Ask { id, .. } => Some(*id),
                        Control::Answer { .. } => None,
                    })
                    .collect();
                if lane.sender.send(batch).await.is_err() {
                    // The peer stopped: closing each request's answer channel ends its `ask`
                    // with an error.
                    let mut pending = lane.pending.borrow_mut();
                    for id in asks {
                        pending.remove(&id);
                    }
                }
            }
            lane.flushing.set(false);
        })
        .detach();
    }
}

/// What asking other shards for something durable gave (see [`Mesh::find_message`]).
#[derive(Debug)]
pub enum Asked<T> {
    Found(T),
    /// Every shard asked said it does not hold it.
    Absent,
    /// None gave it, and one could not tell (reading its log back, its ring full, stopped).
    Unsure(String),
}

/// Requests waiting for answers, by their number: the shard asked, and where its answer goes.
type Pending = Rc<RefCell<HashMap<u64, (usize, oneshot::Sender<Answer>)>>>;

/// A shard's connected ends.
pub struct Mesh {
    pub index: usize,
    pub count: usize,
    control: Vec<Option<Rc<Lane>>>,
    data: Vec<Option<ConnectedSender<Vec<Remote>>>>,
    pending: Pending,
    next: Cell<u64>,
    /// Deliveries each shard holds durably from each other one (see
    /// [`crate::shard::Shard::set_settlement`]): the only state the shards share, counters.
    pub settled: Arc<[AtomicU64]>,
}

/// Removes a request's entry from [`Mesh::pending`] when the request ends.
struct PendingGuard<'a> {
    mesh: &'a Mesh,
    id: u64,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.mesh.pending.borrow_mut().remove(&self.id);
    }
}

/// The receiving ends, taken by the tasks that serve them.
pub struct Receivers {
    pub control: Vec<(usize, ConnectedReceiver<Vec<Control>>)>,
    pub data: Vec<(usize, ConnectedReceiver<Vec<Remote>>)>,
}

impl Ends {
    /// Connects every end (on the shard's own executor); returns once every peer has too. The
    /// ends connect concurrently: each waits for its peer's, which connects in its own order.
    pub async fn connect(self) -> (Mesh, Receivers) {
        let control_tx: Vec<_> = self
            .control_tx
            .into_iter()
            .map(|tx| tx.map(|tx| glommio::spawn_local(tx.connect())))
            .collect();
        let data_tx: Vec<_> = self
            .data_tx
            .into_iter()
            .map(|tx| tx.map(|tx| glommio::spawn_local(tx.connect())))
            .collect();
        let control_rx: Vec<_> = self
            .control_rx
            .into_iter()
            .map(|rx| rx.map(|rx| glommio::spawn_local(rx.connect())))
            .collect();
        let data_rx: Vec<_> = self
            .data_rx
            .into_iter()
            .map(|rx| rx.map(|rx| glommio::spawn_local(rx.connect())))
            .collect();
        let pending = Pending::default();
        let mut control = Vec::with_capacity(self.count);
        for tx in control_tx {
            control.push(match tx {
                Some(task) => Some(Rc::new(Lane {
                    sender: task.await,
                    pending: Rc::clone(&pending),
                    queued_asks: Cell::new(0),
                    queue: RefCell::new(Vec::new()),
                    flushing: Cell::new(false),
                })),
                None => None,
            });
        }
        let mut data = Vec::with_capacity(self.count);
        for tx in data_tx {
            data.push(match tx {
                Some(task) => Some(task.await),
                None => None,
            });
        }
        let mut receivers = Receivers {
            control: Vec::new(),
            data: Vec::new(),
        };
        for (from, rx) in control_rx.into_iter().enumerate() {
            if let Some(task) = rx {
                receivers.control.push((from, task.await));
            }
        }
        for (from, rx) in data_rx.into_iter().enumerate() {
            if let Some(task) = rx {
                receivers.data.push((from, task.await));
            }
        }
        let mesh = Mesh {
            index: self.index,
            count: self.count,
            control,
            data,
            pending,
            next: Cell::new(0),
            settled: self.settled,
        };
        (mesh, receivers)
    }
}

impl Mesh {
    /// A mesh of one shard: no peers.
    pub fn single() -> Mesh {
        Mesh {
            index: 0,
            count: 1,
            control: vec![None],
            data: vec![None],
            pending: Pending::default(),
            next: Cell::new(0),
            settled: Arc::from([AtomicU64::new(0)]),
        }
    }

    /// Asks shard `to` and waits for its answer.
    pub async fn ask(&self, to: usize, ask: Ask) -> Result<Answer, String> {
        let lane = self.control[to]
            .as_ref()
            .ok_or_else(|| format!("shard {to} is this shard"))?;
        if lane.queued_asks.get() >= CONTROL_QUEUE_ASKS_MAX {
            return Err(format!(
                "shard {to} is busy: {CONTROL_QUEUE_ASKS_MAX} requests wait to be handed to it"
            ));
        }
        let id = self.next.get();
        self.next.set(id + 1);
        let (tx, rx) = oneshot::channel();
        self.pending.borrow_mut().insert(id, (to, tx));
        // However this ask ends (answered, failed, or dropped with its connection), its entry goes.
        let _pending = PendingGuard { mesh: self, id };
        lane.post(Control::Ask { id, ask });
        // A request unanswered for long is logged (and waited for still): it names the shard
        // and request, should a shard ever stall.
        let mut rx = rx;
        let mut waited = std::time::Duration::ZERO;
        loop {
            let answered = futures_lite::future::or(async { Some((&mut rx).await) }, async {
                glommio::timer::sleep(ASK_PATIENCE).await;
                None
            })
            .await;
            match answered {
                Some(answer) => return answer.map_err(|_| format!("shard {to} stopped before answering")),
                None => {
                    waited += ASK_PATIENCE;
                    tracing::warn!(
                        to,
                        id,
                        waited_s = waited.as_secs(),
                        "another shard has not answered a request yet"
                    );
                }
            }
        }
    }

    /// Every shard but this one.
    pub fn others(&self) -> impl Iterator<Item = usize> {
        let index = self.index;
        (0..self.count).filter(move |&to| to != index)
    }

    /// Asks each of `shards` in turn for message `id`; the first that holds it durably gives it.
    pub async fn find_message(&self, shards: impl IntoIterator<Item = usize>, id: MessageId) -> Asked<DataItem> {
        let mut unsure = None;
        for to in shards {
            match self.ask(to, Ask::Message(id)).await {
                Ok(Answer::Message(Ok(Some(bytes)))) => match DataItem::parse(&bytes) {
                    Ok(item) => return Asked::Found(item),
                    Err(error) => unsure = Some(format!("shard {to} holds message {id} unparsed: {error}")),
                },
                Ok(Answer::Message(Ok(None))) => {}
                Ok(Answer::Message(Err(reason))) | Err(reason) => unsure = Some(format!("shard {to}: {reason}")),
                Ok(_) => unsure = Some(format!("shard {to} answered out of turn")),
            }
        }
        unsure.map_or(Asked::Absent, Asked::Unsure)
    }

    /// Asks each of `shards` in turn for the log record of module `id` (kind and payload); the
    /// first that holds it durably gives it.
    pub async fn find_module(&self, shards: impl IntoIterator<Item = usize>, id: ModuleId) -> Asked<(u8, Vec<u8>)> {
        let mut unsure = None;
        for to in shards {
            match self.ask(to, Ask::Module(id)).await {
                Ok(Answer::Module(Ok(Some(record)))) => return Asked::Found(record),
                Ok(Answer::Module(Ok(None))) => {}
                Ok(Answer::Module(Err(reason))) | Err(reason) => unsure = Some(format!("shard {to}: {reason}")),
                Ok(_) => unsure = Some(format!("shard {to} answered out of turn")),
            }
        }
        unsure.map_or(Asked::Absent, Asked::Unsure)
    }

    /// Sends the answer to request `id` of shard `to` (with the next batch to it).
    pub fn answer(&self, to: usize, id: u64, answer: Answer) {
        if let Some(lane) = &self.control[to] {
            lane.post(Control::Answer { id, answer });
        }
    }

    /// Fails every request waiting for an answer from shard `to`, which stopped (its end of
    /// the request ring closed): their answers will not come.
    pub fn peer_stopped(&self, to: usize) {
        let failed: Vec<_> = {
            let mut pending = self.pending.borrow_mut();
            let ids: Vec<u64> = pending
                .iter()
                .filter(|(_, (at, _))| *at == to)
                .map(|(id, _)| *id)
                .collect();
            ids.into_iter().filter_map(|id| pending.remove(&id)).collect()
        };
        // Dropped outside the borrow: each closed channel ends its `ask` with an error.
        drop(failed);
    }

    /// Hands an answer from a peer to the request waiting for it.
    pub fn answered(&self, id: u64, answer: Answer) {
        if let Some((_, waiting)) = self.pending.borrow_mut().remove(&id) {
            let _ = waiting.send(answer);
        }
    }

    /// Sends a batch of deliveries to shard `to`; waits while its ring is full. `Err` when that
    /// shard has stopped (the batch is dropped: replay re-derives it).
    pub async fn deliver(&self, to: usize, batch: Vec<Remote>) -> Result<(), ()> {
        match &self.data[to] {
            Some(sender) => sender.send(batch).await.map_err(|_| ()),
            None => Err(()),
        }
    }
}
