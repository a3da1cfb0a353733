//! Ports for local clusters whose nodes stop and start again on the same ports (the
//! chaos runner, the process tests): taken from outside the kernel's ephemeral
//! range, which it never hands to outgoing connections, so a port a stopped node
//! will listen on again cannot be taken meanwhile by some client's socket.

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::sync::Mutex;

/// Why no ports could be reserved.
#[derive(Debug, thiserror::Error)]
pub enum PortError {
    #[error("cannot parse the ephemeral port range {0:?}")]
    Range(String),
    #[error("no ports outside the ephemeral range {low}-{high}")]
    NoWindow { low: u32, high: u32 },
    #[error("no {count} free consecutive ports in {low}..{high}")]
    Exhausted { count: u16, low: u16, high: u16 },
}

/// The ports outside the ephemeral range: `[low, high)`.
pub fn stable_port_window() -> Result<(u16, u16), PortError> {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .unwrap_or_else(|_| "32768 60999".to_string());
    let mut bounds = range.split_whitespace().map(str::parse::<u32>);
    let (Some(Ok(low)), Some(Ok(high))) = (bounds.next(), bounds.next()) else {
        return Err(PortError::Range(range));
    };
    if low >= 21_000 {
        Ok((20_000, low.min(65_535) as u16))
    } else if high <= 64_000 {
        Ok((high as u16 + 1, 65_535))
    } else {
        Err(PortError::NoWindow { low, high })
    }
}

/// Reserves `count` consecutive ports, each free right now for both TCP and UDP on
/// 127.0.0.1, and returns the first. Ports are handed out once per process (the
/// tests of one binary, or the clusters of one runner, share the cursor); the start
/// is spread by process id, so processes running side by side rarely meet.
pub fn reserve_ports(count: u16) -> Result<u16, PortError> {
    static CURSOR: Mutex<Option<u16>> = Mutex::new(None);
    let (low, high) = stable_port_window()?;
    let span = high - low;
    if count == 0 || count >= span {
        return Err(PortError::Exhausted { count, low, high });
    }
    let mut cursor = CURSOR
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let mut next = cursor.unwrap_or(low + (std::process::id() % u32::from(span)) as u16);
    for _ in 0..span / count {
        if u32::from(next) + u32::from(count) > u32::from(high) || next < low {
            next = low;
        }
        let base = next;
        next += count;
        *cursor = Some(next);
        let free = (base..base + count).all(|port| {
            let address = SocketAddr::from(([127, 0, 0, 1], port));
            TcpListener::bind(address).is_ok() && UdpSocket::bind(address).is_ok()
        });
        if free {
            return Ok(base);
        }
    }
    Err(PortError::Exhausted { count, low, high })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves reserved ranges are free, outside the ephemeral range, and never
    /// handed out twice in one process.
    #[test]
    fn reserved_ports_are_free_and_distinct() {
        let (low, high) = stable_port_window().unwrap();
        let first = reserve_ports(4).unwrap();
        let second = reserve_ports(4).unwrap();
        for base in [first, second] {
            assert!(base >= low && u32::from(base) + 4 <= u32::from(high));
        }
        assert!(first.abs_diff(second) >= 4, "{first} and {second} overlap");
        assert!(reserve_ports(0).is_err());
    }
}
