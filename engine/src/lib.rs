//! The engine of Hewitt: the shard runtime (glommio), compute (wasmtime), the HTTP API and the
//! pieces of the `hewitt` binary. `main.rs` stays thin; everything testable lives here.

pub mod abi;
pub mod allocator;
pub mod checkpoint;
pub mod checkpoint_files;
pub mod cli;
pub mod client;
pub mod compute;
pub mod config;
pub mod cron;
pub mod demo;
pub mod gateway;
pub mod http;
pub mod index;
pub mod index_files;
pub mod inspect;
pub mod mesh;
pub mod metrics;
pub mod node;
pub mod outbound;
pub mod probe;
pub mod shard;
pub mod timer;
pub mod upload;
pub mod verify;
pub mod wire;
