//! The model thread: one OS thread owns the pipeline; async callers send it
//! jobs over a bounded queue and get the answer on a oneshot channel.
//!
//! As in text-embeddings-inference: the models never run on the async runtime,
//! a full queue answers `Overloaded` at once instead of waiting, each caller
//! learns its place in the queue, and a panic inside a job is caught, reported
//! to that caller, and the thread goes on with the next job.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Arc;

use tokio::sync::oneshot;

use crate::error::Error;
use crate::pipeline::{Pipeline, PoemOptions, PoemResult};

/// What the model thread can be asked.
#[derive(Debug, Clone)]
pub enum Job {
    Keywords {
        keywords: Vec<String>,
        options: PoemOptions,
    },
    Photo {
        bytes: Vec<u8>,
        keywords: Vec<String>,
        /// A channel's own keyword list; `None`: the built-in vocabulary.
        vocabulary: Option<Vec<String>>,
        options: PoemOptions,
    },
}

/// The synchronous side of the worker: the pipeline, or a stand-in in tests.
pub trait Backend: Send + 'static {
    fn run(&mut self, job: Job) -> Result<PoemResult, Error>;
}

impl Backend for Pipeline {
    fn run(&mut self, job: Job) -> Result<PoemResult, Error> {
        match job {
            Job::Keywords { keywords, options } => self.poem_from_keywords(keywords, &options),
            Job::Photo {
                bytes,
                keywords,
                vocabulary,
                options,
            } => self.poem_from_photo(&bytes, keywords, vocabulary.as_deref(), &options),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
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
    job: Job,
    reply: oneshot::Sender<Result<PoemResult, WorkerError>>,
}

#[derive(Clone)]
pub struct Worker {
    queue: SyncSender<Envelope>,
    /// Jobs sent and not yet finished (the one running included).
    pending: Arc<AtomicUsize>,
}

/// A job in the queue.
pub struct Ticket {
    /// Jobs ahead of this one when it was queued (0: it runs next).
    pub ahead: usize,
    reply: oneshot::Receiver<Result<PoemResult, WorkerError>>,
}

impl Ticket {
    pub async fn result(self) -> Result<PoemResult, WorkerError> {
        self.reply.await.unwrap_or(Err(WorkerError::Stopped))
    }
}

impl Worker {
    /// Starts the model thread with room for `queue_size` waiting jobs.
    pub fn spawn(mut backend: impl Backend, queue_size: usize) -> Self {
        let (queue, jobs) = sync_channel::<Envelope>(queue_size);
        let pending = Arc::new(AtomicUsize::new(0));
        let done = pending.clone();
        std::thread::Builder::new()
            .name("yingshi-models".into())
            .spawn(move || {
                for Envelope { job, reply } in jobs {
                    let result = match catch_unwind(AssertUnwindSafe(|| backend.run(job))) {
                        Ok(result) => result.map_err(WorkerError::Failed),
                        Err(panic) => {
                            let what = panic
                                .downcast_ref::<&str>()
                                .map(|s| s.to_string())
                                .or_else(|| panic.downcast_ref::<String>().cloned())
                                .unwrap_or_default();
                            tracing::error!(what, "a job panicked in the model thread");
                            Err(WorkerError::Panicked)
                        }
                    };
                    done.fetch_sub(1, Ordering::SeqCst);
                    // The caller may have gone; nothing to do then.
                    let _ = reply.send(result);
                }
            })
            .expect("the model thread starts");
        Self { queue, pending }
    }

    /// Queues a job, or says at once that the queue is full.
    pub fn submit(&self, job: Job) -> Result<Ticket, WorkerError> {
        let (reply, rx) = oneshot::channel();
        let ahead = self.pending.fetch_add(1, Ordering::SeqCst);
        match self.queue.try_send(Envelope { job, reply }) {
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

    /// Jobs waiting or running now.
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::sync::Mutex;

    use super::*;
    use crate::poem::Form;

    /// Says when a job starts, then waits until the test lets it finish;
    /// panics on the keyword "panic".
    struct Gate {
        started: mpsc::Sender<()>,
        release: Mutex<mpsc::Receiver<()>>,
    }

    impl Backend for Gate {
        fn run(&mut self, job: Job) -> Result<PoemResult, Error> {
            let Job::Keywords { keywords, options } = job else {
                unreachable!()
            };
            self.started.send(()).unwrap();
            self.release.lock().unwrap().recv().unwrap();
            if keywords.iter().any(|k| k == "panic") {
                panic!("planted");
            }
            Ok(PoemResult {
                form: options.form,
                keywords,
                matched: vec![],
                candidates: vec![],
            })
        }
    }

    fn job(word: &str) -> Job {
        Job::Keywords {
            keywords: vec![word.into()],
            options: PoemOptions {
                form: Form::WuJue,
                acrostic: None,
                candidates: 1,
                seed: 0,
            },
        }
    }

    #[tokio::test]
    async fn queue_positions_overload_and_panics() {
        let (started_tx, started) = mpsc::channel();
        let (release, release_rx) = mpsc::channel();
        let worker = Worker::spawn(
            Gate {
                started: started_tx,
                release: Mutex::new(release_rx),
            },
            2,
        );

        let first = worker.submit(job("a")).unwrap();
        assert_eq!(first.ahead, 0);
        started.recv().unwrap(); // "a" runs; the queue is empty again.
        let queued: Vec<Ticket> = ["b", "panic"]
            .iter()
            .map(|w| worker.submit(job(w)).unwrap())
            .collect();
        assert_eq!(queued.iter().map(|t| t.ahead).collect::<Vec<_>>(), [1, 2]);
        let over = worker.submit(job("c"));
        assert!(
            matches!(over, Err(WorkerError::Overloaded { waiting: 3 })),
            "{:?}",
            over.err()
        );

        for _ in 0..3 {
            release.send(()).unwrap();
        }
        assert_eq!(first.result().await.unwrap().keywords, ["a"]);
        let mut results = Vec::new();
        for t in queued {
            results.push(t.result().await);
        }
        assert_eq!(results[0].as_ref().unwrap().keywords, ["b"]);
        assert!(matches!(results[1], Err(WorkerError::Panicked)));
        // The thread survived the panic.
        let after = worker.submit(job("d")).unwrap();
        release.send(()).unwrap();
        assert_eq!(after.result().await.unwrap().keywords, ["d"]);
        assert_eq!(worker.pending(), 0);
    }
}
