//! The guest runtime: where plugin code runs, apart from the threads that accept connections,
//! authenticate, rate-limit and answer native routes.
//!
//! A spinning or busy plugin must not starve the I/O path or other orgs' guards. Guests run on
//! their own multi-threaded tokio runtime whose worker threads have a lower scheduling
//! priority (`nice` +10): when guests and the request path compete for a core, the kernel
//! gives the request path about ten times the weight. Within the guest runtime, every guest
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
