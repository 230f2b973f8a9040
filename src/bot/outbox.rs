//! Messages the bot posts in channels (its replies to photos), one at a
//! time per channel, in the order they were posted.
//!
//! serenity 0.12.5's rate limiter lets every request waiting on a route go
//! at once when the route's window resets (it does not refill its count
//! before the first answer comes back), and which of them goes first is a
//! race. Through the fake Discord's storm of 429s (`tests/bot_e2e.rs`) that
//! sent 814 replies into buckets the headers said were empty and delivered
//! all ten channels' replies out of order. With one request in
//! flight per channel, each answer's headers reach the limiter before the
//! next request leaves, and a channel's replies keep their order. (Global
//! 429s are held by the limiter itself: `vendor/serenity/PATCH.md`.)

use std::future::Future;
use std::sync::Arc;

use dashmap::DashMap;

#[derive(Default)]
pub(crate) struct Outbox {
    /// A channel's turn: held while one of its posts is in flight, waited
    /// for in order (tokio's mutex is fair). Dropped when no one holds it.
    channels: DashMap<u64, Arc<tokio::sync::Mutex<()>>>,
}

impl Outbox {
    /// Runs `post` in `channel`'s turn.
    pub(crate) async fn post<T>(&self, channel: u64, post: impl Future<Output = T>) -> T {
        let turn = Arc::clone(&self.channels.entry(channel).or_default());
        let out = {
            let _held = turn.lock().await;
            post.await
        };
        // The map's and this one: nobody else holds or waits for the turn.
        self.channels
            .remove_if(&channel, |_, t| Arc::strong_count(t) == 2);
        out
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use super::*;

    /// Posts of one channel run one at a time, in the order they came;
    /// another channel's run beside them; the turns are forgotten after.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn posts_take_turns_per_channel() {
        let outbox = Arc::new(Outbox::default());
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for i in 0..6u64 {
            let (outbox, log) = (outbox.clone(), log.clone());
            tasks.push(tokio::spawn(async move {
                outbox
                    .post(i % 2, async {
                        log.lock().unwrap().push((i % 2, i, "start"));
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        log.lock().unwrap().push((i % 2, i, "end"));
                    })
                    .await
            }));
            // Each asks for its turn before the next is spawned.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        for t in tasks {
            t.await.unwrap();
        }
        let log = log.lock().unwrap().clone();
        for channel in [0, 1] {
            let events: Vec<_> = log.iter().filter(|e| e.0 == channel).collect();
            for pair in events.chunks(2) {
                assert_eq!(
                    (pair[0].2, pair[1].1, pair[1].2),
                    ("start", pair[0].1, "end")
                );
            }
            let order: Vec<u64> = events.iter().step_by(2).map(|e| e.1).collect();
            assert_eq!(
                order,
                (0..6).filter(|i| i % 2 == channel).collect::<Vec<_>>()
            );
        }
        assert_eq!(
            log[1],
            (1, 1, "start"),
            "the other channel's post ran beside the first"
        );
        assert!(outbox.channels.is_empty());
    }
}
