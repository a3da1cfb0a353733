//! The one ordered timer task of a foca instance (DESIGN §6). foca asks for events
//! "after a duration"; this task holds them by deadline and delivers each, in
//! deadline order (ties in the order they were asked for), to one callback. Events
//! are never dropped while the task runs, as foca requires; the task ends when the
//! scheduling side is dropped.

use std::collections::BTreeMap;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Asks the timer task for events.
pub struct TimerHandle<E> {
    requests: mpsc::UnboundedSender<(Instant, E)>,
}

impl<E> TimerHandle<E> {
    /// Delivers `event` once `after` has passed; false when the task is gone.
    pub fn schedule(&self, event: E, after: Duration) -> bool {
        self.requests.send((Instant::now() + after, event)).is_ok()
    }
}

/// Starts the task; `deliver` gets every due event in order and returns false to
/// stop it (its receiver is gone).
pub fn spawn<E, F>(mut deliver: F) -> (TimerHandle<E>, tokio::task::JoinHandle<()>)
where
    E: Send + 'static,
    F: FnMut(E) -> bool + Send + 'static,
{
    let (requests, mut incoming) = mpsc::unbounded_channel::<(Instant, E)>();
    let task = tokio::spawn(async move {
        let mut pending: BTreeMap<(Instant, u64), E> = BTreeMap::new();
        let mut sequence = 0u64;
        loop {
            let next = pending.keys().next().map(|(deadline, _)| *deadline);
            tokio::select! {
                request = incoming.recv() => match request {
                    Some((deadline, event)) => {
                        sequence += 1;
                        pending.insert((deadline, sequence), event);
                    }
                    None => return,
                },
                _ = sleep_until(next) => {
                    let now = Instant::now();
                    while let Some(entry) = pending.first_entry() {
                        if entry.key().0 > now {
                            break;
                        }
                        if !deliver(entry.remove()) {
                            return;
                        }
                    }
                }
            }
        }
    });
    (TimerHandle { requests }, task)
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves events come out in deadline order whatever the order they were asked
    /// for, ties in request order, and that none is lost.
    #[tokio::test]
    async fn delivers_in_deadline_order() {
        let (delivered, mut received) = mpsc::unbounded_channel();
        let (timers, task) = spawn(move |event: u32| delivered.send(event).is_ok());
        for (event, after_ms) in [(3, 30), (1, 10), (2, 20), (4, 30), (0, 0)] {
            assert!(timers.schedule(event, Duration::from_millis(after_ms)));
        }
        let mut order = Vec::new();
        while order.len() < 5 {
            order.push(received.recv().await.expect("event"));
        }
        assert_eq!(order, vec![0, 1, 2, 3, 4]);
        drop(timers);
        task.await
            .expect("the task ends when its handle is dropped");
    }
}
