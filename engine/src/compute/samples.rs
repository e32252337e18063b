//! Hewitt's sample processes, hand-written in WAT under `engine/samples/`, for the CLI demo and
//! for tests: counter, pingpong, spawner, trap, loop, memhog, exchange and echo (each file's header
//! says what it does).
//!
//! WAT has no includes, so each sample file holds only module fields and [`wat`] wraps it with
//! the shared `prelude.wat` (memory, `malloc`, JSON reads, the result writer) into one module.
//! All are of module format [`MODULE_FORMAT_WASM32`](super::MODULE_FORMAT_WASM32): they import
//! nothing. This module deliberately needs no external toolchain: the `wat` crate assembles
//! them.

/// The runtime every sample shares, spliced in by [`wat`].
pub const PRELUDE_WAT: &str = include_str!("../../samples/prelude.wat");
/// Counts: Increment, Fail (adds 1000, then an Error result), anything else reads.
pub const COUNTER_WAT: &str = include_str!("../../samples/counter.wat");
/// Plays ball with a peer: Serve, Ball.
pub const PINGPONG_WAT: &str = include_str!("../../samples/pingpong.wat");
/// Spawns children from its own module: Spawn-Child, Spawned.
pub const SPAWNER_WAT: &str = include_str!("../../samples/spawner.wat");
/// Traps on Action=Trap.
pub const TRAP_WAT: &str = include_str!("../../samples/trap.wat");
/// Loops forever on Action=Loop.
pub const LOOP_WAT: &str = include_str!("../../samples/loop.wat");
/// Grows memory forever on Action=Grow.
pub const MEMHOG_WAT: &str = include_str!("../../samples/memhog.wat");
/// A matching engine: a price-time priority limit order book (Place, Cancel, Move, Reduce).
pub const EXCHANGE_WAT: &str = include_str!("../../samples/exchange.wat");
/// Answers with the msg document it was handed; Action=Assign assigns the message onwards.
pub const ECHO_WAT: &str = include_str!("../../samples/echo.wat");

/// The samples by name, with their module fields.
const SAMPLES: [(&str, &str); 8] = [
    ("counter", COUNTER_WAT),
    ("pingpong", PINGPONG_WAT),
    ("spawner", SPAWNER_WAT),
    ("trap", TRAP_WAT),
    ("loop", LOOP_WAT),
    ("memhog", MEMHOG_WAT),
    ("exchange", EXCHANGE_WAT),
    ("echo", ECHO_WAT),
];

/// The samples' names, as [`wat`] and [`wasm`] take them.
pub const NAMES: [&str; 8] = [
    "counter", "pingpong", "spawner", "trap", "loop", "memhog", "exchange", "echo",
];

/// The whole module text of the sample called `name` (prelude included), or `None` for a name
/// that is not in [`NAMES`].
pub fn wat(name: &str) -> Option<String> {
    let (_, fields) = SAMPLES.iter().find(|(n, _)| *n == name)?;
    Some(format!("(module\n{PRELUDE_WAT}\n{fields}\n)\n"))
}

/// The sample called `name` as a wasm binary, or `None` for a name that is not in [`NAMES`].
///
/// # Panics
/// If the embedded WAT does not assemble: a bug in this crate, caught by its tests.
pub fn wasm(name: &str) -> Option<Vec<u8>> {
    let text = wat(name)?;
    let binary = wat::parse_str(&text).unwrap_or_else(|err| panic!("sample {name:?} does not assemble: {err}"));
    Some(binary)
}
