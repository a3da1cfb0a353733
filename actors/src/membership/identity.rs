//! Who a node is on the gossip layer: the identity foca gossips about (DESIGN §6).
//!
//! A member is its node id, the addresses it serves on and an incarnation. foca keeps
//! one identity per [`foca::Identity::addr`], which here is the node id (node ids are
//! never reused): when two identities of one node meet, the higher incarnation wins.
//! A node that restarts announces a higher incarnation than its last life, and a node
//! that learns it was declared down renews itself with the next incarnation
//! (`renew`), so it rejoins without an operator.

use crate::ids::NodeId;
use crate::kv::NodeAddresses;
use serde::{Deserialize, Serialize};

/// A node as the gossip layer knows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberIdentity {
    pub node: NodeId,
    pub addresses: NodeAddresses,
    /// Grows with every life of the node and every renewal.
    pub incarnation: u64,
}

impl MemberIdentity {
    /// Addresses compared field by field: only to break a tie between two identities
    /// of one node and one incarnation (a misconfiguration), the same way everywhere.
    fn address_key(&self) -> [&str; 4] {
        let addresses = &self.addresses;
        [
            &addresses.gossip,
            &addresses.cluster,
            &addresses.http,
            &addresses.admin,
        ]
    }
}

impl foca::Identity for MemberIdentity {
    type Addr = NodeId;

    fn renew(&self) -> Option<MemberIdentity> {
        let incarnation = self.incarnation.checked_add(1)?;
        Some(MemberIdentity {
            incarnation,
            ..self.clone()
        })
    }

    fn addr(&self) -> NodeId {
        self.node
    }

    fn win_addr_conflict(&self, adversary: &MemberIdentity) -> bool {
        (self.incarnation, self.address_key()) > (adversary.incarnation, adversary.address_key())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use foca::{Codec, Identity, Member, PostcardCodec};
    use proptest::prelude::*;

    fn member(node: u64, gossip: &str, incarnation: u64) -> MemberIdentity {
        MemberIdentity {
            node: NodeId(node),
            addresses: NodeAddresses {
                http: "127.0.0.1:7070".into(),
                admin: "127.0.0.1:7071".into(),
                cluster: "127.0.0.1:7072".into(),
                gossip: gossip.into(),
            },
            incarnation,
        }
    }

    #[test]
    fn the_address_is_the_node_id() {
        assert_eq!(member(4, "127.0.0.1:7073", 1).addr(), NodeId(4));
        assert_eq!(
            member(4, "127.0.0.1:7073", 1).addr(),
            member(4, "10.0.0.9:7073", 9).addr()
        );
    }

    #[test]
    fn a_renewed_identity_wins_over_the_old_one() {
        let old = member(2, "127.0.0.1:7083", 5);
        let renewed = old.renew().unwrap();
        assert_eq!(renewed.incarnation, 6);
        assert_eq!(renewed.addr(), old.addr());
        assert_eq!(renewed.addresses, old.addresses);
        assert!(renewed.win_addr_conflict(&old));
        assert!(!old.win_addr_conflict(&renewed));
        assert_eq!(member(2, "127.0.0.1:7083", u64::MAX).renew(), None);
    }

    #[test]
    fn identities_travel_through_the_gossip_codec() {
        let identity = member(3, "127.0.0.1:7093", 42);
        let mut codec = PostcardCodec;
        let mut buf = Vec::new();
        codec
            .encode_member(&Member::alive(identity.clone()), &mut buf)
            .unwrap();
        let decoded: Member<MemberIdentity> = codec.decode_member(&buf[..]).unwrap();
        assert_eq!(decoded.id(), &identity);
    }

    proptest! {
        #[test]
        fn exactly_one_of_two_different_identities_wins(
            a_incarnation in 0u64..4,
            b_incarnation in 0u64..4,
            a_port in 7000u16..7003,
            b_port in 7000u16..7003,
        ) {
            let a = member(1, &format!("127.0.0.1:{a_port}"), a_incarnation);
            let b = member(1, &format!("127.0.0.1:{b_port}"), b_incarnation);
            if a == b {
                prop_assert!(!a.win_addr_conflict(&b));
            } else {
                prop_assert_ne!(a.win_addr_conflict(&b), b.win_addr_conflict(&a));
            }
            if a_incarnation > b_incarnation {
                prop_assert!(a.win_addr_conflict(&b));
            }
        }
    }
}
