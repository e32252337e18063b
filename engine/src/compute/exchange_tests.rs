//! Tests of the exchange sample (`engine/samples/exchange.wat`), a price-time priority limit
//! order book: each action's behaviour and rejections, the Fill notices, state that survives
//! large inputs and snapshots, and a seeded random run of the exchange-core order mix checked
//! against a plain reference book written here.
//!
//! They check behaviour, not speed; the gas test only bounds the fuel of typical messages and
//! prints it (`cargo test -p engine --lib exchange_gas -- --nocapture`).

use serde_json::{json, Value};

use super::samples;
use super::tests::id;
use super::{CompiledModule, ComputeConfig, Evaluation, ProcessInstance, ProcessLimits, Runtime, MODULE_FORMAT_WASM32};

const MIB: u64 = 1024 * 1024;

const LIMITS: ProcessLimits = ProcessLimits {
    memory_bytes_max: 64 * MIB,
    fuel_per_message: 100_000_000,
};

/// Fills per message after which a taker stops; its remainder is cancelled (exchange.wat).
const FILLS_MAX: usize = 512;

fn runtime(instance_count_max: u32) -> Runtime {
    Runtime::new(ComputeConfig {
        instance_count_max,
        memory_bytes_max: 128 * MIB,
        table_elements_max: 1000,
        output_bytes_max: MIB,
    })
    .expect("test config is valid")
}

fn module(runtime: &Runtime) -> CompiledModule {
    let wasm = samples::wasm("exchange").expect("the exchange sample exists");
    runtime
        .compile(&wasm, MODULE_FORMAT_WASM32)
        .expect("the exchange compiles")
}

/// The 43-character id of test account `n`.
fn account(n: usize) -> String {
    format!("{:_>43}", format!("account-{n}"))
}

/// A msg exactly as the host writes it (the compute tests' builder).
fn msg(from: &str, data: &str, tags: &[(&str, &str)]) -> Vec<u8> {
    super::tests::msg_with(from, data, tags)
}

/// The env of an exchange process, spawned with `Notify-Fills` = `notify` when given, as the
/// host writes it (serde_json sorts the keys: Module before Process). The Module carries
/// `Notify-Fills=true` too, to show that only the Process's tags count.
fn env(notify: Option<&str>) -> Vec<u8> {
    let mut tags = vec![
        json!({"name": "Type", "value": "Process"}),
        json!({"name": "Module", "value": id('M')}),
    ];
    if let Some(value) = notify {
        tags.push(json!({"name": "Notify-Fills", "value": value}));
    }
    let module_tags = json!([{"name": "Module-Format", "value": "wasm32-unknown-unknown"}, {"name": "Notify-Fills", "value": "true"}]);
    serde_json::to_vec(&json!({
        "Process": {"Id": id('P'), "Owner": id('O'), "Tags": tags},
        "Module": {"Id": id('M'), "Owner": id('O'), "Tags": module_tags},
    }))
    .expect("env serialises")
}

/// Tags as (name, value), values owned.
type OwnedTags = Vec<(&'static str, String)>;

/// One Fill notice as a tuple: (Target, Order-Id, Side, Price, Size).
type Notice = (String, u64, &'static str, u32, u32);

/// What the exchange answered to one message.
#[derive(Debug)]
struct Answer {
    /// The Output string (the JSON object of what happened).
    output: String,
    notices: Vec<Notice>,
    gas_used: u64,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.output).unwrap_or_else(|e| panic!("Output {:?} is not JSON: {e}", self.output))
    }
}

/// An exchange process with the env it was spawned with.
struct Exchange {
    process: ProcessInstance,
    env: Vec<u8>,
}

impl Exchange {
    fn new(runtime: &Runtime, notify: Option<&str>) -> Exchange {
        Exchange {
            process: module(runtime).instantiate(LIMITS).expect("a slot is free"),
            env: env(notify),
        }
    }

    fn send_data(&mut self, from: &str, data: &str, tags: &[(&str, &str)]) -> Answer {
        let evaluation = self.process.handle(&msg(from, data, tags), &self.env);
        answer(&evaluation)
    }

    fn send(&mut self, from: &str, tags: &[(&str, &str)]) -> Answer {
        self.send_data(from, "", tags)
    }

    fn place(&mut self, from: &str, order: u64, side: &str, price: u32, size: u32, kind: &str) -> Answer {
        let (order, price, size) = (order.to_string(), price.to_string(), size.to_string());
        self.send(
            from,
            &[
                ("Action", "Place"),
                ("Order-Id", &order),
                ("Side", side),
                ("Price", &price),
                ("Size", &size),
                ("Type", kind),
            ],
        )
    }

    fn cancel(&mut self, from: &str, order: u64) -> Answer {
        self.send(from, &[("Action", "Cancel"), ("Order-Id", &order.to_string())])
    }

    fn move_to(&mut self, from: &str, order: u64, price: u32) -> Answer {
        self.send(
            from,
            &[
                ("Action", "Move"),
                ("Order-Id", &order.to_string()),
                ("Price", &price.to_string()),
            ],
        )
    }
}

fn answer(evaluation: &Evaluation) -> Answer {
    let Evaluation::Returned { output, gas_used } = evaluation else {
        panic!("expected Returned, got {evaluation:?}");
    };
    let envelope: Value = serde_json::from_slice(output).expect("the result is JSON");
    assert_eq!(envelope["ok"], true, "{envelope}");
    let response = &envelope["response"];
    assert!(response.get("Error").is_none(), "{response}");
    let notices = response["Messages"]
        .as_array()
        .expect("Messages is an array")
        .iter()
        .map(notice)
        .collect();
    Answer {
        output: response["Output"].as_str().expect("Output is a string").to_string(),
        notices,
        gas_used: *gas_used,
    }
}

fn notice(message: &Value) -> Notice {
    let tags: Vec<(&str, &str)> = message["Tags"]
        .as_array()
        .expect("Tags is an array")
        .iter()
        .map(|t| (t["name"].as_str().unwrap(), t["value"].as_str().unwrap()))
        .collect();
    let names: Vec<&str> = tags.iter().map(|(name, _)| *name).collect();
    assert_eq!(names, ["Action", "Order-Id", "Price", "Size", "Side"], "{message}");
    assert_eq!(tags[0].1, "Fill");
    let side = match tags[4].1 {
        "Buy" => "Buy",
        "Sell" => "Sell",
        other => panic!("Side {other:?}"),
    };
    (
        message["Target"].as_str().expect("a Target").to_string(),
        tags[1].1.parse().expect("a decimal Order-Id"),
        side,
        tags[2].1.parse().expect("a decimal Price"),
        tags[3].1.parse().expect("a decimal Size"),
    )
}

/// The Output of an accepted action: `fills` as (maker, taker, price, size).
fn accepted(order: u64, fills: &[(u64, u64, u32, u32)], rested: u32, cancelled: u32) -> String {
    let fills: Vec<String> = fills
        .iter()
        .map(|(maker, taker, price, size)| {
            format!(r#"{{"maker":{maker},"taker":{taker},"price":{price},"size":{size}}}"#)
        })
        .collect();
    format!(
        r#"{{"order":{order},"fills":[{}],"rested":{rested},"cancelled":{cancelled}}}"#,
        fills.join(",")
    )
}

fn rejected(reason: &str) -> String {
    format!(r#"{{"rejected":"{reason}"}}"#)
}

#[test]
fn exchange_gtc_rests_and_a_crossing_order_sweeps_fifo_at_the_makers_prices() {
    let runtime = runtime(1);
    let mut book = Exchange::new(&runtime, None);
    let (a, b, c) = (account(1), account(2), account(3));

    let rest = book.place(&a, 1, "Sell", 100, 5, "GTC");
    assert_eq!(rest.output, accepted(1, &[], 5, 0));
    assert!(rest.notices.is_empty());
    assert_eq!(book.place(&b, 2, "Sell", 100, 5, "GTC").output, accepted(2, &[], 5, 0));
    assert_eq!(book.place(&a, 3, "Sell", 101, 5, "GTC").output, accepted(3, &[], 5, 0));
    // A bid below the asks rests without filling.
    assert_eq!(book.place(&c, 4, "Buy", 99, 7, "GTC").output, accepted(4, &[], 7, 0));

    // Best price first, FIFO within 100 (order 1 before order 2), each at the maker's price.
    let sweep = book.place(&c, 5, "Buy", 105, 12, "GTC");
    assert_eq!(
        sweep.output,
        accepted(5, &[(1, 5, 100, 5), (2, 5, 100, 5), (3, 5, 101, 2)], 0, 0)
    );
    assert_eq!(sweep.json()["fills"].as_array().unwrap().len(), 3);
    // Order 3 has 3 left at 101; a larger GTC buy takes them and rests its remainder.
    assert_eq!(
        book.place(&b, 6, "Buy", 101, 10, "GTC").output,
        accepted(6, &[(3, 6, 101, 3)], 7, 0)
    );
    // The bids are now 6 (7 at 101) then 4 (7 at 99): a sell sweeps them down.
    assert_eq!(
        book.place(&a, 7, "Sell", 90, 20, "GTC").output,
        accepted(7, &[(6, 7, 101, 7), (4, 7, 99, 7)], 6, 0)
    );
}

#[test]
fn exchange_ioc_remainder_is_cancelled_and_never_rests() {
    let runtime = runtime(1);
    let mut book = Exchange::new(&runtime, None);
    let (a, b) = (account(1), account(2));
    book.place(&a, 1, "Buy", 50, 4, "GTC");
    assert_eq!(
        book.place(&b, 2, "Sell", 50, 10, "IOC").output,
        accepted(2, &[(1, 2, 50, 4)], 0, 6)
    );
    assert_eq!(book.place(&b, 3, "Sell", 60, 10, "IOC").output, accepted(3, &[], 0, 10));
    // Neither IOC rests: a buy at their prices finds nothing, and their ids are free again.
    assert_eq!(book.place(&a, 4, "Buy", 60, 1, "GTC").output, accepted(4, &[], 1, 0));
    assert_eq!(book.cancel(&b, 2).output, rejected("unknown Order-Id 2"));
    assert_eq!(book.place(&b, 3, "Sell", 70, 1, "GTC").output, accepted(3, &[], 1, 0));
}

#[test]
fn exchange_cancel_removes_the_order_from_matching() {
    let runtime = runtime(1);
    let mut book = Exchange::new(&runtime, None);
    let (a, b) = (account(1), account(2));
    book.place(&a, 1, "Sell", 100, 5, "GTC");
    book.place(&a, 2, "Sell", 100, 3, "GTC");
    assert_eq!(book.cancel(&a, 1).output, accepted(1, &[], 0, 5));
    assert_eq!(book.cancel(&a, 1).output, rejected("unknown Order-Id 1"));
    assert_eq!(
        book.place(&b, 3, "Buy", 100, 5, "GTC").output,
        accepted(3, &[(2, 3, 100, 3)], 2, 0)
    );
    // The last ask is gone: the book has no asks, and a sell rests at any price above the bid.
    assert_eq!(book.cancel(&b, 3).output, accepted(3, &[], 0, 2));
    assert_eq!(book.place(&b, 4, "Buy", 65535, 5, "IOC").output, accepted(4, &[], 0, 5));
    assert_eq!(book.place(&a, 5, "Sell", 1, 5, "IOC").output, accepted(5, &[], 0, 5));
}

#[test]
fn exchange_move_changes_price_loses_priority_and_may_match() {
    let runtime = runtime(1);
    let mut book = Exchange::new(&runtime, None);
    let (a, b, c) = (account(1), account(2), account(3));
    book.place(&a, 1, "Sell", 101, 5, "GTC");
    book.place(&b, 2, "Sell", 100, 5, "GTC");
    assert_eq!(book.move_to(&a, 1, 100).output, accepted(1, &[], 5, 0));
    // At 100: order 2, then order 1. Moving 2 to the same price sends it to the back.
    assert_eq!(book.move_to(&b, 2, 100).output, accepted(2, &[], 5, 0));
    assert_eq!(
        book.place(&c, 3, "Buy", 100, 6, "GTC").output,
        accepted(3, &[(1, 3, 100, 5), (2, 3, 100, 1)], 0, 0)
    );
    // A resting bid moved across the spread matches as a GTC taker and rests the remainder.
    book.place(&c, 4, "Buy", 90, 10, "GTC");
    assert_eq!(book.move_to(&c, 4, 100).output, accepted(4, &[(2, 4, 100, 4)], 6, 0));
    // It rests at 100 now: a sell at 100 fills against it, at 100.
    assert_eq!(
        book.place(&a, 5, "Sell", 95, 2, "IOC").output,
        accepted(5, &[(4, 5, 100, 2)], 0, 0)
    );
    // A move that fills the order entirely removes it.
    book.place(&a, 6, "Sell", 110, 4, "GTC");
    assert_eq!(book.move_to(&a, 6, 100).output, accepted(6, &[(4, 6, 100, 4)], 0, 0));
    assert_eq!(book.cancel(&a, 6).output, rejected("unknown Order-Id 6"));
    assert_eq!(book.cancel(&c, 4).output, rejected("unknown Order-Id 4"));
}

#[test]
fn exchange_reduce_keeps_priority_and_removes_at_zero() {
    let runtime = runtime(1);
    let mut book = Exchange::new(&runtime, None);
    let (a, b) = (account(1), account(2));
    book.place(&a, 1, "Buy", 10, 8, "GTC");
    book.place(&a, 2, "Buy", 10, 8, "GTC");
    let reduce = |book: &mut Exchange, from: &str, order: &str, size: &str| {
        book.send(from, &[("Action", "Reduce"), ("Order-Id", order), ("Size", size)])
            .output
    };
    assert_eq!(reduce(&mut book, &a, "1", "5"), accepted(1, &[], 3, 5));
    assert_eq!(
        reduce(&mut book, &b, "1", "1"),
        rejected("Order-Id 1 belongs to another account")
    );
    assert_eq!(
        book.place(&b, 3, "Sell", 10, 4, "IOC").output,
        accepted(3, &[(1, 3, 10, 3), (2, 3, 10, 1)], 0, 0)
    );
    assert_eq!(reduce(&mut book, &a, "2", "100"), accepted(2, &[], 0, 7));
    assert_eq!(book.place(&b, 4, "Sell", 10, 4, "IOC").output, accepted(4, &[], 0, 4));
}

#[test]
fn exchange_rejects_change_nothing() {
    let runtime = runtime(1);
    let mut book = Exchange::new(&runtime, None);
    let (a, b) = (account(1), account(2));
    book.place(&a, 42, "Sell", 100, 5, "GTC");
    let place = |order: &str, side: &str, price: &str, size: &str, kind: &str| {
        vec![
            ("Action", "Place".to_string()),
            ("Order-Id", order.to_string()),
            ("Side", side.to_string()),
            ("Price", price.to_string()),
            ("Size", size.to_string()),
            ("Type", kind.to_string()),
        ]
    };
    let cases: Vec<(&str, OwnedTags, &str)> = vec![
        (&a, vec![], "missing or unknown Action"),
        (&a, vec![("Action", "Buy".into())], "missing or unknown Action"),
        (
            "short-id",
            place("1", "Buy", "100", "5", "GTC"),
            "From is not a 43-character id",
        ),
        (&a, place("", "Buy", "100", "5", "GTC"), "missing or invalid Order-Id"),
        (&a, place("x1", "Buy", "100", "5", "GTC"), "missing or invalid Order-Id"),
        (
            &a,
            place("18446744073709551616", "Buy", "100", "5", "GTC"),
            "missing or invalid Order-Id",
        ),
        (&a, place("1", "buy", "100", "5", "GTC"), "Side must be Buy or Sell"),
        (&a, place("1", "Buy", "abc", "5", "GTC"), "missing or invalid Price"),
        (&a, place("1", "Buy", "0", "5", "GTC"), "Price 0 out of range 1..65535"),
        (
            &a,
            place("1", "Buy", "65536", "5", "GTC"),
            "Price 65536 out of range 1..65535",
        ),
        (
            &a,
            place("1", "Buy", "100", "0", "GTC"),
            "Size 0 out of range 1..4294967295",
        ),
        (
            &a,
            place("1", "Buy", "100", "4294967296", "GTC"),
            "Size 4294967296 out of range 1..4294967295",
        ),
        (&a, place("1", "Buy", "100", "-1", "GTC"), "missing or invalid Size"),
        (&a, place("1", "Buy", "100", "5", "FOK"), "Type must be GTC or IOC"),
        (&b, place("42", "Buy", "100", "5", "GTC"), "duplicate Order-Id 42"),
        (
            &a,
            vec![("Action", "Cancel".into()), ("Order-Id", "7".into())],
            "unknown Order-Id 7",
        ),
        (
            &b,
            vec![("Action", "Cancel".into()), ("Order-Id", "42".into())],
            "Order-Id 42 belongs to another account",
        ),
        (
            &a,
            vec![
                ("Action", "Move".into()),
                ("Order-Id", "7".into()),
                ("Price", "100".into()),
            ],
            "unknown Order-Id 7",
        ),
        (
            &a,
            vec![
                ("Action", "Move".into()),
                ("Order-Id", "42".into()),
                ("Price", "0".into()),
            ],
            "Price 0 out of range 1..65535",
        ),
        (
            &a,
            vec![("Action", "Move".into()), ("Price", "100".into())],
            "missing or invalid Order-Id",
        ),
        (
            &b,
            vec![
                ("Action", "Move".into()),
                ("Order-Id", "42".into()),
                ("Price", "99".into()),
            ],
            "Order-Id 42 belongs to another account",
        ),
        (
            &a,
            vec![("Action", "Reduce".into()), ("Order-Id", "42".into())],
            "missing or invalid Size",
        ),
    ];
    for (from, tags, reason) in cases {
        let tags: Vec<(&str, &str)> = tags.iter().map(|(name, value)| (*name, value.as_str())).collect();
        let answer = book.send(from, &tags);
        assert_eq!(answer.output, rejected(reason), "tags {tags:?}");
        assert_eq!(answer.json()["rejected"], reason);
        assert!(answer.notices.is_empty());
    }
    // Order 42 is untouched: 5 at 100, owned by a.
    assert_eq!(
        book.place(&b, 1, "Buy", 100, 9, "IOC").output,
        accepted(1, &[(42, 1, 100, 5)], 0, 4)
    );
}

#[test]
fn exchange_notify_fills_sends_two_fill_messages_per_fill() {
    let runtime = runtime(2);
    let (a, b, c) = (account(1), account(2), account(3));
    let mut book = Exchange::new(&runtime, Some("true"));
    assert!(book.place(&a, 1, "Sell", 100, 5, "GTC").notices.is_empty());
    book.place(&b, 2, "Sell", 101, 5, "GTC");
    let sweep = book.place(&c, 3, "Buy", 101, 7, "IOC");
    assert_eq!(sweep.output, accepted(3, &[(1, 3, 100, 5), (2, 3, 101, 2)], 0, 0));
    assert_eq!(
        sweep.notices,
        vec![
            (a.clone(), 1, "Sell", 100, 5),
            (c.clone(), 3, "Buy", 100, 5),
            (b.clone(), 2, "Sell", 101, 2),
            (c.clone(), 3, "Buy", 101, 2),
        ]
    );
    assert!(book.cancel(&b, 2).notices.is_empty());

    // The same with the Process object first in the env, the other key order.
    let process_first = format!(
        r#"{{"Process":{{"Id":"{p}","Owner":"{o}","Tags":[{{"name":"Notify-Fills","value":"true"}}]}},"Module":{{"Id":"{m}","Owner":"{o}","Tags":[]}}}}"#,
        p = id('P'),
        o = id('O'),
        m = id('M'),
    );
    let mut book = Exchange {
        process: module(&runtime).instantiate(LIMITS).unwrap(),
        env: process_first.into_bytes(),
    };
    book.place(&a, 1, "Sell", 100, 5, "GTC");
    let fill = book.place(&c, 3, "Buy", 100, 1, "GTC");
    assert_eq!(
        fill.notices,
        vec![(a.clone(), 1, "Sell", 100, 1), (c.clone(), 3, "Buy", 100, 1)]
    );
    drop(book);

    // Off unless the Process's own tag says "true" (the Module's tag does not count).
    for notify in [None, Some("false")] {
        let mut quiet = Exchange::new(&runtime, notify);
        quiet.place(&a, 1, "Sell", 100, 5, "GTC");
        let fill = quiet.place(&c, 3, "Buy", 100, 5, "GTC");
        assert_eq!(fill.output, accepted(3, &[(1, 3, 100, 5)], 0, 0));
        assert!(fill.notices.is_empty());
    }
}

#[test]
fn exchange_state_survives_large_inputs_and_snapshots() {
    let runtime = runtime(2);
    let module = module(&runtime);
    let (a, b) = (account(1), account(2));
    let mut book = Exchange {
        process: module.instantiate(LIMITS).unwrap(),
        env: env(None),
    };
    // The first message lands where the book lives, and is larger than the whole state area:
    // the prelude moves it above the state before the book is touched.
    let big = "d".repeat(5 * MIB as usize);
    let first = book.send_data(
        &a,
        &big,
        &[
            ("Action", "Place"),
            ("Order-Id", "1"),
            ("Side", "Sell"),
            ("Price", "100"),
            ("Size", "5"),
            ("Type", "GTC"),
        ],
    );
    assert_eq!(first.output, accepted(1, &[], 5, 0));
    book.place(&a, 2, "Sell", 101, 5, "GTC");
    let second = book.send_data(&b, &big, &[("Action", "Cancel"), ("Order-Id", "2")]);
    assert_eq!(second.output, rejected("Order-Id 2 belongs to another account"));

    let snapshot = book.process.snapshot();
    let mut copy = Exchange {
        process: module.instantiate_from(LIMITS, &snapshot).unwrap(),
        env: env(None),
    };
    for exchange in [&mut book, &mut copy] {
        assert_eq!(
            exchange.place(&b, 3, "Buy", 101, 8, "IOC").output,
            accepted(3, &[(1, 3, 100, 5), (2, 3, 101, 3)], 0, 0)
        );
    }
    assert_eq!(copy.process.memory_sha256(), book.process.memory_sha256());
}

#[test]
fn exchange_stops_a_taker_at_fills_max_and_cancels_its_remainder() {
    let runtime = runtime(1);
    let mut book = Exchange::new(&runtime, Some("true"));
    for n in 0..600u64 {
        book.place(
            &account(n as usize % 100),
            n + 1,
            "Sell",
            100 + (n % 3) as u32,
            1,
            "GTC",
        );
    }
    let sweep = book.place(&account(100), 10_000, "Buy", 200, 1000, "GTC");
    let json = sweep.json();
    assert_eq!(json["fills"].as_array().unwrap().len(), FILLS_MAX);
    assert_eq!(
        (json["rested"].as_u64(), json["cancelled"].as_u64()),
        (Some(0), Some(488))
    );
    assert_eq!(sweep.notices.len(), messenger::OUTBOX_ENTRIES_MAX);
    // Price-time order: all 200 at 100, all 200 at 101, then the first 112 at 102.
    let last = &json["fills"][FILLS_MAX - 1];
    assert_eq!((last["maker"].as_u64(), last["price"].as_u64()), (Some(336), Some(102)));
    let rest = book.place(&account(100), 10_001, "Buy", 200, 1000, "IOC").json();
    assert_eq!(rest["fills"].as_array().unwrap().len(), 88);
    assert_eq!(rest["fills"][0]["maker"], 339);
    assert_eq!(rest["cancelled"], 912);
}

#[test]
fn exchange_refuses_past_its_account_and_order_bounds() {
    let runtime = runtime(1);
    let mut book = Exchange::new(&runtime, None);
    for n in 0..4096 {
        let answer = book.place(&account(n), 1, "Buy", 1, 1, "IOC");
        assert_eq!(answer.output, accepted(1, &[], 0, 1));
    }
    let full = rejected("account table full: 4096 accounts");
    assert_eq!(book.place(&account(4096), 1, "Buy", 1, 1, "IOC").output, full);
    // Known accounts still trade; a Cancel from an unknown account is simply not the owner's.
    assert_eq!(
        book.place(&account(7), 1, "Buy", 1, 1, "GTC").output,
        accepted(1, &[], 1, 0)
    );
    let stranger = book.cancel(&account(5000), 1).output;
    assert_eq!(stranger, rejected("Order-Id 1 belongs to another account"));
    for n in 2..=65536u64 {
        let price = 1 + (n % 1000) as u32;
        assert_eq!(
            book.place(&account(n as usize % 4096), n, "Buy", price, 1, "GTC")
                .output,
            accepted(n, &[], 1, 0)
        );
    }
    let full = rejected("book full: 65536 resting orders");
    assert_eq!(book.place(&account(1), 70_000, "Buy", 1, 1, "GTC").output, full);
    // An IOC never rests, so it is accepted; it takes one order and frees its slot.
    assert_eq!(
        book.place(&account(1), 70_000, "Sell", 1000, 1, "IOC").output,
        accepted(70_000, &[(999, 70_000, 1000, 1)], 0, 0)
    );
    assert_eq!(
        book.place(&account(1), 70_001, "Buy", 1, 1, "GTC").output,
        accepted(70_001, &[], 1, 0)
    );
    assert_eq!(book.place(&account(1), 70_002, "Buy", 1, 1, "GTC").output, full);
    // Every order is findable by its id: the full id table lost none.
    for n in [1u64, 2, 1000, 1001, 32_768, 65_536, 70_001] {
        assert!(!book.cancel(&account(4095), n).output.contains("unknown"), "order {n}");
    }
}

#[test]
fn exchange_gas_per_message() {
    let runtime = runtime(1);
    let mut book = Exchange::new(&runtime, None);
    // About 1,000 resting orders from 100 accounts around a mid of 10,000 (PERF.md).
    for n in 0..1000u64 {
        let (side, price) = if n % 2 == 0 {
            ("Buy", 9990 - (n % 40) as u32)
        } else {
            ("Sell", 10010 + (n % 40) as u32)
        };
        book.place(&account(n as usize % 100), n + 1, side, price, 10, "GTC");
    }
    let a = account(7);
    let figures = [
        ("Place GTC, rests", book.place(&a, 5001, "Buy", 9995, 10, "GTC")),
        ("Move, no fill", book.move_to(&a, 5001, 9996)),
        ("Place GTC, one fill", book.place(&a, 5002, "Buy", 10010, 5, "GTC")),
        ("Move, one fill", book.move_to(&a, 5001, 10010)),
        (
            "Place IOC, sweeps 3 fills",
            book.place(&a, 5003, "Sell", 9990, 25, "IOC"),
        ),
        ("Cancel", book.cancel(&account(8), 9)),
    ];
    // The floor every message pays: malloc and strlen of the inputs, the Action lookup, the
    // result envelope. The rest of a Place is mostly its five other tag lookups.
    let floor = book.send(&a, &[("Action", "Nothing")]);
    assert_eq!(floor.output, rejected("missing or unknown Action"));
    eprintln!("exchange gas: unknown Action (floor): {}", floor.gas_used);
    for (what, answer) in &figures {
        assert!(!answer.output.contains("rejected"), "{what}: {}", answer.output);
        eprintln!("exchange gas: {what}: {}", answer.gas_used);
        assert!(answer.gas_used < 100_000, "{what} used {} fuel", answer.gas_used);
    }
}

// ---- The randomized comparison with a reference book ----

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Side {
    Buy,
    Sell,
}

impl Side {
    fn name(self) -> &'static str {
        match self {
            Side::Buy => "Buy",
            Side::Sell => "Sell",
        }
    }
}

#[derive(Clone, Debug)]
enum Command {
    Place {
        account: usize,
        order: u64,
        side: Side,
        price: u32,
        size: u32,
        ioc: bool,
    },
    Cancel {
        account: usize,
        order: u64,
    },
    Move {
        account: usize,
        order: u64,
        price: u32,
    },
}

impl Command {
    fn account(&self) -> usize {
        match self {
            Command::Place { account, .. } | Command::Cancel { account, .. } | Command::Move { account, .. } => {
                *account
            }
        }
    }

    fn tags(&self) -> OwnedTags {
        match self {
            Command::Place {
                order,
                side,
                price,
                size,
                ioc,
                ..
            } => vec![
                ("Action", "Place".into()),
                ("Order-Id", order.to_string()),
                ("Side", side.name().into()),
                ("Price", price.to_string()),
                ("Size", size.to_string()),
                ("Type", if *ioc { "IOC" } else { "GTC" }.into()),
            ],
            Command::Cancel { order, .. } => vec![("Action", "Cancel".into()), ("Order-Id", order.to_string())],
            Command::Move { order, price, .. } => vec![
                ("Action", "Move".into()),
                ("Order-Id", order.to_string()),
                ("Price", price.to_string()),
            ],
        }
    }
}

#[derive(Clone, Debug)]
struct Resting {
    order: u64,
    account: usize,
    side: Side,
    price: u32,
    size: u32,
}

/// One fill as the reference sees it: the maker's order, account and side.
struct ReferenceFill {
    maker: u64,
    account: usize,
    side: Side,
    price: u32,
    size: u32,
}

/// An obviously correct book: resting orders in a Vec in time-priority order (arrival, or the
/// last move); each fill scans it for the best price, the earliest order first.
#[derive(Default)]
struct ReferenceBook {
    resting: Vec<Resting>,
}

/// What the reference expects: the Output and the Fill notices.
struct Expected {
    output: String,
    notices: Vec<Notice>,
}

impl ReferenceBook {
    fn position(&self, order: u64) -> Option<usize> {
        self.resting.iter().position(|r| r.order == order)
    }

    /// Matches a taker; returns its fills and its unfilled size.
    fn take(&mut self, side: Side, price: u32, mut size: u32) -> (Vec<ReferenceFill>, u32) {
        let mut fills = Vec::new();
        while size > 0 && fills.len() < FILLS_MAX {
            let best = self
                .resting
                .iter()
                .enumerate()
                .filter(|(_, r)| {
                    r.side != side
                        && match side {
                            Side::Buy => r.price <= price,
                            Side::Sell => r.price >= price,
                        }
                })
                .min_by_key(|(at, r)| {
                    (
                        if r.side == Side::Sell {
                            r.price
                        } else {
                            u32::MAX - r.price
                        },
                        *at,
                    )
                })
                .map(|(at, _)| at);
            let Some(at) = best else { break };
            let maker = &mut self.resting[at];
            let fill = size.min(maker.size);
            fills.push(ReferenceFill {
                maker: maker.order,
                account: maker.account,
                side: maker.side,
                price: maker.price,
                size: fill,
            });
            maker.size -= fill;
            size -= fill;
            if maker.size == 0 {
                self.resting.remove(at);
            }
        }
        (fills, size)
    }

    fn expected(
        order: u64,
        account: usize,
        side: Side,
        fills: &[ReferenceFill],
        rested: u32,
        cancelled: u32,
    ) -> Expected {
        let listed: Vec<(u64, u64, u32, u32)> = fills.iter().map(|f| (f.maker, order, f.price, f.size)).collect();
        let notices = fills
            .iter()
            .flat_map(|f| {
                [
                    (self::account(f.account), f.maker, f.side.name(), f.price, f.size),
                    (self::account(account), order, side.name(), f.price, f.size),
                ]
            })
            .collect();
        Expected {
            output: accepted(order, &listed, rested, cancelled),
            notices,
        }
    }

    fn reject(reason: String) -> Expected {
        Expected {
            output: rejected(&reason),
            notices: Vec::new(),
        }
    }

    fn apply(&mut self, command: &Command) -> Expected {
        match *command {
            Command::Place {
                account,
                order,
                side,
                price,
                size,
                ioc,
            } => {
                if self.position(order).is_some() {
                    return Self::reject(format!("duplicate Order-Id {order}"));
                }
                let (fills, left) = self.take(side, price, size);
                if left == 0 || ioc || fills.len() >= FILLS_MAX {
                    return Self::expected(order, account, side, &fills, 0, left);
                }
                self.resting.push(Resting {
                    order,
                    account,
                    side,
                    price,
                    size: left,
                });
                Self::expected(order, account, side, &fills, left, 0)
            }
            Command::Cancel { account, order } => match self.owned(account, order) {
                Err(reason) => Self::reject(reason),
                Ok(at) => {
                    let gone = self.resting.remove(at);
                    Self::expected(order, gone.account, gone.side, &[], 0, gone.size)
                }
            },
            Command::Move { account, order, price } => match self.owned(account, order) {
                Err(reason) => Self::reject(reason),
                Ok(at) => {
                    let mut moved = self.resting.remove(at);
                    let (fills, left) = self.take(moved.side, price, moved.size);
                    if left == 0 || fills.len() >= FILLS_MAX {
                        return Self::expected(order, moved.account, moved.side, &fills, 0, left);
                    }
                    moved.price = price;
                    moved.size = left;
                    self.resting.push(moved.clone());
                    Self::expected(order, moved.account, moved.side, &fills, left, 0)
                }
            },
        }
    }

    fn owned(&self, account: usize, order: u64) -> Result<usize, String> {
        let at = self
            .position(order)
            .ok_or_else(|| format!("unknown Order-Id {order}"))?;
        if self.resting[at].account != account {
            return Err(format!("Order-Id {order} belongs to another account"));
        }
        Ok(at)
    }
}

/// xorshift64*: a seeded, reproducible stream.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in 0..n.
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// Uniform in -n..=n.
    fn around(&mut self, n: u32) -> i64 {
        self.below(2 * n as u64 + 1) as i64 - n as i64
    }
}

const ACCOUNT_COUNT: usize = 100;
const MID: i64 = 10_000;
/// How far from the mid the quotes are centred, in ticks.
const SPREAD: i64 = 10;
/// GTC orders placed before the mix starts.
const WARM_UP: usize = 500;

/// Where an order's price is centred, relative to the mid: a quote (GTC) on its own side,
/// SPREAD away from the mid, so that quotes alone never cross; a taker (IOC, or a move to the
/// market) on the other side, where it meets the quotes.
fn centre(side: Side, taker: bool) -> i64 {
    match (side, taker) {
        (Side::Buy, false) | (Side::Sell, true) => MID - SPREAD,
        (Side::Sell, false) | (Side::Buy, true) => MID + SPREAD,
    }
}

/// The next command of the exchange-core mix: 9 % GTC, 3 % IOC, 6 % cancel, 82 % move, with a
/// few duplicates, unknown orders and moves or cancels by another account mixed in.
/// While `warm_up` is set, only GTC orders: a standing book for the mix to work on.
fn command(rng: &mut Rng, book: &ReferenceBook, next_order: &mut u64, warm_up: bool) -> Command {
    let roll = if warm_up { 0 } else { rng.below(100) };
    let account = rng.below(ACCOUNT_COUNT as u64) as usize;
    let some_resting = |rng: &mut Rng| -> Option<Resting> {
        if book.resting.is_empty() {
            None
        } else {
            Some(book.resting[rng.below(book.resting.len() as u64) as usize].clone())
        }
    };
    if roll >= 12 {
        if let Some(target) = some_resting(rng) {
            // One in fifty comes from someone else; one in fifty names an order long gone.
            let odd = rng.below(50);
            let from = if odd == 0 {
                (target.account + 1) % ACCOUNT_COUNT
            } else {
                target.account
            };
            let order = if odd == 1 {
                rng.below(*next_order + 1)
            } else {
                target.order
            };
            if roll < 18 {
                return Command::Cancel { account: from, order };
            }
            // Mostly a small adjustment; one move in ten goes to the market and may cross.
            let price = if rng.below(10) == 0 {
                (centre(target.side, true) + rng.around(SPREAD as u32 - 2)) as u32
            } else {
                // A quote stays on its side of the mid, or prices would random-walk across.
                let (low, high) = match target.side {
                    Side::Buy => (1, MID - 1),
                    Side::Sell => (MID + 1, 65_535),
                };
                (target.price as i64 + rng.around(2)).clamp(low, high) as u32
            };
            return Command::Move {
                account: from,
                order,
                price,
            };
        }
    }
    let ioc = (9..12).contains(&roll);
    let side = if rng.below(2) == 0 { Side::Buy } else { Side::Sell };
    let price = (centre(side, ioc) + rng.around(SPREAD as u32 - 2)) as u32;
    let order = if rng.below(100) == 0 && !book.resting.is_empty() {
        book.resting[rng.below(book.resting.len() as u64) as usize].order
    } else {
        *next_order += 1;
        *next_order
    };
    Command::Place {
        account,
        order,
        side,
        price,
        // Resting orders are larger than the takers, so that the book keeps its depth.
        size: if ioc {
            1 + rng.below(50) as u32
        } else {
            50 + rng.below(200) as u32
        },
        ioc,
    }
}

#[test]
fn exchange_matches_a_reference_book_on_the_exchange_core_mix() {
    for seed in [0x9E37_79B9_7F4A_7C15_u64, 42, 7_777_777] {
        let runtime = runtime(1);
        let mut exchange = Exchange::new(&runtime, Some("true"));
        let mut reference = ReferenceBook::default();
        let mut rng = Rng(seed);
        let mut next_order = 0u64;
        let (mut fills, mut rejects) = (0usize, 0usize);
        for step in 0..WARM_UP + 4000 {
            let command = command(&mut rng, &reference, &mut next_order, step < WARM_UP);
            let expected = reference.apply(&command);
            let tags = command.tags();
            let tags: Vec<(&str, &str)> = tags.iter().map(|(name, value)| (*name, value.as_str())).collect();
            let answer = exchange.send(&account(command.account()), &tags);
            assert_eq!(
                answer.output, expected.output,
                "seed {seed:#x} step {step}: {command:?}"
            );
            assert_eq!(
                answer.notices, expected.notices,
                "seed {seed:#x} step {step}: {command:?}"
            );
            fills += expected.notices.len() / 2;
            rejects += usize::from(expected.output.contains("rejected"));
        }
        eprintln!(
            "seed {seed:#x}: {fills} fills, {rejects} rejects, {} resting at the end",
            reference.resting.len()
        );
        // The mix exercised the book: fills, rejects and a book of some depth.
        assert!(fills > 500, "seed {seed:#x}: only {fills} fills");
        assert!(rejects > 20, "seed {seed:#x}: only {rejects} rejects");
        assert!(
            reference.resting.len() > 20,
            "seed {seed:#x}: {} resting",
            reference.resting.len()
        );
        // Every order still resting is there with its size, in the same book: cancel them all.
        for resting in reference.resting.clone() {
            let expected = reference.apply(&Command::Cancel {
                account: resting.account,
                order: resting.order,
            });
            assert_eq!(
                exchange.cancel(&account(resting.account), resting.order).output,
                expected.output
            );
        }
        assert!(reference.resting.is_empty());
        assert_eq!(
            exchange.place(&account(0), 1, "Buy", 65535, 1, "IOC").output,
            accepted(1, &[], 0, 1)
        );
        assert_eq!(
            exchange.place(&account(0), 1, "Sell", 1, 1, "IOC").output,
            accepted(1, &[], 0, 1)
        );
    }
}
