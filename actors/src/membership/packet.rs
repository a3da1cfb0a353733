//! Authenticated gossip packets: what goes over the gossip UDP socket around foca's
//! own bytes (DESIGN §6).
//!
//! Layout: `version u8` (1), `tag [u8; 32]`, then the payload. The tag is
//! HMAC-SHA256, keyed with the cluster secret, over the version byte followed by the
//! payload. A packet that is too short, too long, of another version or with a tag
//! that does not verify is refused before any of its payload is parsed; the caller
//! drops it and counts it. Tags are compared in constant time.
//!
//! A cluster without a secret (allowed only when every listener is on loopback) keys
//! the HMAC with the empty string: packets are still checked for corruption, but
//! anyone can forge them.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// The layout version written into every packet.
pub const PACKET_VERSION: u8 = 1;
/// Bytes of the HMAC-SHA256 tag.
pub const TAG_BYTES: usize = 32;
/// Bytes before the payload.
pub const HEADER_BYTES: usize = 1 + TAG_BYTES;
/// Largest packet, header included: one UDP datagram that crosses common networks
/// without fragmenting.
pub const PACKET_BYTES_MAX: usize = 1_400;
/// Largest payload a packet can carry.
pub const PAYLOAD_BYTES_MAX: usize = PACKET_BYTES_MAX - HEADER_BYTES;

type HmacSha256 = Hmac<Sha256>;

/// Why a packet was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    #[error("gossip packet of {0} bytes is shorter than its {HEADER_BYTES}-byte header")]
    TooShort(usize),
    #[error("gossip packet of {0} bytes is longer than the {PACKET_BYTES_MAX}-byte limit")]
    TooLong(usize),
    #[error("gossip packet of version {0}; this node speaks version {PACKET_VERSION}")]
    UnknownVersion(u8),
    #[error("gossip packet whose HMAC does not verify (another cluster secret, or altered)")]
    BadTag,
}

/// Seals and opens packets with one cluster secret.
#[derive(Clone)]
pub struct PacketKey {
    mac: HmacSha256,
}

impl std::fmt::Debug for PacketKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.write_str("PacketKey(..)")
    }
}

impl PacketKey {
    /// A key from the cluster secret (`None`: the empty key, see the module docs).
    pub fn new(secret: Option<&str>) -> PacketKey {
        let secret = secret.unwrap_or("").as_bytes();
        // HMAC takes keys of any length, so this cannot fail.
        let mac = match HmacSha256::new_from_slice(secret) {
            Ok(mac) => mac,
            Err(_) => unreachable!("HMAC accepts keys of every length"),
        };
        PacketKey { mac }
    }

    fn tag(&self, version: u8, payload: &[u8]) -> HmacSha256 {
        let mut mac = self.mac.clone();
        mac.update(&[version]);
        mac.update(payload);
        mac
    }

    /// The packet carrying `payload`, or `TooLong` when it would not fit.
    pub fn seal(&self, payload: &[u8]) -> Result<Vec<u8>, PacketError> {
        if payload.len() > PAYLOAD_BYTES_MAX {
            return Err(PacketError::TooLong(HEADER_BYTES + payload.len()));
        }
        let tag = self.tag(PACKET_VERSION, payload).finalize().into_bytes();
        let mut packet = Vec::with_capacity(HEADER_BYTES + payload.len());
        packet.push(PACKET_VERSION);
        packet.extend_from_slice(&tag);
        packet.extend_from_slice(payload);
        Ok(packet)
    }

    /// The payload of an authentic packet.
    pub fn open<'a>(&self, packet: &'a [u8]) -> Result<&'a [u8], PacketError> {
        if packet.len() > PACKET_BYTES_MAX {
            return Err(PacketError::TooLong(packet.len()));
        }
        if packet.len() < HEADER_BYTES {
            return Err(PacketError::TooShort(packet.len()));
        }
        let (version, rest) = (packet[0], &packet[1..]);
        if version != PACKET_VERSION {
            return Err(PacketError::UnknownVersion(version));
        }
        let (tag, payload) = rest.split_at(TAG_BYTES);
        self.tag(version, payload)
            .verify_slice(tag)
            .map_err(|_| PacketError::BadTag)?;
        Ok(payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|byte| format!("{byte:02x}")).collect()
    }

    #[test]
    fn the_tag_is_hmac_sha256() {
        // RFC 4231, test case 2, with the data split as the packet splits it: the
        // version byte is the data's first byte.
        let data = b"what do ya want for nothing?";
        let key = PacketKey::new(Some("Jefe"));
        let tag = key.tag(data[0], &data[1..]).finalize().into_bytes();
        assert_eq!(
            hex(&tag),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn a_sealed_packet_opens_with_its_payload() {
        let key = PacketKey::new(Some("s3cret"));
        let packet = key.seal(b"ping from 2").unwrap();
        assert_eq!(packet.len(), HEADER_BYTES + 11);
        assert_eq!(packet[0], PACKET_VERSION);
        assert_eq!(key.open(&packet), Ok(&b"ping from 2"[..]));
        let empty = key.seal(b"").unwrap();
        assert_eq!(key.open(&empty), Ok(&b""[..]));
    }

    #[test]
    fn another_secret_is_refused() {
        let packet = PacketKey::new(Some("one")).seal(b"hello").unwrap();
        assert_eq!(
            PacketKey::new(Some("two")).open(&packet),
            Err(PacketError::BadTag)
        );
        assert_eq!(PacketKey::new(None).open(&packet), Err(PacketError::BadTag));
    }

    #[test]
    fn malformed_packets_are_refused() {
        let key = PacketKey::new(Some("s"));
        assert_eq!(key.open(&[]), Err(PacketError::TooShort(0)));
        assert_eq!(
            key.open(&[PACKET_VERSION; HEADER_BYTES - 1]),
            Err(PacketError::TooShort(HEADER_BYTES - 1))
        );
        let mut other_version = key.seal(b"x").unwrap();
        other_version[0] = 2;
        assert_eq!(
            key.open(&other_version),
            Err(PacketError::UnknownVersion(2))
        );
        let too_long = vec![PACKET_VERSION; PACKET_BYTES_MAX + 1];
        assert_eq!(
            key.open(&too_long),
            Err(PacketError::TooLong(PACKET_BYTES_MAX + 1))
        );
        assert_eq!(
            key.seal(&[0; PAYLOAD_BYTES_MAX + 1]),
            Err(PacketError::TooLong(PACKET_BYTES_MAX + 1))
        );
        assert!(key.seal(&[0; PAYLOAD_BYTES_MAX]).is_ok());
    }

    proptest! {
        #[test]
        fn any_flipped_bit_is_refused(
            payload in proptest::collection::vec(any::<u8>(), 0..200),
            bit in any::<usize>(),
        ) {
            let key = PacketKey::new(Some("cluster secret"));
            let mut packet = key.seal(&payload).unwrap();
            let bit = bit % (packet.len() * 8);
            packet[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(key.open(&packet).is_err());
        }

        #[test]
        fn arbitrary_bytes_never_open(bytes in proptest::collection::vec(any::<u8>(), 0..1_500)) {
            let key = PacketKey::new(Some("cluster secret"));
            prop_assert!(key.open(&bytes).is_err());
        }
    }
}
