//! hyper's timer on a shard's executor: what lets a connection's header read, and its idle
//! wait between requests, time out (`http.idle_timeout_ms`).
//!
//! hyper wants sleeps that are `Send + Sync`; glommio's timers belong to one executor and are
//! neither. So a [`Sleep`] here is only a deadline: polled on a shard's thread, it files its
//! waker in that thread's table, keyed by deadline, and [`drive`], a task of the same shard,
//! sleeps on a glommio timer until the earliest deadline and wakes what is due. A sleep
//! dropped before its deadline (the usual end: the request's head arrived) takes its entry out.
//!
//! Cost per request: one allocation and, when the head is not already read, a `BTreeMap`
//! insert and remove, 0.18–0.23 µs here with none to 30,000 other connections waiting (`cargo
//! bench --bench timer`), against ~120 µs of shard CPU per message over HTTP; the driver wakes
//! only at deadlines (and at the first sleep filed in an empty table), never on a tick.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

/// A [`hyper::rt::Timer`] whose sleeps end by [`drive`] on the thread that polls them.
#[derive(Clone, Copy, Debug, Default)]
pub struct ShardTimer;

impl hyper::rt::Timer for ShardTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        self.sleep_until(Instant::now() + duration)
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(Sleep { deadline, filed: None })
    }
}

/// Ends at `deadline`, once polled on a thread that runs [`drive`].
#[derive(Debug)]
pub struct Sleep {
    deadline: Instant,
    /// The thread whose table holds this sleep's waker, and its key there.
    filed: Option<(ThreadId, u64)>,
}

impl hyper::rt::Sleep for Sleep {}

/// One thread's filed sleeps.
#[derive(Default)]
struct Table {
    next_key: u64,
    due: BTreeMap<(Instant, u64), Waker>,
    /// The driver, while it waits for a sleep earlier than the one it sleeps for.
    driver: Option<Waker>,
    /// Set when a sleep earlier than all others was filed since the driver last looked.
    earlier: bool,
}

thread_local! {
    static TABLE: RefCell<Table> = RefCell::new(Table::default());
}

impl Sleep {
    fn unfile(&mut self) {
        if let Some((thread, key)) = self.filed.take() {
            // Dropped on another thread, the entry stays until its deadline: harmless.
            if thread == std::thread::current().id() {
                TABLE.with(|table| table.borrow_mut().due.remove(&(self.deadline, key)));
            }
        }
    }
}

impl Future for Sleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if Instant::now() >= this.deadline {
            this.unfile();
            return Poll::Ready(());
        }
        let thread = std::thread::current().id();
        if this.filed.is_some_and(|(filed_on, _)| filed_on != thread) {
            this.filed = None; // moved to another thread: file it again here
        }
        TABLE.with(|table| {
            let mut table = table.borrow_mut();
            match this.filed {
                Some((_, key)) => {
                    if let Some(waker) = table.due.get_mut(&(this.deadline, key)) {
                        if !waker.will_wake(cx.waker()) {
                            waker.clone_from(cx.waker());
                        }
                    }
                }
                None => {
                    let key = table.next_key;
                    table.next_key += 1;
                    let earliest = table.due.keys().next().is_none_or(|&(first, _)| this.deadline < first);
                    table.due.insert((this.deadline, key), cx.waker().clone());
                    this.filed = Some((thread, key));
                    if earliest {
                        table.earlier = true;
                        if let Some(driver) = table.driver.take() {
                            driver.wake();
                        }
                    }
                }
            }
        });
        Poll::Pending
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        self.unfile();
    }
}

/// Wakes this thread's sleeps as they fall due; runs for the life of the shard.
pub async fn drive() {
    loop {
        let first = TABLE.with(|table| table.borrow().due.keys().next().map(|&(deadline, _)| deadline));
        let earlier = std::future::poll_fn(|cx| {
            TABLE.with(|table| {
                let mut table = table.borrow_mut();
                if std::mem::take(&mut table.earlier) {
                    Poll::Ready(())
                } else {
                    table.driver = Some(cx.waker().clone());
                    Poll::Pending
                }
            })
        });
        match first {
            None => earlier.await,
            Some(deadline) => {
                let wait = deadline.saturating_duration_since(Instant::now());
                futures_lite::future::or(glommio::timer::sleep(wait), earlier).await;
            }
        }
        let now = Instant::now();
        let woken: Vec<Waker> = TABLE.with(|table| {
            let mut table = table.borrow_mut();
            let later = table.due.split_off(&(now, u64::MAX));
            std::mem::replace(&mut table.due, later).into_values().collect()
        });
        // Each woken sleep finds its deadline passed; its entry is already gone.
        woken.into_iter().for_each(Waker::wake);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::rt::Timer;

    #[test]
    fn sleeps_end_at_their_deadlines_in_any_order_and_dropped_ones_leave_nothing() {
        glommio::LocalExecutorBuilder::default()
            .spawn(|| async {
                glommio::spawn_local(drive()).detach();
                let start = Instant::now();
                // Filed latest first, so each new one is the earliest and must wake the driver.
                let ends: Vec<_> = [300u64, 200, 100]
                    .into_iter()
                    .map(|ms| {
                        glommio::spawn_local(async move {
                            ShardTimer.sleep(Duration::from_millis(ms)).await;
                            (ms, start.elapsed())
                        })
                    })
                    .collect();
                glommio::timer::sleep(Duration::from_millis(1)).await; // the three file theirs
                                                                       // One dropped before its deadline takes its entry with it.
                let dropped = ShardTimer.sleep(Duration::from_millis(50));
                let polled = futures_lite::future::poll_once(dropped).await;
                assert!(polled.is_none(), "not due yet");
                assert_eq!(TABLE.with(|t| t.borrow().due.len()), 3, "the dropped sleep left");
                for end in ends {
                    let (ms, elapsed) = end.await;
                    assert!(elapsed >= Duration::from_millis(ms), "{ms} ms ended after {elapsed:?}");
                    assert!(
                        elapsed < Duration::from_millis(ms + 2000),
                        "{ms} ms ended after {elapsed:?}"
                    );
                }
                assert!(TABLE.with(|t| t.borrow().due.is_empty()));
                // A sleep already due is ready at once, without the driver.
                let past = ShardTimer.sleep_until(Instant::now() - Duration::from_millis(1));
                assert_eq!(futures_lite::future::poll_once(past).await, Some(()));
            })
            .expect("executor")
            .join()
            .expect("joined");
    }
}
