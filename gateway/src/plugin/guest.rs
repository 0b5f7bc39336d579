//! The guest runtime: where plugin code runs, apart from the threads that accept connections,
//! authenticate, rate-limit and answer native routes.
//!
//! A spinning or busy plugin must not starve the I/O path or other orgs' guards. Guests run on
//! their own multi-threaded tokio runtime whose worker threads have a lower scheduling
//! priority (`nice` +10): when guests and the request path compete for a core, the kernel
//! gives the request path about ten times the weight. An invocation starts on the request
//! task and moves here once it has used [`LOCAL_CPU`]: short invocations, the common case,
//! skip two cross-runtime wake-ups, and a long one holds a request thread for at most
//! `LOCAL_CPU` plus one time slice. Within the guest runtime, every guest
//! yields at each time slice (see `plugin::SLICE_TICKS`), so invocations interleave instead
//! of queueing behind the longest. Per-org admission (`admission`) bounds how many of one
//! org's invocations may be here at once.

use std::future::Future;
use std::sync::OnceLock;

use tokio::task::JoinHandle;

/// Nice value of guest threads (0 is the request path's).
const GUEST_NICE: libc::c_int = 10;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("wasm-guest")
            .on_thread_start(|| {
                // SAFETY: plain syscalls on the calling thread; failure only leaves the
                // default priority, which is logged.
                let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, GUEST_NICE) };
                if rc != 0 {
                    tracing::warn!(error = %std::io::Error::last_os_error(), "could not lower guest thread priority");
                }
            })
            .enable_all()
            .build()
            .expect("building the guest runtime")
    })
}

/// A task on the guest runtime, aborted if the caller stops waiting for it (a client that
/// went away does not leave its plugin running).
pub struct GuestTask<T>(JoinHandle<T>);

impl<T> Future for GuestTask<T> {
    type Output = Result<T, tokio::task::JoinError>;
    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0).poll(cx)
    }
}

impl<T> Drop for GuestTask<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs `fut` on the guest runtime.
pub fn spawn<F>(fut: F) -> GuestTask<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    GuestTask(runtime().spawn(fut))
}

/// CPU an invocation may use on the request task before it moves to the guest runtime.
///
/// Most invocations (echo, a CRM write) need well under a millisecond of CPU: for them the hop
/// to another runtime and back costs more than it protects. An invocation that is still running
/// after this much CPU moves at its next yield; the epoch yields every time slice, so a
/// spinning guest holds a request thread for at most this plus one slice.
pub const LOCAL_CPU: std::time::Duration = std::time::Duration::from_micros(500);

/// Runs `fut` where it belongs: on the calling task while its metered CPU stays under
/// [`LOCAL_CPU`], then on the guest runtime until it ends. Dropping it drops (or aborts) the
/// invocation wherever it is.
pub fn place<F>(fut: F, meter: std::sync::Arc<super::cpu::CpuMeter>) -> Placed<F>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    Placed { state: Placement::Local(Box::pin(fut)), meter }
}

/// See [`place`].
pub struct Placed<F: Future> {
    state: Placement<F>,
    meter: std::sync::Arc<super::cpu::CpuMeter>,
}

enum Placement<F: Future> {
    Local(std::pin::Pin<Box<F>>),
    Guest(GuestTask<F::Output>),
    Moving,
}

impl<F> Future for Placed<F>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    type Output = Result<F::Output, tokio::task::JoinError>;

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Self::Output> {
        use std::task::Poll;
        let this = &mut *self;
        if let Placement::Local(fut) = &mut this.state {
            match fut.as_mut().poll(cx) {
                Poll::Ready(out) => return Poll::Ready(Ok(out)),
                Poll::Pending if this.meter.total() < LOCAL_CPU => return Poll::Pending,
                Poll::Pending => {
                    // Moving a pending future is sound: it is pinned in its box, and the
                    // timers, sockets and wakers it registered belong to runtimes that outlive it.
                    let Placement::Local(fut) = std::mem::replace(&mut this.state, Placement::Moving) else {
                        unreachable!()
                    };
                    this.state = Placement::Guest(spawn(fut));
                }
            }
        }
        match &mut this.state {
            Placement::Guest(task) => std::pin::Pin::new(task).poll(cx),
            _ => unreachable!("a placed invocation is local or on the guest runtime"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::cpu::{CpuMeter, Metered};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    fn thread_name() -> String {
        std::thread::current().name().unwrap_or("").to_string()
    }

    /// Spins for `cpu` of CPU time as `meter` counts it (wall time holds less CPU on a loaded
    /// machine), yielding every 100 µs (as the epoch makes a guest yield), then says which
    /// thread it ended on.
    async fn spin(cpu: Duration, meter: Arc<CpuMeter>) -> String {
        while meter.used() < cpu {
            let slice = Instant::now();
            while slice.elapsed() < Duration::from_micros(100) {
                std::hint::black_box(0u64);
            }
            tokio::task::yield_now().await;
        }
        thread_name()
    }

    #[tokio::test]
    async fn short_invocations_stay_on_the_request_task_and_long_ones_move() {
        let meter = Arc::new(CpuMeter::default());
        let here = place(Metered::new(spin(Duration::from_micros(100), meter.clone()), meter.clone()), meter).await.unwrap();
        assert_ne!(here, "wasm-guest");

        let meter = Arc::new(CpuMeter::default());
        let there = place(Metered::new(spin(Duration::from_millis(20), meter.clone()), meter.clone()), meter.clone()).await.unwrap();
        assert_eq!(there, "wasm-guest");
        assert!(meter.total() >= Duration::from_millis(10), "{:?}", meter.total());
    }
}
