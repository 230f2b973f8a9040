//! The model thread: one OS thread owns the pipeline; async callers send it
//! requests over a bounded queue and get the answer on a oneshot channel.
//!
//! As in text-embeddings-inference: the models never run on the async runtime,
//! a full queue answers `Overloaded` at once instead of waiting, each caller
//! learns its place in the queue, and the requests waiting together run as one
//! batch (after a short wait for more, [`Batching`]), sized by the candidate
//! rows the poet will write, the model's real work. A request whose caller has
//! gone (an expired interaction, a stopping bot) is dropped, not run. A panic inside a batch
//! is caught; its requests run again one at a time, so only the one that
//! panics is told so, and the thread goes on.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{
    sync_channel, Receiver, RecvTimeoutError, SyncSender, TryRecvError, TrySendError,
};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::error::Error;
use crate::pipeline::{Pipeline, PoemResult, Request};

/// The synchronous side of the worker: the pipeline, or a stand-in in tests.
pub(crate) trait Backend: Send + 'static {
    /// One answer per request, in order.
    fn run_batch(&mut self, requests: &[Request]) -> Vec<Result<PoemResult, Error>>;
}

impl Backend for Pipeline {
    fn run_batch(&mut self, requests: &[Request]) -> Vec<Result<PoemResult, Error>> {
        Pipeline::run_batch(self, requests)
    }
}

/// How requests are grouped: at most `max_requests` a batch and at most
/// `max_rows` candidate rows (a request alone may have more); after a batch's
/// first request, up to `wait` for more to arrive.
#[derive(Debug, Clone, Copy)]
pub struct Batching {
    pub max_requests: usize,
    pub max_rows: usize,
    pub wait: Duration,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum WorkerError {
    #[error("{waiting} requests are already waiting; please try again in a minute")]
    Overloaded { waiting: usize },
    #[error(transparent)]
    Failed(#[from] Error),
    #[error("the poet stumbled on this one (internal error); please try again")]
    Panicked,
    #[error("the model thread has stopped")]
    Stopped,
}

struct Envelope {
    request: Request,
    reply: oneshot::Sender<Result<PoemResult, WorkerError>>,
}

#[derive(Clone)]
pub(crate) struct Worker {
    queue: SyncSender<Envelope>,
    /// Requests sent and not yet answered (those running included).
    pending: Arc<AtomicUsize>,
}

/// A request in the queue.
pub(crate) struct Ticket {
    /// Requests ahead of this one when it was queued (0: it runs next).
    pub(crate) ahead: usize,
    reply: oneshot::Receiver<Result<PoemResult, WorkerError>>,
}

impl Ticket {
    pub(crate) async fn result(self) -> Result<PoemResult, WorkerError> {
        self.reply.await.unwrap_or(Err(WorkerError::Stopped))
    }
}

impl Worker {
    /// Starts the model thread with room for `queue_size` waiting requests.
    pub(crate) fn spawn(mut backend: impl Backend, queue_size: usize, batching: Batching) -> Self {
        let (queue, inbox) = sync_channel::<Envelope>(queue_size);
        let pending = Arc::new(AtomicUsize::new(0));
        let done = pending.clone();
        std::thread::Builder::new()
            .name("yingshi-models".into())
            .spawn(move || {
                let mut held = None;
                while let Some(batch) = next_batch(&inbox, batching, &mut held) {
                    let (batch, gone): (Vec<Envelope>, Vec<Envelope>) =
                        batch.into_iter().partition(|e| !e.reply.is_closed());
                    if !gone.is_empty() {
                        done.fetch_sub(gone.len(), Ordering::SeqCst);
                        tracing::debug!(dropped = gone.len(), "requests whose callers have gone");
                    }
                    if batch.is_empty() {
                        continue;
                    }
                    let (requests, replies): (Vec<Request>, Vec<_>) =
                        batch.into_iter().map(|e| (e.request, e.reply)).unzip();
                    let answers = run_caught(&mut backend, &requests);
                    for (reply, answer) in replies.into_iter().zip(answers) {
                        done.fetch_sub(1, Ordering::SeqCst);
                        // The caller may have gone; nothing to do then.
                        let _ = reply.send(answer);
                    }
                }
            })
            .expect("the model thread starts");
        Self { queue, pending }
    }

    /// Queues a request, or says at once that the queue is full.
    pub(crate) fn submit(&self, request: Request) -> Result<Ticket, WorkerError> {
        let (reply, rx) = oneshot::channel();
        let ahead = self.pending.fetch_add(1, Ordering::SeqCst);
        match self.queue.try_send(Envelope { request, reply }) {
            Ok(()) => Ok(Ticket { ahead, reply: rx }),
            Err(e) => {
                self.pending.fetch_sub(1, Ordering::SeqCst);
                match e {
                    TrySendError::Full(_) => Err(WorkerError::Overloaded { waiting: ahead }),
                    TrySendError::Disconnected(_) => Err(WorkerError::Stopped),
                }
            }
        }
    }

    /// Requests waiting or running now (the tests' view of the queue).
    #[cfg(test)]
    fn pending(&self) -> usize {
        self.pending.load(Ordering::SeqCst)
    }
}

/// Waits for a request (or takes the one `held` back from the last batch),
/// then takes those already waiting and those that come within the wait, up
/// to the batch's size; one that would overflow its rows is held for the
/// next. `None` when every sender is gone.
fn next_batch(
    inbox: &Receiver<Envelope>,
    batching: Batching,
    held: &mut Option<Envelope>,
) -> Option<Vec<Envelope>> {
    let first = match held.take() {
        Some(envelope) => envelope,
        None => inbox.recv().ok()?,
    };
    let deadline = Instant::now() + batching.wait;
    let mut rows = first.request.rows();
    let mut batch = vec![first];
    while batch.len() < batching.max_requests && rows < batching.max_rows {
        let next = match inbox.try_recv() {
            Ok(envelope) => envelope,
            Err(TryRecvError::Disconnected) => break,
            Err(TryRecvError::Empty) => {
                match inbox.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                    Ok(envelope) => envelope,
                    Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
                }
            }
        };
        if rows + next.request.rows() > batching.max_rows {
            *held = Some(next);
            break;
        }
        rows += next.request.rows();
        batch.push(next);
    }
    Some(batch)
}

/// Runs a batch; if it panics, runs its requests one at a time so that only
/// the one that panics fails.
fn run_caught(
    backend: &mut impl Backend,
    requests: &[Request],
) -> Vec<Result<PoemResult, WorkerError>> {
    match catch_unwind(AssertUnwindSafe(|| backend.run_batch(requests))) {
        Ok(answers) => answers
            .into_iter()
            .map(|a| a.map_err(WorkerError::Failed))
            .collect(),
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            tracing::error!(
                what,
                batch = requests.len(),
                "a batch panicked in the model thread"
            );
            if requests.len() == 1 {
                return vec![Err(WorkerError::Panicked)];
            }
            requests
                .chunks(1)
                .flat_map(|one| run_caught(backend, one))
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::sync::Mutex;

    use super::*;
    use crate::pipeline::PoemOptions;
    use crate::poem::{Form, PoetChoice, Style};

    /// Says when a batch starts (with its keywords), then waits until the test
    /// lets it finish; panics on the keyword "panic".
    struct Gate {
        started: mpsc::Sender<Vec<String>>,
        release: Mutex<mpsc::Receiver<()>>,
    }

    impl Backend for Gate {
        fn run_batch(&mut self, requests: &[Request]) -> Vec<Result<PoemResult, Error>> {
            let words: Vec<String> = requests
                .iter()
                .map(|r| match r {
                    Request::Keywords { keywords, .. } => keywords[0].clone(),
                    _ => unreachable!(),
                })
                .collect();
            self.started.send(words.clone()).unwrap();
            self.release.lock().unwrap().recv().unwrap();
            if words.iter().any(|w| w == "panic") {
                panic!("planted");
            }
            words
                .into_iter()
                .map(|w| {
                    Ok(PoemResult {
                        form: Form::WuJue,
                        keywords: vec![w],
                        matched: vec![],
                        candidates: vec![],
                    })
                })
                .collect()
        }
    }

    fn request(word: &str) -> Request {
        request_rows(word, 1)
    }

    fn request_rows(word: &str, candidates: usize) -> Request {
        Request::Keywords {
            keywords: vec![word.into()],
            options: PoemOptions {
                style: Style::Generate,
                poet: PoetChoice::T5,
                form: Form::WuJue,
                acrostic: None,
                candidates,
                seed: 0,
            },
        }
    }

    fn gated(
        queue: usize,
        max_requests: usize,
        wait_ms: u64,
    ) -> (Worker, mpsc::Receiver<Vec<String>>, mpsc::Sender<()>) {
        gated_rows(queue, max_requests, usize::MAX, wait_ms)
    }

    fn gated_rows(
        queue: usize,
        max_requests: usize,
        max_rows: usize,
        wait_ms: u64,
    ) -> (Worker, mpsc::Receiver<Vec<String>>, mpsc::Sender<()>) {
        let (started_tx, started) = mpsc::channel();
        let (release, release_rx) = mpsc::channel();
        let worker = Worker::spawn(
            Gate {
                started: started_tx,
                release: Mutex::new(release_rx),
            },
            queue,
            Batching {
                max_requests,
                max_rows,
                wait: Duration::from_millis(wait_ms),
            },
        );
        (worker, started, release)
    }

    #[tokio::test]
    async fn queue_positions_overload_and_panics() {
        let (worker, started, release) = gated(2, 16, 0);
        let first = worker.submit(request("a")).unwrap();
        assert_eq!(first.ahead, 0);
        assert_eq!(started.recv().unwrap(), ["a"]); // "a" runs; the queue is empty again.
        let queued: Vec<Ticket> = ["b", "panic"]
            .iter()
            .map(|w| worker.submit(request(w)).unwrap())
            .collect();
        assert_eq!(queued.iter().map(|t| t.ahead).collect::<Vec<_>>(), [1, 2]);
        let over = worker.submit(request("c"));
        assert!(
            matches!(over, Err(WorkerError::Overloaded { waiting: 3 })),
            "{:?}",
            over.err()
        );

        // "a"; then "b" and "panic" as one batch, which panics; then each alone.
        for _ in 0..4 {
            release.send(()).unwrap();
        }
        assert_eq!(first.result().await.unwrap().keywords, ["a"]);
        let mut results = Vec::new();
        for t in queued {
            results.push(t.result().await);
        }
        let batches: Vec<Vec<String>> = started.try_iter().collect();
        assert_eq!(batches, [vec!["b", "panic"], vec!["b"], vec!["panic"]]);
        assert_eq!(results[0].as_ref().unwrap().keywords, ["b"]);
        assert!(matches!(results[1], Err(WorkerError::Panicked)));
        // The thread survived the panic.
        let after = worker.submit(request("d")).unwrap();
        release.send(()).unwrap();
        assert_eq!(after.result().await.unwrap().keywords, ["d"]);
        assert_eq!(worker.pending(), 0);
    }

    #[tokio::test]
    async fn waiting_requests_run_together_up_to_the_batch_size() {
        let (worker, started, release) = gated(16, 2, 0);
        let first = worker.submit(request("a")).unwrap();
        assert_eq!(started.recv().unwrap(), ["a"]);
        let waiting: Vec<Ticket> = ["b", "c", "d"]
            .iter()
            .map(|w| worker.submit(request(w)).unwrap())
            .collect();
        for _ in 0..3 {
            release.send(()).unwrap();
        }
        first.result().await.unwrap();
        for (t, w) in waiting.into_iter().zip(["b", "c", "d"]) {
            assert_eq!(t.result().await.unwrap().keywords, [w]);
        }
        let batches: Vec<Vec<String>> = started.try_iter().collect();
        assert_eq!(batches, [vec!["b", "c"], vec!["d"]]);
    }

    #[tokio::test]
    async fn batches_are_sized_by_candidate_rows() {
        // Rows 8, 8, 4, 12 and 20 under a cap of 16: a and b fill a batch, c
        // and d the next; e, over the cap by itself, runs alone.
        let (worker, started, release) = gated_rows(16, 16, 16, 0);
        let first = worker.submit(request_rows("first", 1)).unwrap();
        assert_eq!(started.recv().unwrap(), ["first"]);
        let waiting: Vec<Ticket> = [("a", 8), ("b", 8), ("c", 4), ("d", 12), ("e", 20)]
            .iter()
            .map(|&(w, rows)| worker.submit(request_rows(w, rows)).unwrap())
            .collect();
        for _ in 0..4 {
            release.send(()).unwrap();
        }
        first.result().await.unwrap();
        for t in waiting {
            t.result().await.unwrap();
        }
        let batches: Vec<Vec<String>> = started.try_iter().collect();
        assert_eq!(batches, [vec!["a", "b"], vec!["c", "d"], vec!["e"]]);
    }

    #[tokio::test]
    async fn a_request_whose_caller_has_gone_is_not_run() {
        let (worker, started, release) = gated(16, 16, 0);
        let first = worker.submit(request("a")).unwrap();
        assert_eq!(started.recv().unwrap(), ["a"]);
        drop(worker.submit(request("gone")).unwrap());
        let kept = worker.submit(request("kept")).unwrap();
        release.send(()).unwrap();
        release.send(()).unwrap();
        first.result().await.unwrap();
        assert_eq!(kept.result().await.unwrap().keywords, ["kept"]);
        assert_eq!(started.try_iter().collect::<Vec<_>>(), [vec!["kept"]]);
        assert_eq!(worker.pending(), 0);
    }

    #[tokio::test]
    async fn the_wait_window_lets_a_later_request_join() {
        // An idle worker with a long window: the second request, sent soon
        // after the first, joins its batch.
        let (worker, started, release) = gated(16, 2, 2_000);
        let first = worker.submit(request("a")).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        let second = worker.submit(request("b")).unwrap();
        release.send(()).unwrap();
        first.result().await.unwrap();
        second.result().await.unwrap();
        assert_eq!(started.try_iter().collect::<Vec<_>>(), [vec!["a", "b"]]);
    }
}
