//! `Peer`: what the Transport knows of one other node and what it still owes it.
//! Pure bookkeeping, no I/O: the outbox of items waiting for the next flush, the
//! frames sent but not yet acknowledged (the bounded queue towards the peer), what
//! has been received from it (to acknowledge), and when to dial it.
//!
//! Invariants: at most [`FRAMES_IN_FLIGHT_MAX`] frames and [`BYTES_IN_FLIGHT_MAX`]
//! bytes are unacknowledged towards a peer; beyond that Raft messages are dropped
//! and counted (Raft retransmits), and other items wait in the outbox, which holds
//! at most [`OUTBOX_BYTES_MAX`] bytes.

use super::wire::{PeerFrame, PeerItem, BATCH_BYTES_MAX, FRAME_ITEMS_MAX, PEER_FRAME_VERSION};
use crate::ids::NodeId;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Frames sent to a peer and not yet acknowledged, at most.
pub const FRAMES_IN_FLIGHT_MAX: usize = 512;
/// Bytes sent to a peer and not yet acknowledged, at most.
pub const BYTES_IN_FLIGHT_MAX: u64 = 64 * 1024 * 1024;
/// Bytes waiting in a peer's outbox, at most.
pub const OUTBOX_BYTES_MAX: u64 = 128 * 1024 * 1024;
/// A peer not heard from for this long is reported unreachable: calls to it fail
/// at once instead of waiting for their timeout.
pub const SILENCE_MAX: Duration = Duration::from_secs(3);
/// First and longest wait between dial attempts.
pub const DIAL_BACKOFF_MIN: Duration = Duration::from_millis(200);
pub const DIAL_BACKOFF_MAX: Duration = Duration::from_secs(2);

/// Why an item was not queued.
#[derive(Debug, PartialEq, Eq)]
pub enum QueueRefusal {
    /// The outbox is full.
    OutboxFull,
}

/// One other node, as the Transport sees it.
#[derive(Debug)]
pub struct Peer {
    pub node: NodeId,
    /// Where its cluster listener is, once known.
    pub address: Option<String>,
    outbox: VecDeque<PeerItem>,
    outbox_bytes: u64,
    /// Last sequence sent to the peer's current session (by this instance).
    sent: u64,
    /// Sequence and size of every frame not yet acknowledged.
    in_flight: VecDeque<(u64, u64)>,
    in_flight_bytes: u64,
    /// The peer's Transport instance we last heard from, and the highest sequence
    /// received from it.
    received_instance: u64,
    received: u64,
    /// A frame is owed even if nothing is queued: something was received since the
    /// last frame sent (an ack), or a keepalive is due.
    ack_owed: bool,
    pub last_heard: Option<Instant>,
    /// Raft messages and other items dropped because the peer could not take them.
    pub dropped_total: u64,
    /// Metadata revision last sent to the peer, and when.
    pub metadata_sent: Option<(u64, Instant)>,
    /// When metadata was last asked of the peer.
    pub metadata_asked: Option<Instant>,
    pub dial: DialState,
}

/// When to dial the peer next.
#[derive(Debug)]
pub struct DialState {
    pub in_progress: bool,
    pub next_attempt: Instant,
    pub backoff: Duration,
}

impl Peer {
    pub fn new(node: NodeId, now: Instant) -> Peer {
        Peer {
            node,
            address: None,
            outbox: VecDeque::new(),
            outbox_bytes: 0,
            sent: 0,
            in_flight: VecDeque::new(),
            in_flight_bytes: 0,
            received_instance: 0,
            received: 0,
            ack_owed: false,
            last_heard: None,
            dropped_total: 0,
            metadata_sent: None,
            metadata_asked: None,
            dial: DialState {
                in_progress: false,
                next_attempt: now,
                backoff: DIAL_BACKOFF_MIN,
            },
        }
    }

    /// Queues an item for the next flush.
    pub fn queue(&mut self, item: PeerItem) -> Result<(), QueueRefusal> {
        let bytes = item.size_bytes();
        if self.outbox_bytes + bytes > OUTBOX_BYTES_MAX {
            self.dropped_total += 1;
            return Err(QueueRefusal::OutboxFull);
        }
        self.outbox_bytes += bytes;
        self.outbox.push_back(item);
        Ok(())
    }

    /// Makes the next flush send a frame even with nothing queued (a keepalive: it
    /// carries acknowledgements and the metadata revision).
    pub fn queue_keepalive(&mut self) {
        self.ack_owed = true;
    }

    /// Whether a flush has anything to send (items, or an ack owed).
    pub fn has_pending(&self) -> bool {
        !self.outbox.is_empty() || self.ack_owed
    }

    /// Whether calls may be sent: the peer was heard from recently.
    pub fn is_reachable(&self, now: Instant) -> bool {
        self.last_heard
            .is_some_and(|heard| now.duration_since(heard) <= SILENCE_MAX)
    }

    /// Records a frame received from the peer; returns whether it came from a new
    /// instance of the peer's Transport (its sequences restart).
    pub fn received(&mut self, frame: &PeerFrame, my_instance: u64, now: Instant) -> bool {
        let restarted = frame.instance != self.received_instance;
        if restarted {
            self.received_instance = frame.instance;
            self.received = 0;
        }
        self.received = self.received.max(frame.sequence);
        self.ack_owed = true;
        self.last_heard = Some(now);
        if frame.acknowledged_instance == my_instance {
            while self
                .in_flight
                .front()
                .is_some_and(|(sequence, _)| *sequence <= frame.acknowledged)
            {
                if let Some((_, bytes)) = self.in_flight.pop_front() {
                    self.in_flight_bytes -= bytes;
                }
            }
        }
        restarted
    }

    /// The peer's session changed (a new connection): nothing sent before will be
    /// acknowledged, so the in-flight window starts empty.
    pub fn reset_session(&mut self) {
        self.in_flight.clear();
        self.in_flight_bytes = 0;
    }

    /// Drops queued Raft messages (the peer is unreachable); returns how many.
    pub fn drop_raft(&mut self) -> u64 {
        let before = self.outbox.len();
        self.outbox
            .retain(|item| !matches!(item, PeerItem::Raft { .. }));
        self.outbox_bytes = self.outbox.iter().map(PeerItem::size_bytes).sum();
        let dropped = (before - self.outbox.len()) as u64;
        self.dropped_total += dropped;
        dropped
    }

    /// Takes the frames to send now, as far as the in-flight window allows. Raft
    /// messages that do not fit the window are dropped and counted; other items
    /// stay queued for a later flush.
    pub fn take_frames(
        &mut self,
        from: NodeId,
        my_instance: u64,
        metadata_revision: u64,
    ) -> Vec<Vec<u8>> {
        let mut frames = Vec::new();
        while self.has_pending() {
            if self.in_flight.len() >= FRAMES_IN_FLIGHT_MAX
                || self.in_flight_bytes >= BYTES_IN_FLIGHT_MAX
            {
                self.drop_raft();
                break;
            }
            let mut items = Vec::new();
            let mut bytes = 0u64;
            while let Some(item) = self.outbox.front() {
                let item_bytes = item.size_bytes();
                if !items.is_empty()
                    && (bytes + item_bytes > BATCH_BYTES_MAX || items.len() >= FRAME_ITEMS_MAX)
                {
                    break;
                }
                bytes += item_bytes;
                self.outbox_bytes -= item_bytes;
                if let Some(item) = self.outbox.pop_front() {
                    items.push(item);
                }
            }
            self.sent += 1;
            let frame = PeerFrame {
                version: PEER_FRAME_VERSION,
                from,
                instance: my_instance,
                sequence: self.sent,
                acknowledged: self.received,
                acknowledged_instance: self.received_instance,
                metadata_revision,
                items,
            };
            self.ack_owed = false;
            let encoded = frame.encode();
            self.in_flight.push_back((self.sent, encoded.len() as u64));
            self.in_flight_bytes += encoded.len() as u64;
            frames.push(encoded);
        }
        frames
    }

    /// A dial attempt ended.
    pub fn dialed(&mut self, succeeded: bool, now: Instant) {
        self.dial.in_progress = false;
        if succeeded {
            // The session still has to authenticate; give it time before redialing.
            self.dial.backoff = DIAL_BACKOFF_MIN;
            self.dial.next_attempt = now + DIAL_BACKOFF_MAX;
        } else {
            self.dial.next_attempt = now + self.dial.backoff;
            self.dial.backoff = (self.dial.backoff * 2).min(DIAL_BACKOFF_MAX);
        }
    }

    /// Frames sent and not acknowledged.
    pub fn frames_in_flight(&self) -> usize {
        self.in_flight.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::GroupId;
    use crate::transport::wire::RaftMessageRecord;
    use bytes::Bytes;

    fn raft_item() -> PeerItem {
        PeerItem::Raft {
            group: GroupId(1),
            message: RaftMessageRecord {
                msg_type: 8,
                to: 2,
                from: 1,
                term: 1,
                log_term: 0,
                index: 0,
                entries: Vec::new(),
                commit: 0,
                commit_term: 0,
                snapshot: None,
                request_snapshot: 0,
                reject: false,
                reject_hint: 0,
                context: Bytes::new(),
                priority: 0,
            },
        }
    }

    fn ack(from_instance: u64, acknowledged: u64, my_instance: u64) -> PeerFrame {
        PeerFrame {
            version: PEER_FRAME_VERSION,
            from: NodeId(2),
            instance: from_instance,
            sequence: 1,
            acknowledged,
            acknowledged_instance: my_instance,
            metadata_revision: 0,
            items: Vec::new(),
        }
    }

    /// Proves the window: a peer that acknowledges nothing gets at most
    /// FRAMES_IN_FLIGHT_MAX frames, later Raft messages are dropped and counted,
    /// other items wait, and an acknowledgement reopens the window.
    #[test]
    fn unacknowledged_frames_are_bounded() {
        let now = Instant::now();
        let mut peer = Peer::new(NodeId(2), now);
        for _ in 0..FRAMES_IN_FLIGHT_MAX {
            peer.queue(raft_item()).unwrap();
            assert_eq!(peer.take_frames(NodeId(1), 7, 0).len(), 1);
        }
        peer.queue(raft_item()).unwrap();
        peer.queue(PeerItem::MetadataWanted).unwrap();
        assert!(peer.take_frames(NodeId(1), 7, 0).is_empty());
        assert_eq!(peer.dropped_total, 1);
        assert!(peer.has_pending(), "the metadata request waits");
        peer.received(&ack(3, 100, 7), 7, now);
        assert_eq!(peer.frames_in_flight(), FRAMES_IN_FLIGHT_MAX - 100);
        let frames = peer.take_frames(NodeId(1), 7, 0);
        assert_eq!(frames.len(), 1);
        let frame = PeerFrame::decode(&frames[0]).unwrap();
        assert_eq!(frame.items, vec![PeerItem::MetadataWanted]);
        assert_eq!((frame.acknowledged, frame.acknowledged_instance), (1, 3));
        // Acks for another instance of ours are ignored.
        peer.received(&ack(3, 10_000, 8), 7, now);
        assert_eq!(peer.frames_in_flight(), FRAMES_IN_FLIGHT_MAX - 99);
    }

    /// Proves items are packed into frames up to the batch size, and that an owed
    /// ack alone produces a frame.
    #[test]
    fn batches_and_acks() {
        let now = Instant::now();
        let mut peer = Peer::new(NodeId(2), now);
        for _ in 0..1_000 {
            peer.queue(raft_item()).unwrap();
        }
        let frames = peer.take_frames(NodeId(1), 7, 5);
        assert_eq!(frames.len(), 1);
        assert_eq!(PeerFrame::decode(&frames[0]).unwrap().items.len(), 1_000);
        assert!(peer.take_frames(NodeId(1), 7, 5).is_empty());
        assert!(
            peer.received(&ack(3, 0, 7), 7, now),
            "first frame of instance 3"
        );
        assert!(!peer.received(&ack(3, 0, 7), 7, now));
        let frames = peer.take_frames(NodeId(1), 7, 5);
        assert_eq!(frames.len(), 1, "the owed ack");
        assert!(peer.is_reachable(now));
        assert!(!peer.is_reachable(now + SILENCE_MAX * 2));
    }
}
