//! What Hewitt's criterion benchmarks (in `benches/`) share.

use std::time::Duration;

use criterion::Criterion;

/// Short runs: `cargo bench -p benches` should finish in a few minutes on 2 cores; a bench that
/// needs fewer samples (I/O, milliseconds per iteration) sets them on its group.
pub fn criterion_config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}
