//! `Peer`: what the Transport knows of one other node and what it still owes it.
//! Pure bookkeeping, no I/O: the outbox of items waiting for the next flush, the
//! frames sent but not yet acknowledged, what has been received from it (to
//! acknowledge), and when to dial it.
//!
//! Batching: at most [`PIPELINE_FRAMES_MAX`] frames are in flight towards a peer.
//! While the window is full, new items wait in the outbox and leave together in
//! one frame when an acknowledgement frees a place: the busier the link, the
//! bigger the frames, as with the WAL's group commit.
//!
//! Acknowledgements ride on every frame. A peer that received frames but has
//! nothing to send answers with an empty frame once [`ACK_AFTER_FRAMES`] are
//! unacknowledged (so a sender is never stuck behind a full window), or at the
//! next tick.
//!
//! Invariants: at most [`PIPELINE_FRAMES_MAX`] frames of at most
//! [`BATCH_BYTES_MAX`] bytes are unacknowledged towards a peer, and its outbox
//! holds at most [`OUTBOX_BYTES_MAX`] bytes. Raft messages for a peer that is not
//! connected, or that has not acknowledged anything for [`STALL_MAX`], are dropped
//! and counted instead of queued (Raft retransmits); other items wait for the
//! outbox bound.

use super::wire::{PeerFrame, PeerItem, BATCH_BYTES_MAX, FRAME_ITEMS_MAX, PEER_FRAME_VERSION};
use crate::ids::NodeId;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Frames sent to a peer and not yet acknowledged, at most.
pub const PIPELINE_FRAMES_MAX: usize = 2;
/// A receiver with nothing to send acknowledges once this many frames are unacked.
pub const ACK_AFTER_FRAMES: u64 = 2;
/// A full window this old means the peer is not taking frames (stopped, or its
/// link is stuck): Raft messages for it are dropped rather than queued.
pub const STALL_MAX: Duration = Duration::from_secs(1);
/// Bytes waiting in a peer's outbox, at most.
pub const OUTBOX_BYTES_MAX: u64 = 128 * 1024 * 1024;
/// A peer not heard from for this long is reported unreachable: calls to it fail
/// at once instead of waiting for their timeout.
pub const SILENCE_MAX: Duration = Duration::from_secs(3);
/// A session this silent is taken as dead and closed, so that the peer can connect
/// again. Peers send a frame at least every 500 ms, so this is many missed
/// keepalives. A peer that crashed where its close never reached us (a host gone,
/// a firewall dropping the reset) leaves a half-open connection that ractor_cluster
/// keeps until TCP gives up, minutes later, refusing the restarted peer's new
/// connections as duplicates of it meanwhile.
pub const SESSION_SILENCE_MAX: Duration = Duration::from_secs(5);
/// First and longest wait between dial attempts.
pub const DIAL_BACKOFF_MIN: Duration = Duration::from_millis(200);
pub const DIAL_BACKOFF_MAX: Duration = Duration::from_secs(2);

/// Why an item was not queued.
#[derive(Debug, PartialEq, Eq)]
pub enum QueueRefusal {
    /// The outbox is full, or the peer stalled (for Raft messages).
    OutboxFull,
}

/// A frame sent and not yet acknowledged.
#[derive(Debug)]
struct InFlight {
    sequence: u64,
    sent_at: Instant,
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
    /// Every frame not yet acknowledged, oldest first.
    in_flight: VecDeque<InFlight>,
    /// The peer's Transport instance we last heard from, and the highest sequence
    /// received from it.
    received_instance: u64,
    received: u64,
    /// Frames received since the last frame sent (acknowledgements owed).
    unacknowledged: u64,
    /// A keepalive (or a pending acknowledgement at a tick) is due.
    frame_owed: bool,
    pub last_heard: Option<Instant>,
    /// When the current session to the peer was found (none without a session).
    session_since: Option<Instant>,
    /// Gossip declared the peer down: nothing is sent to it, calls to it fail at
    /// once and it is not dialed, until gossip sees it up again.
    pub gossip_down: bool,
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
            received_instance: 0,
            received: 0,
            unacknowledged: 0,
            frame_owed: false,
            last_heard: None,
            session_since: None,
            gossip_down: false,
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

    /// Whether the window has been full for longer than [`STALL_MAX`].
    fn stalled(&self, now: Instant) -> bool {
        self.in_flight.len() >= PIPELINE_FRAMES_MAX
            && self
                .in_flight
                .front()
                .is_some_and(|oldest| now.duration_since(oldest.sent_at) > STALL_MAX)
    }

    /// Queues an item for the next flush.
    pub fn queue(&mut self, item: PeerItem, now: Instant) -> Result<(), QueueRefusal> {
        let bytes = item.size_bytes();
        let raft = matches!(item, PeerItem::Raft { .. });
        if self.outbox_bytes + bytes > OUTBOX_BYTES_MAX
            || (raft && (self.gossip_down || self.stalled(now)))
        {
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
        self.frame_owed = true;
    }

    /// At a tick, acknowledgements still owed are sent even if few.
    pub fn owe_pending_acks(&mut self) {
        if self.unacknowledged > 0 {
            self.frame_owed = true;
        }
    }

    /// Whether a flush would send something now: items, if the window has room, or
    /// an owed frame (acknowledgements and keepalives never wait for the window:
    /// two peers with full windows towards each other would otherwise wait for
    /// each other's acknowledgements forever).
    pub fn wants_flush(&self) -> bool {
        (self.in_flight.len() < PIPELINE_FRAMES_MAX && !self.outbox.is_empty()) || self.ack_due()
    }

    fn ack_due(&self) -> bool {
        self.frame_owed || self.unacknowledged >= ACK_AFTER_FRAMES
    }

    /// Whether calls may be sent: the peer was heard from recently.
    pub fn is_reachable(&self, now: Instant) -> bool {
        !self.gossip_down
            && self
                .last_heard
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
        if !frame.items.is_empty() {
            // Empty frames are acknowledgements and keepalives; answering them with
            // acknowledgements of their own would never stop.
            self.unacknowledged += 1;
        }
        self.last_heard = Some(now);
        if frame.acknowledged_instance == my_instance {
            while self
                .in_flight
                .front()
                .is_some_and(|in_flight| in_flight.sequence <= frame.acknowledged)
            {
                self.in_flight.pop_front();
            }
        }
        restarted
    }

    /// The peer's session changed (a new connection): nothing sent before will be
    /// acknowledged, so the in-flight window starts empty.
    pub fn reset_session(&mut self, now: Instant) {
        self.in_flight.clear();
        self.session_since = Some(now);
    }

    /// Whether the current session has carried nothing from the peer for
    /// [`SESSION_SILENCE_MAX`] (counted from when it was found, if later).
    pub fn session_silent(&self, now: Instant) -> bool {
        let Some(since) = self.session_since else {
            return false;
        };
        let heard = self.last_heard.map_or(since, |heard| heard.max(since));
        now.duration_since(heard) > SESSION_SILENCE_MAX
    }

    /// The session was closed (found dead): the next one starts afresh, and the
    /// peer is dialed at once.
    pub fn session_closed(&mut self, now: Instant) {
        self.in_flight.clear();
        self.session_since = None;
        self.dial.next_attempt = now;
        self.dial.backoff = DIAL_BACKOFF_MIN;
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

    /// Drops everything queued (the link to the peer is cut by a fault rule);
    /// returns how many items. Calls among them are answered by their timeout.
    pub fn drop_all(&mut self) -> u64 {
        let dropped = self.outbox.len() as u64;
        self.outbox.clear();
        self.outbox_bytes = 0;
        self.frame_owed = false;
        self.unacknowledged = 0;
        self.dropped_total += dropped;
        dropped
    }

    /// Takes the frames to send now, as far as the window allows; what does not fit
    /// waits in the outbox (Raft messages of a stalled peer are dropped).
    pub fn take_frames(
        &mut self,
        from: NodeId,
        my_instance: u64,
        metadata_revision: u64,
        now: Instant,
    ) -> Vec<Vec<u8>> {
        if self.stalled(now) {
            self.drop_raft();
        }
        let mut frames = Vec::new();
        while self.wants_flush() {
            let room = self.in_flight.len() < PIPELINE_FRAMES_MAX;
            let mut items = Vec::new();
            let mut bytes = 0u64;
            while let Some(item) = self.outbox.front().filter(|_| room) {
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
            self.unacknowledged = 0;
            self.frame_owed = false;
            if !frame.items.is_empty() {
                // Empty frames are not acknowledged (see `received`), so they do not
                // take a place in the window.
                self.in_flight.push_back(InFlight {
                    sequence: self.sent,
                    sent_at: now,
                });
            }
            frames.push(frame.encode());
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

    /// Proves batching: with the window full, later items wait and leave together
    /// in one frame once an acknowledgement frees a place.
    #[test]
    fn a_full_window_batches_what_follows() {
        let now = Instant::now();
        let mut peer = Peer::new(NodeId(2), now);
        for _ in 0..PIPELINE_FRAMES_MAX {
            peer.queue(raft_item(), now).unwrap();
            assert_eq!(peer.take_frames(NodeId(1), 7, 0, now).len(), 1);
        }
        for _ in 0..500 {
            peer.queue(raft_item(), now).unwrap();
        }
        assert!(!peer.wants_flush(), "the window is full");
        assert!(peer.take_frames(NodeId(1), 7, 0, now).is_empty());
        peer.received(&ack(3, 1, 7), 7, now);
        let frames = peer.take_frames(NodeId(1), 7, 0, now);
        assert_eq!(frames.len(), 1);
        let frame = PeerFrame::decode(&frames[0]).unwrap();
        assert_eq!(
            frame.items.len(),
            500,
            "everything queued meanwhile, in one frame"
        );
        assert_eq!(peer.dropped_total, 0);
    }

    /// Regression: two peers whose windows towards each other are both full must
    /// still exchange acknowledgements (an empty frame needs no place in the
    /// window), or each waits for the other forever.
    #[test]
    fn full_windows_both_ways_still_acknowledge() {
        let now = Instant::now();
        let mut a = Peer::new(NodeId(2), now);
        let mut b = Peer::new(NodeId(1), now);
        let (a_instance, b_instance) = (7, 9);
        let mut to_b = Vec::new();
        let mut to_a = Vec::new();
        for _ in 0..PIPELINE_FRAMES_MAX {
            a.queue(raft_item(), now).unwrap();
            b.queue(raft_item(), now).unwrap();
            to_b.extend(a.take_frames(NodeId(1), a_instance, 0, now));
            to_a.extend(b.take_frames(NodeId(2), b_instance, 0, now));
        }
        a.queue(raft_item(), now).unwrap();
        b.queue(raft_item(), now).unwrap();
        for frame in &to_b {
            b.received(&PeerFrame::decode(frame).unwrap(), b_instance, now);
        }
        for frame in &to_a {
            a.received(&PeerFrame::decode(frame).unwrap(), a_instance, now);
        }
        assert!(
            a.wants_flush() && b.wants_flush(),
            "acknowledgements are owed"
        );
        let acks_to_b = a.take_frames(NodeId(1), a_instance, 0, now);
        let acks_to_a = b.take_frames(NodeId(2), b_instance, 0, now);
        assert_eq!((acks_to_b.len(), acks_to_a.len()), (1, 1));
        b.received(&PeerFrame::decode(&acks_to_b[0]).unwrap(), b_instance, now);
        a.received(&PeerFrame::decode(&acks_to_a[0]).unwrap(), a_instance, now);
        assert_eq!((a.frames_in_flight(), b.frames_in_flight()), (0, 0));
        assert_eq!(
            a.take_frames(NodeId(1), a_instance, 0, now).len(),
            1,
            "the queued item goes"
        );
    }

    /// Proves a peer that acknowledges nothing for STALL_MAX stops receiving Raft
    /// messages (dropped and counted) while other items wait for it.
    #[test]
    fn a_stalled_peer_gets_no_raft_messages() {
        let now = Instant::now();
        let mut peer = Peer::new(NodeId(2), now);
        for _ in 0..PIPELINE_FRAMES_MAX {
            peer.queue(raft_item(), now).unwrap();
            peer.take_frames(NodeId(1), 7, 0, now);
        }
        peer.queue(raft_item(), now).unwrap();
        let later = now + STALL_MAX * 2;
        assert_eq!(
            peer.queue(raft_item(), later),
            Err(QueueRefusal::OutboxFull)
        );
        peer.queue(PeerItem::MetadataWanted, later).unwrap();
        assert!(peer.take_frames(NodeId(1), 7, 0, later).is_empty());
        assert_eq!(peer.dropped_total, 2, "the refused one and the queued one");
        peer.received(&ack(3, PIPELINE_FRAMES_MAX as u64, 7), 7, later);
        let frames = peer.take_frames(NodeId(1), 7, 0, later);
        let frame = PeerFrame::decode(&frames[0]).unwrap();
        assert_eq!(frame.items, vec![PeerItem::MetadataWanted]);
    }

    /// Proves the acknowledgement policy: data frames received are acknowledged by
    /// an empty frame once ACK_AFTER_FRAMES accumulate (or at a tick), empty frames
    /// are not acknowledged, and acknowledgements for another instance of ours are
    /// ignored.
    #[test]
    fn acknowledgements() {
        let now = Instant::now();
        let mut peer = Peer::new(NodeId(2), now);
        let mut data = ack(3, 0, 7);
        data.items.push(PeerItem::MetadataWanted);
        assert!(peer.received(&data, 7, now), "first frame of instance 3");
        assert!(!peer.wants_flush(), "one data frame: the ack can wait");
        peer.received(&ack(3, 0, 7), 7, now);
        assert!(!peer.wants_flush(), "empty frames are not acknowledged");
        peer.received(&data, 7, now);
        assert!(peer.wants_flush(), "two data frames: acknowledge now");
        let frames = peer.take_frames(NodeId(1), 7, 0, now);
        assert_eq!(frames.len(), 1);
        let frame = PeerFrame::decode(&frames[0]).unwrap();
        assert!(frame.items.is_empty());
        assert_eq!((frame.acknowledged, frame.acknowledged_instance), (1, 3));
        assert_eq!(peer.frames_in_flight(), 0, "empty frames take no place");
        peer.received(&data, 7, now);
        peer.owe_pending_acks();
        assert!(peer.wants_flush(), "a tick sends what is owed");
        peer.queue(raft_item(), now).unwrap();
        peer.take_frames(NodeId(1), 7, 0, now);
        assert_eq!(peer.frames_in_flight(), 1);
        peer.received(&ack(3, 10_000, 8), 7, now);
        assert_eq!(
            peer.frames_in_flight(),
            1,
            "an ack for another instance of ours"
        );
        assert!(peer.is_reachable(now));
        assert!(!peer.is_reachable(now + SILENCE_MAX * 2));
    }

    /// Proves when a session counts as dead: nothing heard on it for
    /// SESSION_SILENCE_MAX, counted from when it was found if that is later than the
    /// last frame; and a closed session is not silent (there is none) and is
    /// redialed at once.
    #[test]
    fn a_session_is_dead_after_silence() {
        let now = Instant::now();
        let mut peer = Peer::new(NodeId(2), now);
        assert!(
            !peer.session_silent(now + SESSION_SILENCE_MAX * 2),
            "no session"
        );
        peer.received(&ack(3, 0, 7), 7, now);
        let found = now + SESSION_SILENCE_MAX * 3;
        peer.reset_session(found);
        assert!(
            !peer.session_silent(found + SESSION_SILENCE_MAX),
            "a new session gets its own time, whatever was heard before"
        );
        let silent = found + SESSION_SILENCE_MAX + Duration::from_millis(1);
        assert!(peer.session_silent(silent));
        peer.received(&ack(3, 0, 7), 7, silent);
        assert!(
            !peer.session_silent(silent + SESSION_SILENCE_MAX),
            "heard again"
        );
        peer.dial.next_attempt = silent + DIAL_BACKOFF_MAX;
        peer.session_closed(silent);
        assert!(!peer.session_silent(silent + SESSION_SILENCE_MAX * 9));
        assert_eq!(peer.dial.next_attempt, silent, "redialed at once");
    }
}
