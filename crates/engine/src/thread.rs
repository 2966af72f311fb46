//! The dedicated OS threads that own a llama.cpp context (the generation worker, the
//! embedding worker): started with a handshake, joined once.

use std::sync::mpsc::Sender;
use std::sync::{Mutex, PoisonError};
use std::thread::JoinHandle;

/// Starts the thread `name` running `body`, and returns once `body` has said through its
/// sender whether it started (its context exists), with the handle for joining it. `what`
/// names the thread in errors ("engine", "embedding").
pub(crate) fn start<F>(name: String, what: &str, body: F) -> Result<JoinHandle<()>, String>
where
    F: FnOnce(Sender<Result<(), String>>) + Send + 'static,
{
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let thread = std::thread::Builder::new()
        .name(name)
        .spawn(move || body(ready_tx))
        .map_err(|e| format!("could not start the {what} thread: {e}"))?;
    match ready_rx.recv() {
        Ok(Ok(())) => Ok(thread),
        Ok(Err(e)) => {
            let _ = thread.join();
            Err(e)
        }
        Err(_) => {
            let _ = thread.join();
            Err(format!("the {what} thread ended during start-up"))
        }
    }
}

/// Joins the thread held in `worker`, if it is still there (the first caller takes it).
pub(crate) fn join(worker: &Mutex<Option<JoinHandle<()>>>, what: &str) {
    let mut handle = worker.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(thread) = handle.take() {
        if thread.join().is_err() {
            tracing::error!("the {what} thread panicked");
        }
    }
}
