//! The seed probe: a one-packet question on a node's gossip UDP socket, "where is
//! your cluster listener?", so that `--join` can name gossip addresses (as it will
//! with SWIM) while the join itself runs over the cluster connection.
//!
//! Packets: a request is `MAGIC_REQUEST ++ nonce (8 bytes)`; the answer is
//! `MAGIC_REPLY ++ nonce ++ JSON {node_id, cluster}`. Anything else, or anything
//! longer than [`PACKET_BYTES_MAX`], is ignored. The answer reveals only addresses;
//! the cluster connection itself is authenticated by the cluster secret.

use crate::ids::NodeId;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::UdpSocket;

const MAGIC_REQUEST: &[u8] = b"MIMORI-PROBE-1";
const MAGIC_REPLY: &[u8] = b"MIMORI-HERE-1";
const NONCE_BYTES: usize = 8;
/// Largest probe packet either side reads.
pub const PACKET_BYTES_MAX: usize = 512;

/// What a seed answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeReply {
    pub node_id: NodeId,
    /// The seed's cluster listener, `host:port`.
    pub cluster: String,
}

/// Answers probes on `socket` until the task is aborted.
pub async fn serve(socket: Arc<UdpSocket>, reply: ProbeReply) {
    let body = reply_body(&reply);
    let mut buffer = [0u8; PACKET_BYTES_MAX];
    loop {
        let Ok((length, peer)) = socket.recv_from(&mut buffer).await else {
            continue;
        };
        if let Some(answer) = answer(&buffer[..length], &body) {
            let _ = socket.send_to(&answer, peer).await;
        }
    }
}

/// The encoded answer a node gives to every probe.
pub fn reply_body(reply: &ProbeReply) -> Vec<u8> {
    serde_json::to_vec(reply).unwrap_or_default()
}

/// Whether `packet` is a probe (its first bytes say so; gossip packets start
/// otherwise).
pub fn is_probe(packet: &[u8]) -> bool {
    packet.starts_with(MAGIC_REQUEST)
}

/// The answer to `packet` when it is a well-formed probe request.
pub fn answer(packet: &[u8], body: &[u8]) -> Option<Vec<u8>> {
    let nonce = parse_request(packet)?;
    let mut answer = Vec::with_capacity(MAGIC_REPLY.len() + NONCE_BYTES + body.len());
    answer.extend_from_slice(MAGIC_REPLY);
    answer.extend_from_slice(&nonce);
    answer.extend_from_slice(body);
    Some(answer)
}

fn parse_request(packet: &[u8]) -> Option<[u8; NONCE_BYTES]> {
    let nonce = packet.strip_prefix(MAGIC_REQUEST)?;
    nonce.try_into().ok()
}

fn parse_reply(packet: &[u8], nonce: &[u8; NONCE_BYTES]) -> Option<ProbeReply> {
    let rest = packet.strip_prefix(MAGIC_REPLY)?;
    let body = rest.strip_prefix(nonce.as_slice())?;
    serde_json::from_slice(body).ok()
}

/// Asks the node at gossip address `seed` where its cluster listener is.
pub async fn probe(seed: &str, timeout: Duration) -> Result<ProbeReply, String> {
    let address: SocketAddr = tokio::net::lookup_host(seed)
        .await
        .map_err(|error| format!("cannot resolve {seed}: {error}"))?
        .next()
        .ok_or_else(|| format!("{seed} resolves to no address"))?;
    let bind: SocketAddr = if address.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(bind)
        .await
        .map_err(|error| format!("cannot open a UDP socket: {error}"))?;
    let nonce: [u8; NONCE_BYTES] = rand::random::<u64>().to_be_bytes();
    let mut request = MAGIC_REQUEST.to_vec();
    request.extend_from_slice(&nonce);
    let mut buffer = [0u8; PACKET_BYTES_MAX];
    let deadline = tokio::time::Instant::now() + timeout;
    // Resend a few times: UDP may lose the first packet.
    let resend = (timeout / 4).max(Duration::from_millis(50));
    loop {
        socket
            .send_to(&request, address)
            .await
            .map_err(|error| format!("cannot send to {seed}: {error}"))?;
        let wait = resend.min(deadline.saturating_duration_since(tokio::time::Instant::now()));
        let received = tokio::time::timeout(wait, async {
            loop {
                let (length, from) = socket.recv_from(&mut buffer).await?;
                if from == address {
                    if let Some(reply) = parse_reply(&buffer[..length], &nonce) {
                        return Ok::<_, std::io::Error>(reply);
                    }
                }
            }
        })
        .await;
        match received {
            Ok(Ok(reply)) => return Ok(reply),
            Ok(Err(error)) => return Err(format!("probe of {seed} failed: {error}")),
            Err(_) if tokio::time::Instant::now() >= deadline => {
                return Err(format!("{seed} did not answer within {timeout:?}"))
            }
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves a probe gets the seed's answer, and that garbage sent to the seed is
    /// ignored (it keeps answering).
    #[tokio::test]
    async fn probe_finds_the_cluster_listener() {
        let socket = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let seed = socket.local_addr().unwrap().to_string();
        let reply = ProbeReply {
            node_id: NodeId(4),
            cluster: "127.0.0.1:7072".into(),
        };
        let server = tokio::spawn(serve(Arc::clone(&socket), reply.clone()));
        let garbage = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        garbage
            .send_to(b"MIMORI-PROBE-1short", &seed)
            .await
            .unwrap();
        garbage.send_to(&[0xff; 600], &seed).await.unwrap();
        assert_eq!(probe(&seed, Duration::from_secs(2)).await.unwrap(), reply);
        server.abort();
        let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let error = probe(
            &silent.local_addr().unwrap().to_string(),
            Duration::from_millis(200),
        )
        .await
        .unwrap_err();
        assert!(error.contains("did not answer"), "{error}");
    }
}
