//! Guest CPU time, measured as CPU time rather than inferred from the wall clock.
//!
//! An invocation is a future; every poll runs on some worker thread. [`Metered`] reads that
//! thread's CPU clock (`CLOCK_THREAD_CPUTIME_ID`) around each poll and adds the difference to
//! the invocation's [`CpuMeter`]. Time spent descheduled by the OS, or parked waiting for the
//! database, a lock or a WASI sleep, is not CPU and is not charged; host work done inside a
//! poll on the guest's behalf (building SQL, copying a response) is. The epoch callback reads
//! the meter mid-poll through [`CpuMeter::used`].

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

/// CPU time of the calling thread.
pub fn thread_cpu() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_THREAD_CPUTIME_ID is supported on
    // every Linux the gateway runs on (it fails only for an invalid clock id).
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// CPU spent by one invocation so far.
#[derive(Debug, Default)]
pub struct CpuMeter {
    /// Nanoseconds of finished polls.
    spent: AtomicU64,
    /// The polling thread's CPU clock when the current poll began (nanoseconds).
    poll_start: AtomicU64,
}

impl CpuMeter {
    /// CPU used so far, the current poll included. Call it from the polling thread (the epoch
    /// callback runs there).
    pub fn used(&self) -> Duration {
        let now = thread_cpu().as_nanos() as u64;
        let current = now.saturating_sub(self.poll_start.load(Ordering::Relaxed));
        Duration::from_nanos(self.spent.load(Ordering::Relaxed) + current)
    }

    /// CPU used by finished polls (for reporting after the invocation).
    pub fn total(&self) -> Duration {
        Duration::from_nanos(self.spent.load(Ordering::Relaxed))
    }
}

/// A future whose polls are charged to a [`CpuMeter`].
pub struct Metered<F> {
    inner: Pin<Box<F>>,
    meter: Arc<CpuMeter>,
}

impl<F: Future> Metered<F> {
    pub fn new(inner: F, meter: Arc<CpuMeter>) -> Metered<F> {
        Metered { inner: Box::pin(inner), meter }
    }
}

impl<F: Future> Future for Metered<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let start = thread_cpu().as_nanos() as u64;
        self.meter.poll_start.store(start, Ordering::Relaxed);
        let out = self.inner.as_mut().poll(cx);
        let spent = (thread_cpu().as_nanos() as u64).saturating_sub(start);
        self.meter.spent.fetch_add(spent, Ordering::Relaxed);
        // Between polls nothing is running: `used` must not count the gap.
        self.meter.poll_start.store(u64::MAX, Ordering::Relaxed);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sleeping_is_not_cpu_and_spinning_is() {
        let meter = Arc::new(CpuMeter::default());
        Metered::new(tokio::time::sleep(Duration::from_millis(50)), meter.clone()).await;
        assert!(meter.total() < Duration::from_millis(20), "{:?}", meter.total());
        // Spins for 30 ms of this thread's CPU, not of the wall clock: on a loaded machine
        // (other tests, the fuzz targets) 30 ms of wall time can hold far less CPU.
        let spin = async {
            let t = thread_cpu();
            while thread_cpu() - t < Duration::from_millis(30) {
                std::hint::black_box(0u64);
            }
        };
        Metered::new(spin, meter.clone()).await;
        assert!(meter.total() >= Duration::from_millis(20), "{:?}", meter.total());
    }
}
