//! Address arithmetic for pod IPs: a node's podCIDR and the addresses in it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// An IPv4 or IPv6 network, e.g. 10.42.3.0/24.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    /// The network address (host bits cleared).
    pub base: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    /// Parses "a.b.c.d/n" or an IPv6 equivalent; host bits are cleared.
    pub fn parse(s: &str) -> Option<Cidr> {
        let (addr, prefix) = s.trim().split_once('/')?;
        let addr: IpAddr = addr.parse().ok()?;
        let prefix: u8 = prefix.parse().ok()?;
        if prefix > bits(addr) {
            return None;
        }
        let masked = to_u128(addr) & mask(bits(addr), prefix);
        Some(Cidr {
            base: from_u128(addr, masked),
            prefix,
        })
    }

    /// How many addresses the network holds (saturating at u128::MAX).
    pub fn size(&self) -> u128 {
        let host_bits = u32::from(bits(self.base) - self.prefix);
        1u128.checked_shl(host_bits).unwrap_or(u128::MAX)
    }

    /// The address `offset` places after the network address, if inside.
    pub fn nth(&self, offset: u128) -> Option<IpAddr> {
        if offset >= self.size() {
            return None;
        }
        Some(from_u128(self.base, to_u128(self.base) + offset))
    }

    /// Where `ip` sits in the network, if it is inside.
    pub fn offset_of(&self, ip: IpAddr) -> Option<u128> {
        if ip.is_ipv4() != self.base.is_ipv4() {
            return None;
        }
        let (ip, base) = (to_u128(ip), to_u128(self.base));
        let off = ip.checked_sub(base)?;
        (off < self.size()).then_some(off)
    }

    /// Offsets a pod may get: host-local IPAM skips the network address and
    /// the bridge's gateway (.1), and on IPv4 the broadcast address. Capped
    /// so per-node bookkeeping stays small on huge IPv6 ranges.
    pub fn pod_offsets(&self) -> std::ops::Range<u32> {
        let size = self.size().min(1 << 20) as u32;
        let end = if self.base.is_ipv4() {
            size.saturating_sub(1)
        } else {
            size
        };
        2..end.max(2)
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.base, self.prefix)
    }
}

fn bits(addr: IpAddr) -> u8 {
    if addr.is_ipv4() {
        32
    } else {
        128
    }
}

fn mask(bits: u8, prefix: u8) -> u128 {
    let all = if bits == 32 {
        u128::from(u32::MAX)
    } else {
        u128::MAX
    };
    let host = u32::from(bits - prefix);
    let host_mask = 1u128.checked_shl(host).map(|v| v - 1).unwrap_or(u128::MAX);
    all & !host_mask
}

fn to_u128(addr: IpAddr) -> u128 {
    match addr {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

fn from_u128(like: IpAddr, v: u128) -> IpAddr {
    match like {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from(v as u32)),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(v)),
    }
}

/// The stand-in podCIDR of node number `index` when nodeipam assigned none:
/// a /24 from 100.64.0.0/10 (shared address space, never routed here).
pub fn fallback_pod_cidr(index: u32) -> Cidr {
    let block = index % (1 << 14);
    Cidr {
        base: IpAddr::V4(Ipv4Addr::from(
            u32::from(Ipv4Addr::new(100, 64, 0, 0)) + block * 256,
        )),
        prefix: 24,
    }
}

/// The fake InternalIP of node number `index`: 10.244.0.1, 10.244.0.2, …
/// Nothing routes to it; it only fills status.addresses and hostIP.
pub fn node_ip(index: u32) -> Ipv4Addr {
    let base = u32::from(Ipv4Addr::new(10, 244, 0, 0));
    Ipv4Addr::from(base.wrapping_add(index.wrapping_add(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_clears_host_bits() {
        let c = Cidr::parse("10.42.3.7/24").unwrap();
        assert_eq!(c.to_string(), "10.42.3.0/24");
        assert_eq!(c.size(), 256);
        assert!(Cidr::parse("10.42.0.0/33").is_none());
        assert!(Cidr::parse("10.42.0.0").is_none());
        let v6 = Cidr::parse("fd00:10:244:1::5/64").unwrap();
        assert_eq!(v6.to_string(), "fd00:10:244:1::/64");
    }

    #[test]
    fn pod_addresses_skip_network_gateway_and_broadcast() {
        let c = Cidr::parse("10.42.1.0/24").unwrap();
        let r = c.pod_offsets();
        assert_eq!(c.nth(u128::from(r.start)).unwrap().to_string(), "10.42.1.2");
        assert_eq!(
            c.nth(u128::from(r.end - 1)).unwrap().to_string(),
            "10.42.1.254"
        );
        assert_eq!(c.offset_of("10.42.1.9".parse().unwrap()), Some(9));
        assert_eq!(c.offset_of("10.42.2.9".parse().unwrap()), None);
    }

    #[test]
    fn fallback_and_node_addresses_are_distinct_per_node() {
        assert_eq!(fallback_pod_cidr(0).to_string(), "100.64.0.0/24");
        assert_eq!(fallback_pod_cidr(257).to_string(), "100.65.1.0/24");
        assert_eq!(node_ip(0).to_string(), "10.244.0.1");
        assert_eq!(node_ip(4999).to_string(), "10.244.19.136");
    }
}
