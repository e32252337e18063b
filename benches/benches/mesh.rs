//! The mesh between shards (`engine::mesh`), the path of every request that reaches a shard
//! other than its process's owner:
//!
//! - `mesh/ask/<k>_in_flight/spin_<us>`: one request handed from shard 0 to shard 1 and its
//!   answer back (`Mesh::ask`, the owner answering at once), with `k` requests in flight from
//!   as many tasks (1: the round trip's latency; 64: what batching carries), each shard on an
//!   executor pinned to a core of its own (the first two it may use) and spinning `us` µs before it parks
//!   (`shards_spin_before_park_us`). The figure per element is wall time per request; the
//!   shards' CPU time per request is printed beside it (parking and waking cost CPU that wall
//!   time hides when the cores are otherwise idle).
//!
//! Needs two CPUs it may use; with fewer it measures nothing and says so. Runs once per benchmark in test
//! mode (`cargo test --benches`) so it never rots.

use std::rc::Rc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use engine::mesh::{Answer, Ask, Control};
use glommio::{LocalExecutorBuilder, Placement};
use scheduler::MessageId;

/// CPU time of the calling thread.
fn thread_cpu() -> Duration {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `now` is a valid timespec the call fills.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

/// Runs `requests` asks from shard 0 to shard 1 with `in_flight` at a time; returns the wall
/// time of the asks and the CPU time both shards spent meanwhile.
fn run(cores: [usize; 2], requests: u64, in_flight: usize, spin_us: u64) -> (Duration, Duration) {
    let mut ends = engine::mesh::ends(2).into_iter();
    let (zero, one) = (ends.next().expect("shard 0"), ends.next().expect("shard 1"));
    let (cpu_tx, cpu_rx) = mpsc::channel::<Duration>();
    let builder = |core: usize| {
        let builder = LocalExecutorBuilder::new(Placement::Fixed(core));
        if spin_us > 0 {
            builder.spin_before_park(Duration::from_micros(spin_us))
        } else {
            builder
        }
    };
    let owner = {
        let cpu_tx = cpu_tx.clone();
        builder(cores[1])
            .name("bench-shard-1")
            .spawn(move || async move {
                let (mesh, receivers) = one.connect().await;
                let mesh = Rc::new(mesh);
                let began = thread_cpu();
                // As the node serves a peer's requests: each answered from its batch.
                for (from, receiver) in receivers.control {
                    while let Some(batch) = receiver.recv().await {
                        for control in batch {
                            match control {
                                Control::Ask { id, ask: _ } => mesh.answer(from, id, Answer::Message(Ok(None))),
                                Control::Answer { id, answer } => mesh.answered(id, answer),
                            }
                        }
                    }
                }
                cpu_tx.send(thread_cpu() - began).expect("report CPU");
            })
            .expect("shard 1")
    };
    let asker = builder(cores[0])
        .name("bench-shard-0")
        .spawn(move || async move {
            let (mesh, receivers) = zero.connect().await;
            let mesh = Rc::new(mesh);
            // Answers come back on shard 1's request ring to this shard. The task holds the mesh
            // weakly: dropping it at the end closes shard 1's receivers, which ends shard 1.
            for (_, receiver) in receivers.control {
                let mesh = Rc::downgrade(&mesh);
                glommio::spawn_local(async move {
                    while let Some(batch) = receiver.recv().await {
                        let Some(mesh) = mesh.upgrade() else {
                            return;
                        };
                        for control in batch {
                            if let Control::Answer { id, answer } = control {
                                mesh.answered(id, answer);
                            }
                        }
                    }
                })
                .detach();
            }
            let began = (Instant::now(), thread_cpu());
            let next = Rc::new(std::cell::Cell::new(0u64));
            let tasks: Vec<_> = (0..in_flight)
                .map(|_| {
                    let (mesh, next) = (Rc::clone(&mesh), Rc::clone(&next));
                    glommio::spawn_local(async move {
                        while next.get() < requests {
                            next.set(next.get() + 1);
                            let answer = mesh.ask(1, Ask::Message(MessageId([7; 32]))).await;
                            assert!(matches!(answer, Ok(Answer::Message(Ok(None)))), "answered");
                        }
                    })
                })
                .collect();
            for task in tasks {
                task.await;
            }
            let elapsed = (began.0.elapsed(), thread_cpu() - began.1);
            // Dropping the mesh closes shard 1's receivers, which ends it.
            drop(mesh);
            elapsed
        })
        .expect("shard 0");
    let (wall, asker_cpu) = asker.join().expect("shard 0 ran");
    owner.join().expect("shard 1 ran");
    let owner_cpu = cpu_rx.recv().expect("shard 1's CPU");
    (wall, asker_cpu + owner_cpu)
}

fn mesh(c: &mut Criterion) {
    let allowed = engine::node::allowed_cpus();
    let [first, second, ..] = allowed[..] else {
        eprintln!("mesh: needs two CPUs to pin to, has {allowed:?}; skipped");
        return;
    };
    let cores = [first, second];
    let mut group = c.benchmark_group("mesh/ask");
    group.throughput(Throughput::Elements(1));
    for in_flight in [1, 64] {
        for spin_us in [0, 50, 200] {
            let id = BenchmarkId::new(format!("{in_flight}_in_flight"), format!("spin_{spin_us}"));
            let mut cpu = (Duration::ZERO, 0u64);
            group.bench_function(id, |b| {
                b.iter_custom(|iters| {
                    let (wall, spent) = run(cores, iters, in_flight, spin_us);
                    cpu.0 += spent;
                    cpu.1 += iters;
                    wall
                })
            });
            eprintln!(
                "  shards' CPU: {:.2} µs per request",
                cpu.0.as_secs_f64() * 1e6 / cpu.1.max(1) as f64
            );
        }
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = benches::criterion_config();
    targets = mesh
}
criterion_main!(benches);
