//! hyper's timer on a shard (`engine::timer`), which every request that waits for its head
//! pays once (`http.idle_timeout_ms`):
//!
//! - `timer/file_and_drop/<filed>`: a sleep made, polled once (its waker filed in the
//!   thread's table) and dropped before its deadline (taken out again), as hyper does for a
//!   request whose head arrives after the connection was polled, with `filed` other sleeps
//!   waiting in the table (idle connections). Runs once per benchmark in test mode (`cargo
//!   test --benches`) so it never rots.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use engine::timer::ShardTimer;
use hyper::rt::Timer;

fn file_and_drop(c: &mut Criterion) {
    let mut group = c.benchmark_group("timer");
    for filed in [0usize, 1000, 30_000] {
        group.bench_function(BenchmarkId::new("file_and_drop", filed), |b| {
            b.iter_custom(|iters| {
                glommio::LocalExecutorBuilder::default()
                    .spawn(move || async move {
                        glommio::spawn_local(engine::timer::drive()).detach();
                        let mut waiting: Vec<_> =
                            (0..filed).map(|_| ShardTimer.sleep(Duration::from_secs(60))).collect();
                        for sleep in &mut waiting {
                            assert!(futures_lite::future::poll_once(sleep).await.is_none());
                        }
                        let start = Instant::now();
                        for _ in 0..iters {
                            let mut sleep = ShardTimer.sleep(Duration::from_secs(30));
                            black_box(futures_lite::future::poll_once(&mut sleep).await);
                        }
                        start.elapsed()
                    })
                    .expect("an executor")
                    .join()
                    .expect("the executor ran")
            })
        });
    }
    group.finish();
}

criterion_group!(benches, file_and_drop);
criterion_main!(benches);
