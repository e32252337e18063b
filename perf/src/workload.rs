//! What the load generator sends: the scenarios' signed data items, ticket by ticket.
//!
//! A workload is a pure function from a ticket number to a signed item (plus the signing keys),
//! so the HTTP driver and the in-process engine driver send exactly the same messages, and a
//! run can be repeated.

use clap::ValueEnum;
use engine::client::{ao_tags as ao, fresh_anchor};
use scheduler::data_item::DataItem;
use scheduler::signer::Signer;
use scheduler::tags::Tag;
use scheduler::{Address, ModuleId, ProcessId};

/// The scenarios of PERF.md and issue [perf].
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// Many processes, each a trivial counter, round robin.
    Many,
    /// One hot counter process.
    Hot,
    /// Ping-pong chains: each client message starts a rally of `PINGPONG_HOPS` messages between
    /// two processes, carried by the messenger.
    Pingpong,
    /// A spawn storm: every client message is a new process.
    Spawn,
    /// One matching-engine process (the exchange sample) fed the exchange-core order mix.
    Exchange,
}

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Many => "many",
            Scenario::Hot => "hot",
            Scenario::Pingpong => "pingpong",
            Scenario::Spawn => "spawn",
            Scenario::Exchange => "exchange",
        }
    }

    /// The sample module the scenario runs.
    pub fn sample(self) -> &'static str {
        match self {
            Scenario::Many | Scenario::Hot | Scenario::Spawn => "counter",
            Scenario::Pingpong => "pingpong",
            Scenario::Exchange => "exchange",
        }
    }

    /// One line on what the scenario sends, for the reports.
    pub fn describe(self, processes: usize) -> String {
        match self {
            Scenario::Many => format!("Action=Increment to {processes} counter processes, round robin"),
            Scenario::Hot => "Action=Increment to one counter process".to_owned(),
            Scenario::Pingpong => format!(
                "Action=Serve to one of {} ping-pong pairs: a rally of {} Ball messages between the two \
                 processes, each assigned, evaluated and delivered by the messenger ({} messages per client message)",
                processes / 2,
                PINGPONG_HOPS + 1,
                PINGPONG_HOPS + 2
            ),
            Scenario::Spawn => "a new counter process per client message (Type=Process)".to_owned(),
            Scenario::Exchange => format!(
                "exchange sample, {EXCHANGE_ACCOUNTS} accounts, {EXCHANGE_RESTING_ORDERS} resting orders; mix 82 % move, \
                 6 % cancel, 9 % GTC, 3 % IOC (some cancels, moves and GTCs are rejected: a filled or cancelled \
                 order, a duplicate id)"
            ),
        }
    }
}

/// Ball messages after each Serve: the rally's length.
pub const PINGPONG_HOPS: u64 = 8;
/// Accounts trading on the exchange, as in exchange-core's workload.
pub const EXCHANGE_ACCOUNTS: usize = 1000;
/// Orders resting in the book before measuring; the ids 1..=this are the ones moved,
/// cancelled and re-placed.
pub const EXCHANGE_RESTING_ORDERS: u64 = 1000;
/// The mid price, in ticks.
const EXCHANGE_MID: u64 = 10_000;

/// splitmix64: a well-mixed stream of choices from the ticket number.
pub fn mix(ticket: u64) -> u64 {
    let mut z = ticket.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// What each ticket sends.
pub enum Workload {
    /// `Action: Increment` to the counters, round robin.
    Counter { targets: Vec<ProcessId>, signer: Signer },
    /// `Action: Serve` to the first process of a pair, naming the second as the peer.
    Pingpong {
        pairs: Vec<(ProcessId, ProcessId)>,
        signer: Signer,
    },
    /// A new process of `module` on `scheduler`.
    Spawn {
        module: ModuleId,
        scheduler: Address,
        signer: Signer,
    },
    /// The exchange-core mix to one exchange process, each order signed by its owner.
    Exchange { process: ProcessId, accounts: Vec<Signer> },
}

impl Workload {
    /// A resting order of the book: odd ids buy below the mid, even ids sell above it.
    pub fn resting_order(id: u64, distance: u64) -> Vec<Tag> {
        let (side, price) = if id % 2 == 1 {
            ("Buy", EXCHANGE_MID - 1 - distance)
        } else {
            ("Sell", EXCHANGE_MID + 1 + distance)
        };
        vec![
            Tag::new("Action", "Place"),
            Tag::new("Order-Id", id.to_string()),
            Tag::new("Side", side),
            Tag::new("Price", price.to_string()),
            Tag::new("Size", "10"),
            Tag::new("Type", "GTC"),
        ]
    }

    /// The signed orders that build the exchange's book before measuring.
    pub fn exchange_book(process: ProcessId, accounts: &[Signer]) -> Vec<DataItem> {
        (1..=EXCHANGE_RESTING_ORDERS)
            .map(|id| {
                let tags = ao("Message", Self::resting_order(id, mix(id) % 20));
                accounts[id as usize % accounts.len()].sign(Some(process.0), Some(fresh_anchor()), tags, Vec::new())
            })
            .collect()
    }

    /// The signed item of `ticket`. For the exchange: 82 % move a resting order (within its
    /// side, so it stays in the book), 6 % cancel one, 9 % place a GTC with one of the book's ids
    /// (a duplicate while that order still rests, close enough to the mid to cross sometimes), 3 %
    /// an aggressive IOC with a fresh id.
    pub fn item(&self, ticket: u64) -> DataItem {
        match self {
            Workload::Counter { targets, signer } => {
                let target = targets[ticket as usize % targets.len()];
                let tags = ao("Message", vec![Tag::new("Action", "Increment")]);
                signer.sign(Some(target.0), Some(fresh_anchor()), tags, Vec::new())
            }
            Workload::Pingpong { pairs, signer } => {
                let (first, second) = pairs[ticket as usize % pairs.len()];
                let tags = ao(
                    "Message",
                    vec![
                        Tag::new("Action", "Serve"),
                        Tag::new("Peer", second.to_string()),
                        Tag::new("Count", PINGPONG_HOPS.to_string()),
                    ],
                );
                signer.sign(Some(first.0), Some(fresh_anchor()), tags, Vec::new())
            }
            Workload::Spawn {
                module,
                scheduler,
                signer,
            } => {
                let tags = ao(
                    "Process",
                    vec![
                        Tag::new("Module", module.to_string()),
                        Tag::new("Scheduler", scheduler.to_string()),
                        Tag::new("Name", format!("storm-{ticket}")),
                    ],
                );
                signer.sign(None, Some(fresh_anchor()), tags, Vec::new())
            }
            Workload::Exchange { process, accounts } => {
                let r = mix(ticket);
                let id = 1 + (r >> 8) % EXCHANGE_RESTING_ORDERS;
                let distance = (r >> 24) % 20;
                let (owner, tags) = match r % 100 {
                    0..=81 => {
                        let price = if id % 2 == 1 {
                            EXCHANGE_MID - 1 - distance
                        } else {
                            EXCHANGE_MID + 1 + distance
                        };
                        let tags = vec![
                            Tag::new("Action", "Move"),
                            Tag::new("Order-Id", id.to_string()),
                            Tag::new("Price", price.to_string()),
                        ];
                        (id, tags)
                    }
                    82..=87 => (
                        id,
                        vec![Tag::new("Action", "Cancel"), Tag::new("Order-Id", id.to_string())],
                    ),
                    88..=96 => (id, Self::resting_order(id, distance.saturating_sub(3))),
                    _ => {
                        let fresh = EXCHANGE_RESTING_ORDERS + 1 + ticket;
                        let (side, price) = if r >> 40 & 1 == 1 {
                            ("Buy", EXCHANGE_MID + 25)
                        } else {
                            ("Sell", EXCHANGE_MID - 25)
                        };
                        let tags = vec![
                            Tag::new("Action", "Place"),
                            Tag::new("Order-Id", fresh.to_string()),
                            Tag::new("Side", side),
                            Tag::new("Price", price.to_string()),
                            Tag::new("Size", "5"),
                            Tag::new("Type", "IOC"),
                        ];
                        (fresh, tags)
                    }
                };
                let account = &accounts[owner as usize % accounts.len()];
                account.sign(Some(process.0), Some(fresh_anchor()), ao("Message", tags), Vec::new())
            }
        }
    }
}

/// Signs the setup of `scenario` (its module, its processes, the exchange's book) and hands each
/// item, in order, to `submit`, which lands it on the node under test (over HTTP or through the
/// engine's API). Returns the workload that the measured phases then send.
pub fn prepare(
    scenario: Scenario,
    processes: usize,
    node: Address,
    submit: &mut dyn FnMut(DataItem) -> Result<(), String>,
) -> Result<Workload, String> {
    let owner = Signer::generate_ed25519();
    let wasm = engine::compute::samples::wasm(scenario.sample()).ok_or("no such sample")?;
    let module_item = owner.sign(
        None,
        Some(fresh_anchor()),
        ao(
            "Module",
            vec![
                Tag::new("Module-Format", engine::compute::MODULE_FORMAT_WASM32),
                Tag::new("Input-Encoding", "JSON-1"),
                Tag::new("Output-Encoding", "JSON-1"),
                Tag::new("Content-Type", "application/wasm"),
            ],
        ),
        wasm,
    );
    let module = ModuleId::from(module_item.id());
    submit(module_item)?;
    let mut spawn = |name: String| -> Result<ProcessId, String> {
        let tags = ao(
            "Process",
            vec![
                Tag::new("Module", module.to_string()),
                Tag::new("Scheduler", node.to_string()),
                Tag::new("Name", name),
            ],
        );
        let item = owner.sign(None, Some(fresh_anchor()), tags, Vec::new());
        let pid = ProcessId::from(item.id());
        submit(item)?;
        Ok(pid)
    };
    let processes = processes.max(1);
    let workload = match scenario {
        Scenario::Many | Scenario::Hot => {
            let count = if scenario == Scenario::Hot { 1 } else { processes };
            let targets = (0..count)
                .map(|i| spawn(format!("counter-{i}")))
                .collect::<Result<_, _>>()?;
            Workload::Counter {
                targets,
                signer: Signer::generate_ed25519(),
            }
        }
        Scenario::Pingpong => {
            let pairs = (0..processes.div_ceil(2))
                .map(|i| Ok((spawn(format!("ping-{i}"))?, spawn(format!("pong-{i}"))?)))
                .collect::<Result<_, String>>()?;
            Workload::Pingpong {
                pairs,
                signer: Signer::generate_ed25519(),
            }
        }
        Scenario::Spawn => Workload::Spawn {
            module,
            scheduler: node,
            signer: Signer::generate_ed25519(),
        },
        Scenario::Exchange => {
            let process = spawn("exchange".to_owned())?;
            let accounts: Vec<Signer> = (0..EXCHANGE_ACCOUNTS).map(|_| Signer::generate_ed25519()).collect();
            for order in Workload::exchange_book(process, &accounts) {
                submit(order)?;
            }
            Workload::Exchange { process, accounts }
        }
    };
    Ok(workload)
}
