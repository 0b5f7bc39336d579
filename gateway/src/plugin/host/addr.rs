//! Which destination addresses a plugin's outbound HTTP request may connect to.
//!
//! Plugins are untrusted code; `outbound-http` connects on their behalf, from inside the
//! operator's network. Without a check on the *address* (not only the host name in the policy),
//! a plugin could reach the gateway itself (`127.0.0.1`, or a public address bound to the
//! machine's NIC), the internal network (`10.0.0.0/8`, `fd00::/8`, ...), or the cloud metadata
//! service (`169.254.169.254`, `fd00:ec2::254`) — server-side request forgery. A host name is
//! no protection: DNS answers are chosen by whoever controls the zone.
//!
//! # The rule: only global unicast, deny by default
//!
//! [`classify`] answers [`Class::Global`] only for an address that is in no special-purpose
//! block at all. Everything else is named (a [`Range`] or an [`Embedding`]) so that the
//! refusal can say why. Sources:
//!
//! - IANA IPv4 Special-Purpose Address Registry
//!   (<https://www.iana.org/assignments/iana-ipv4-special-registry/>, RFC 6890, RFC 8190):
//!   **every** entry is denied, including the ones the registry flags "Globally Reachable"
//!   (the PCP and TURN anycast addresses 192.0.0.9 and 192.0.0.10, AS112 192.31.196.0/24 and
//!   192.175.48.0/24, AMT 192.52.193.0/24). None of them is a place an HTTP API lives, and a
//!   deny list that follows the registry line by line is easier to audit than one that picks.
//!   Multicast 224.0.0.0/4 (IPv4 Multicast Address Space Registry, RFC 5771) is denied too.
//! - IANA IPv6 Special-Purpose Address Registry
//!   (<https://www.iana.org/assignments/iana-ipv6-special-registry/>): likewise every entry,
//!   including the "Globally Reachable" ones (64:ff9b::/96, the anycast addresses in
//!   2001:1::/48, AMT 2001:3::/32, AS112 2001:4:112::/48 and 2620:4f:8000::/48, ORCHIDv2
//!   2001:20::/28, drone remote ID 2001:30::/28). The whole of 2001::/23 (IETF Protocol
//!   Assignments) is denied, not only its registered sub-blocks.
//! - IANA IPv6 Address Space (<https://www.iana.org/assignments/ipv6-address-space/>): only
//!   2000::/3 is allocated for global unicast, so anything outside it is denied (named
//!   "reserved" unless a more specific block applies: unique local fc00::/7, link-local
//!   fe80::/10, the deprecated site-local fec0::/10 of RFC 3879, multicast ff00::/8, the
//!   discard-only 100::/64 of RFC 6666, SRv6 SIDs 5f00::/16 of RFC 9602, ...).
//!
//! # IPv6 addresses that carry an IPv4 address
//!
//! Some IPv6 forms are a way of addressing an IPv4 host: IPv4-mapped `::ffff:a.b.c.d`
//! (RFC 4291 §2.5.5.2), IPv4-compatible `::a.b.c.d` (deprecated, RFC 4291 §2.5.5.1),
//! IPv4-translated `::ffff:0:a.b.c.d` (RFC 2765 §2.1), NAT64 `64:ff9b::a.b.c.d` (RFC 6052)
//! and its local-use prefix `64:ff9b:1::/48` (RFC 8215), 6to4 `2002:aabb:ccdd::/48`
//! (RFC 3056) and Teredo `2001:0:ssss:ssss:…:cccc:cccc` (RFC 4380, server address in clear,
//! client address bit-inverted). [`classify`] decodes these *first* and reports the embedded
//! IPv4 address with its own classification, so a log line says "nat64 carrying 10.0.0.1,
//! private" rather than just "nat64".
//!
//! Every embedding form is denied **whatever it carries**, a public IPv4 address included:
//! none of these blocks is global unicast in the registries (64:ff9b::/96 is flagged globally
//! reachable, but it reaches the IPv4 host through a translator the operator runs, i.e.
//! through the local network), `::ffff:a.b.c.d` on a dual-stack socket *is* a connection to
//! `a.b.c.d`, and decoding rules for the rarer forms are where filters get bypassed. A
//! plugin that wants a public IPv4 host uses its IPv4 address. Known consequence: on an
//! IPv6-only host that reaches IPv4 through DNS64/NAT64, names that only have IPv4 addresses
//! resolve into 64:ff9b::/96 and are refused. If such a deployment matters, the place to
//! relax is a NAT64 answer whose [`Embedding::Nat64`] address is global, decided explicitly,
//! not here. ISATAP interface identifiers (`…:5efe:a.b.c.d`) are not decoded: they sit in
//! the interface-identifier half of an address routed by its prefix, which is classified.
//!
//! # The host's own addresses and the private opt-in
//!
//! [`AddressPolicy::check`] adds what an address registry cannot know:
//!
//! - **The host's own addresses are always denied**, global ones included: a public address
//!   on the machine's NIC reaches the gateway's own listeners (and anything else bound to
//!   `0.0.0.0`) as surely as 127.0.0.1 does. They are enumerated at start-up with
//!   `getifaddrs(3)` ([`local_addresses`]).
//! - **Cloud metadata endpoints are always denied** ([`METADATA_ENDPOINTS`]): two of them
//!   (`fd00:ec2::254`, `100.100.100.200`) sit in ranges the private opt-in allows. The list
//!   cannot be complete, which is one reason link-local stays denied.
//! - **`allow_private`** is the policy's explicit opt-in, meant for a pattern naming an IP
//!   literal on the operator's own network. It permits exactly the private-network blocks:
//!   10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16 (RFC 1918), 100.64.0.0/10 (shared address
//!   space, RFC 6598) and fc00::/7 (unique local, RFC 4193). Nothing else: loopback,
//!   unspecified/"this network", link-local (home of the metadata service), multicast,
//!   broadcast, reserved, documentation, benchmarking, the other registry blocks, every
//!   IPv6 form carrying an IPv4 address (write the IPv4 literal instead), the host's own
//!   addresses and the metadata endpoints all stay denied.
//! - [`AddressPolicy::with_loopback_allowed`] is an *operator* switch (never derived from a
//!   tenant's policy) for test harnesses and development, where the upstream necessarily
//!   runs on the same machine: loopback then counts as a private block (so it still needs
//!   `allow_private`) and is exempt from the own-address rule. Nothing else changes.
//!
//! Limits of the own-address rule: addresses are read once, so one added later (DHCP, a new
//! container bridge, IPv6 temporary addresses) is not known until the set is rebuilt; a
//! public address that reaches the machine through NAT (a cloud "elastic" address) is not on
//! any interface, so pass it to [`AddressPolicy::new`] alongside [`local_addresses`]; and
//! addresses answered through a local route (Linux "AnyIP", `ip route add local …`) are not
//! listed by `getifaddrs`.

use std::collections::HashSet;
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A special-purpose (non-global-unicast) address block, with the name used in errors and logs.
///
/// One variant per registry block, so that [`Range::block`] can print the exact prefix;
/// several blocks share a [`Range::name`] (the three RFC 1918 blocks are all "private").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Range {
    // ---- IPv4 (IANA IPv4 Special-Purpose Address Registry unless noted) ----
    /// 0.0.0.0/32, "this host on this network" (RFC 1122 §3.2.1.3). On Linux, connecting to it
    /// reaches the local host.
    V4Unspecified,
    /// 0.0.0.0/8, "this network" (RFC 791).
    V4ThisNetwork,
    /// 10.0.0.0/8, private-use (RFC 1918).
    V4Private10,
    /// 100.64.0.0/10, shared address space / carrier-grade NAT (RFC 6598).
    V4SharedAddressSpace,
    /// 127.0.0.0/8, loopback (RFC 1122).
    V4Loopback,
    /// 169.254.0.0/16, link-local (RFC 3927); the cloud metadata service lives here.
    V4LinkLocal,
    /// 172.16.0.0/12, private-use (RFC 1918).
    V4Private172,
    /// 192.0.0.0/29, IPv4 service continuity prefix (DS-Lite, RFC 7335).
    V4ServiceContinuity,
    /// 192.0.0.8/32, IPv4 dummy address (RFC 7600).
    V4Dummy,
    /// 192.0.0.9/32, Port Control Protocol anycast (RFC 7723).
    V4PcpAnycast,
    /// 192.0.0.10/32, TURN anycast (RFC 8155).
    V4TurnAnycast,
    /// 192.0.0.170/32 and 192.0.0.171/32, NAT64/DNS64 discovery (RFC 7050, RFC 8880).
    V4Nat64Discovery,
    /// The rest of 192.0.0.0/24, IETF protocol assignments (RFC 6890).
    V4IetfProtocolAssignments,
    /// 192.0.2.0/24, documentation TEST-NET-1 (RFC 5737).
    V4Documentation1,
    /// 192.31.196.0/24, AS112-v4 (RFC 7535).
    V4As112,
    /// 192.52.193.0/24, AMT (RFC 7450).
    V4Amt,
    /// 192.88.99.2/32, 6a44 relay anycast (RFC 6751).
    V4SixA44RelayAnycast,
    /// The rest of 192.88.99.0/24, deprecated 6to4 relay anycast (RFC 7526).
    V4SixToFourRelayAnycast,
    /// 192.168.0.0/16, private-use (RFC 1918).
    V4Private192,
    /// 192.175.48.0/24, direct delegation AS112 service (RFC 7534).
    V4As112DirectDelegation,
    /// 198.18.0.0/15, benchmarking (RFC 2544).
    V4Benchmarking,
    /// 198.51.100.0/24, documentation TEST-NET-2 (RFC 5737).
    V4Documentation2,
    /// 203.0.113.0/24, documentation TEST-NET-3 (RFC 5737).
    V4Documentation3,
    /// 224.0.0.0/4, multicast (RFC 5771; IPv4 Multicast Address Space Registry).
    V4Multicast,
    /// 240.0.0.0/4 except the broadcast address, reserved (RFC 1112 §4).
    V4Reserved,
    /// 255.255.255.255/32, limited broadcast (RFC 919, RFC 8190).
    V4Broadcast,

    // ---- IPv6 (IANA IPv6 Special-Purpose Address Registry unless noted) ----
    /// ::/128, unspecified (RFC 4291).
    V6Unspecified,
    /// ::1/128, loopback (RFC 4291).
    V6Loopback,
    /// ::ffff:0:0/96, IPv4-mapped (RFC 4291).
    V6Ipv4Mapped,
    /// ::/96 other than :: and ::1, IPv4-compatible, deprecated (RFC 4291 §2.5.5.1).
    V6Ipv4Compatible,
    /// ::ffff:0:0:0/96, IPv4-translated (RFC 2765 §2.1; inside the IETF-reserved ::/8).
    V6Ipv4Translated,
    /// 64:ff9b::/96, IPv4/IPv6 translation well-known prefix (RFC 6052).
    V6Nat64,
    /// 64:ff9b:1::/48, IPv4/IPv6 translation local-use prefix (RFC 8215).
    V6Nat64Local,
    /// 100::/64, discard-only (RFC 6666).
    V6DiscardOnly,
    /// 100:0:0:1::/64, dummy IPv6 prefix (registry entry added 2025).
    V6Dummy,
    /// 2001::/32, Teredo (RFC 4380, RFC 8190).
    V6Teredo,
    /// 2001:1::1/128, Port Control Protocol anycast (RFC 7723).
    V6PcpAnycast,
    /// 2001:1::2/128, TURN anycast (RFC 8155).
    V6TurnAnycast,
    /// 2001:1::3/128, DNS-SD service registration protocol anycast (RFC 9665).
    V6DnsSdSrpAnycast,
    /// 2001:2::/48, benchmarking (RFC 5180).
    V6Benchmarking,
    /// 2001:3::/32, AMT (RFC 7450).
    V6Amt,
    /// 2001:4:112::/48, AS112-v6 (RFC 7535).
    V6As112,
    /// 2001:10::/28, ORCHID, deprecated (RFC 4843).
    V6Orchid,
    /// 2001:20::/28, ORCHIDv2 (RFC 7343).
    V6OrchidV2,
    /// 2001:30::/28, drone remote ID protocol entity tags (RFC 9374).
    V6DroneRemoteId,
    /// The rest of 2001::/23, IETF protocol assignments (RFC 2928).
    V6IetfProtocolAssignments,
    /// 2001:db8::/32, documentation (RFC 3849).
    V6Documentation,
    /// 2002::/16, 6to4 (RFC 3056).
    V6SixToFour,
    /// 2620:4f:8000::/48, direct delegation AS112 service (RFC 7534).
    V6As112DirectDelegation,
    /// 3fff::/20, documentation (RFC 9637).
    V6Documentation2,
    /// 5f00::/16, segment routing (SRv6) SIDs (RFC 9602).
    V6SegmentRouting,
    /// fc00::/7, unique local (RFC 4193).
    V6UniqueLocal,
    /// fe80::/10, link-local unicast (RFC 4291).
    V6LinkLocal,
    /// fec0::/10, site-local, deprecated (RFC 3879; IPv6 Address Space registry).
    V6SiteLocal,
    /// ff00::/8, multicast (RFC 4291).
    V6Multicast,
    /// Anything else outside 2000::/3: reserved by the IETF (IPv6 Address Space registry).
    V6Reserved,
}

impl Range {
    /// A short name for errors and logs ("loopback", "private", "nat64", ...).
    pub fn name(self) -> &'static str {
        use Range::*;
        match self {
            V4Unspecified | V6Unspecified => "unspecified",
            V4ThisNetwork => "this-network",
            V4Private10 | V4Private172 | V4Private192 => "private",
            V4SharedAddressSpace => "shared-address-space",
            V4Loopback | V6Loopback => "loopback",
            V4LinkLocal | V6LinkLocal => "link-local",
            V4ServiceContinuity => "ipv4-service-continuity",
            V4Dummy | V6Dummy => "dummy",
            V4PcpAnycast | V6PcpAnycast => "pcp-anycast",
            V4TurnAnycast | V6TurnAnycast => "turn-anycast",
            V4Nat64Discovery => "nat64-discovery",
            V4IetfProtocolAssignments | V6IetfProtocolAssignments => "ietf-protocol-assignments",
            V4Documentation1 | V4Documentation2 | V4Documentation3 | V6Documentation | V6Documentation2 => {
                "documentation"
            }
            V4As112 | V4As112DirectDelegation | V6As112 | V6As112DirectDelegation => "as112",
            V4Amt | V6Amt => "amt",
            V4SixA44RelayAnycast => "6a44-relay-anycast",
            V4SixToFourRelayAnycast => "6to4-relay-anycast",
            V4Benchmarking | V6Benchmarking => "benchmarking",
            V4Multicast | V6Multicast => "multicast",
            V4Reserved | V6Reserved => "reserved",
            V4Broadcast => "broadcast",
            V6Ipv4Mapped => "ipv4-mapped",
            V6Ipv4Compatible => "ipv4-compatible",
            V6Ipv4Translated => "ipv4-translated",
            V6Nat64 => "nat64",
            V6Nat64Local => "nat64-local",
            V6DiscardOnly => "discard-only",
            V6Teredo => "teredo",
            V6DnsSdSrpAnycast => "dns-sd-srp-anycast",
            V6Orchid => "orchid",
            V6OrchidV2 => "orchid-v2",
            V6DroneRemoteId => "drone-remote-id",
            V6SixToFour => "6to4",
            V6SegmentRouting => "srv6-sid",
            V6UniqueLocal => "unique-local",
            V6SiteLocal => "site-local",
        }
    }

    /// The block, as a prefix (for the rest-of-a-block variants, the enclosing block).
    pub fn block(self) -> &'static str {
        use Range::*;
        match self {
            V4Unspecified => "0.0.0.0/32",
            V4ThisNetwork => "0.0.0.0/8",
            V4Private10 => "10.0.0.0/8",
            V4SharedAddressSpace => "100.64.0.0/10",
            V4Loopback => "127.0.0.0/8",
            V4LinkLocal => "169.254.0.0/16",
            V4Private172 => "172.16.0.0/12",
            V4ServiceContinuity => "192.0.0.0/29",
            V4Dummy => "192.0.0.8/32",
            V4PcpAnycast => "192.0.0.9/32",
            V4TurnAnycast => "192.0.0.10/32",
            V4Nat64Discovery => "192.0.0.170/31",
            V4IetfProtocolAssignments => "192.0.0.0/24",
            V4Documentation1 => "192.0.2.0/24",
            V4As112 => "192.31.196.0/24",
            V4Amt => "192.52.193.0/24",
            V4SixA44RelayAnycast => "192.88.99.2/32",
            V4SixToFourRelayAnycast => "192.88.99.0/24",
            V4Private192 => "192.168.0.0/16",
            V4As112DirectDelegation => "192.175.48.0/24",
            V4Benchmarking => "198.18.0.0/15",
            V4Documentation2 => "198.51.100.0/24",
            V4Documentation3 => "203.0.113.0/24",
            V4Multicast => "224.0.0.0/4",
            V4Reserved => "240.0.0.0/4",
            V4Broadcast => "255.255.255.255/32",
            V6Unspecified => "::/128",
            V6Loopback => "::1/128",
            V6Ipv4Mapped => "::ffff:0:0/96",
            V6Ipv4Compatible => "::/96",
            V6Ipv4Translated => "::ffff:0:0:0/96",
            V6Nat64 => "64:ff9b::/96",
            V6Nat64Local => "64:ff9b:1::/48",
            V6DiscardOnly => "100::/64",
            V6Dummy => "100:0:0:1::/64",
            V6Teredo => "2001::/32",
            V6PcpAnycast => "2001:1::1/128",
            V6TurnAnycast => "2001:1::2/128",
            V6DnsSdSrpAnycast => "2001:1::3/128",
            V6Benchmarking => "2001:2::/48",
            V6Amt => "2001:3::/32",
            V6As112 => "2001:4:112::/48",
            V6Orchid => "2001:10::/28",
            V6OrchidV2 => "2001:20::/28",
            V6DroneRemoteId => "2001:30::/28",
            V6IetfProtocolAssignments => "2001::/23",
            V6Documentation => "2001:db8::/32",
            V6SixToFour => "2002::/16",
            V6As112DirectDelegation => "2620:4f:8000::/48",
            V6Documentation2 => "3fff::/20",
            V6SegmentRouting => "5f00::/16",
            V6UniqueLocal => "fc00::/7",
            V6LinkLocal => "fe80::/10",
            V6SiteLocal => "fec0::/10",
            V6Multicast => "ff00::/8",
            V6Reserved => "outside 2000::/3",
        }
    }

    /// The blocks a policy's `allow_private` opt-in permits: the private-network ranges
    /// (RFC 1918, RFC 6598 shared address space, RFC 4193 unique local). See the module docs.
    pub fn is_private_network(self) -> bool {
        matches!(
            self,
            Range::V4Private10
                | Range::V4Private172
                | Range::V4Private192
                | Range::V4SharedAddressSpace
                | Range::V6UniqueLocal
        )
    }

    pub fn is_loopback(self) -> bool {
        matches!(self, Range::V4Loopback | Range::V6Loopback)
    }
}

impl fmt::Display for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name(), self.block())
    }
}

/// An IPv6 address form that carries an IPv4 address, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Embedding {
    /// `::ffff:a.b.c.d` (RFC 4291 §2.5.5.2).
    Mapped(Ipv4Addr),
    /// `::a.b.c.d`, deprecated (RFC 4291 §2.5.5.1). Never `::` or `::1`.
    Compatible(Ipv4Addr),
    /// `::ffff:0:a.b.c.d` (RFC 2765 §2.1).
    Translated(Ipv4Addr),
    /// `64:ff9b::a.b.c.d`, the NAT64 well-known prefix (RFC 6052 §2.1).
    Nat64(Ipv4Addr),
    /// `64:ff9b:1::/48` (RFC 8215). The operator picks an RFC 6052 prefix length inside the
    /// /48; this reads the last 32 bits (the /96 format). The form is denied whatever it
    /// carries, so a misreading only affects the message.
    Nat64Local(Ipv4Addr),
    /// `2002:aabb:ccdd::/48`, 6to4 (RFC 3056 §2): the site's IPv4 address in bits 16..48.
    SixToFour(Ipv4Addr),
    /// `2001:0:ssss:ssss:flags:port:cccc:cccc`, Teredo (RFC 4380 §4): the server's IPv4 in
    /// clear, the client's (where the traffic is delivered) bit-inverted in the last 32 bits.
    Teredo { server: Ipv4Addr, client: Ipv4Addr },
}

impl Embedding {
    /// Decodes `ip` if it is one of the forms that carry an IPv4 address.
    pub fn decode(ip: Ipv6Addr) -> Option<Embedding> {
        let s = ip.segments();
        let o = ip.octets();
        let last = Ipv4Addr::new(o[12], o[13], o[14], o[15]);
        match s {
            [0, 0, 0, 0, 0, 0xffff, _, _] => Some(Embedding::Mapped(last)),
            [0, 0, 0, 0, 0xffff, 0, _, _] => Some(Embedding::Translated(last)),
            // :: and ::1 are the unspecified and loopback addresses, not IPv4-compatible.
            [0, 0, 0, 0, 0, 0, 0, 0 | 1] => None,
            [0, 0, 0, 0, 0, 0, _, _] => Some(Embedding::Compatible(last)),
            [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(Embedding::Nat64(last)),
            [0x64, 0xff9b, 1, _, _, _, _, _] => Some(Embedding::Nat64Local(last)),
            [0x2002, _, _, _, _, _, _, _] => Some(Embedding::SixToFour(Ipv4Addr::new(o[2], o[3], o[4], o[5]))),
            [0x2001, 0, _, _, _, _, _, _] => Some(Embedding::Teredo {
                server: Ipv4Addr::new(o[4], o[5], o[6], o[7]),
                client: Ipv4Addr::new(!o[12], !o[13], !o[14], !o[15]),
            }),
            _ => None,
        }
    }

    /// The block the form belongs to.
    pub fn range(&self) -> Range {
        match self {
            Embedding::Mapped(_) => Range::V6Ipv4Mapped,
            Embedding::Compatible(_) => Range::V6Ipv4Compatible,
            Embedding::Translated(_) => Range::V6Ipv4Translated,
            Embedding::Nat64(_) => Range::V6Nat64,
            Embedding::Nat64Local(_) => Range::V6Nat64Local,
            Embedding::SixToFour(_) => Range::V6SixToFour,
            Embedding::Teredo { .. } => Range::V6Teredo,
        }
    }

    /// The carried IPv4 addresses: one, or for Teredo the client's then the server's.
    pub fn ipv4(&self) -> Vec<Ipv4Addr> {
        match *self {
            Embedding::Mapped(a)
            | Embedding::Compatible(a)
            | Embedding::Translated(a)
            | Embedding::Nat64(a)
            | Embedding::Nat64Local(a)
            | Embedding::SixToFour(a) => vec![a],
            Embedding::Teredo { server, client } => vec![client, server],
        }
    }
}

/// What [`classify`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    /// Global unicast: in no special-purpose block (and, for IPv6, inside 2000::/3).
    Global,
    /// In a special-purpose block.
    Special(Range),
    /// An IPv6 form carrying an IPv4 address; never global (see the module docs).
    /// `inner` is the first carried IPv4 address that is not global, with its block, if any.
    Embedded { via: Embedding, inner: Option<(Ipv4Addr, Range)> },
}

impl Class {
    pub fn is_global(&self) -> bool {
        matches!(self, Class::Global)
    }

    /// "global", or the name of the block (for an embedding, of the form: "nat64", ...).
    pub fn name(&self) -> &'static str {
        match self {
            Class::Global => "global",
            Class::Special(r) => r.name(),
            Class::Embedded { via, .. } => via.range().name(),
        }
    }

    /// The block, if the address is in one (for an embedding, the form's block).
    pub fn range(&self) -> Option<Range> {
        match self {
            Class::Global => None,
            Class::Special(r) => Some(*r),
            Class::Embedded { via, .. } => Some(via.range()),
        }
    }
}

impl fmt::Display for Class {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Class::Global => f.write_str("global"),
            Class::Special(r) => r.fmt(f),
            Class::Embedded { via, inner } => {
                write!(f, "{} carrying ", via.range())?;
                match (via, inner) {
                    (_, Some((v4, r))) => write!(f, "{v4}, {r}"),
                    (Embedding::Teredo { server, client }, None) => write!(f, "{client} (server {server})"),
                    (_, None) => write!(f, "{}", via.ipv4()[0]),
                }
            }
        }
    }
}

/// Whether `ip` is global unicast and, if not, which block it is in. IPv6 forms carrying an
/// IPv4 address are decoded first and the carried address classified too.
pub fn classify(ip: IpAddr) -> Class {
    match ip {
        IpAddr::V4(a) => classify_v4(a).map_or(Class::Global, Class::Special),
        IpAddr::V6(a) => classify_v6(a),
    }
}

fn classify_v6(a: Ipv6Addr) -> Class {
    if let Some(via) = Embedding::decode(a) {
        let inner = via.ipv4().into_iter().find_map(|v4| classify_v4(v4).map(|r| (v4, r)));
        return Class::Embedded { via, inner };
    }
    special_v6(a).map_or(Class::Global, Class::Special)
}

/// The IPv4 special-purpose block `a` is in, most specific first; `None` = global unicast.
pub fn classify_v4(a: Ipv4Addr) -> Option<Range> {
    use Range::*;
    let [o0, o1, o2, o3] = a.octets();
    Some(match (o0, o1, o2, o3) {
        (0, 0, 0, 0) => V4Unspecified,
        (0, ..) => V4ThisNetwork,
        (10, ..) => V4Private10,
        (100, 64..=127, ..) => V4SharedAddressSpace,
        (127, ..) => V4Loopback,
        (169, 254, ..) => V4LinkLocal,
        (172, 16..=31, ..) => V4Private172,
        (192, 0, 0, 0..=7) => V4ServiceContinuity,
        (192, 0, 0, 8) => V4Dummy,
        (192, 0, 0, 9) => V4PcpAnycast,
        (192, 0, 0, 10) => V4TurnAnycast,
        (192, 0, 0, 170 | 171) => V4Nat64Discovery,
        (192, 0, 0, _) => V4IetfProtocolAssignments,
        (192, 0, 2, _) => V4Documentation1,
        (192, 31, 196, _) => V4As112,
        (192, 52, 193, _) => V4Amt,
        (192, 88, 99, 2) => V4SixA44RelayAnycast,
        (192, 88, 99, _) => V4SixToFourRelayAnycast,
        (192, 168, ..) => V4Private192,
        (192, 175, 48, _) => V4As112DirectDelegation,
        (198, 18 | 19, ..) => V4Benchmarking,
        (198, 51, 100, _) => V4Documentation2,
        (203, 0, 113, _) => V4Documentation3,
        (224..=239, ..) => V4Multicast,
        (255, 255, 255, 255) => V4Broadcast,
        (240..=255, ..) => V4Reserved,
        _ => return None,
    })
}

/// The IPv6 block `a` is in, ignoring embeddings (see [`Embedding::decode`], which
/// [`classify`] tries first); `None` = global unicast.
fn special_v6(a: Ipv6Addr) -> Option<Range> {
    use Range::*;
    let s = a.segments();
    Some(match s {
        [0, 0, 0, 0, 0, 0, 0, 0] => V6Unspecified,
        [0, 0, 0, 0, 0, 0, 0, 1] => V6Loopback,
        [0, 0, 0, 0, 0, 0xffff, _, _] => V6Ipv4Mapped,
        [0, 0, 0, 0, 0xffff, 0, _, _] => V6Ipv4Translated,
        [0, 0, 0, 0, 0, 0, _, _] => V6Ipv4Compatible,
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => V6Nat64,
        [0x64, 0xff9b, 1, ..] => V6Nat64Local,
        [0x100, 0, 0, 0, ..] => V6DiscardOnly,
        [0x100, 0, 0, 1, ..] => V6Dummy,
        // 2001::/23: second segment 0x0000..=0x01ff.
        [0x2001, 0, ..] => V6Teredo,
        [0x2001, 1, 0, 0, 0, 0, 0, 1] => V6PcpAnycast,
        [0x2001, 1, 0, 0, 0, 0, 0, 2] => V6TurnAnycast,
        [0x2001, 1, 0, 0, 0, 0, 0, 3] => V6DnsSdSrpAnycast,
        [0x2001, 2, 0, ..] => V6Benchmarking,
        [0x2001, 3, ..] => V6Amt,
        [0x2001, 4, 0x112, ..] => V6As112,
        [0x2001, 0x10..=0x1f, ..] => V6Orchid,
        [0x2001, 0x20..=0x2f, ..] => V6OrchidV2,
        [0x2001, 0x30..=0x3f, ..] => V6DroneRemoteId,
        [0x2001, 0..=0x1ff, ..] => V6IetfProtocolAssignments,
        [0x2001, 0xdb8, ..] => V6Documentation,
        [0x2002, ..] => V6SixToFour,
        [0x2620, 0x4f, 0x8000, ..] => V6As112DirectDelegation,
        [0x3fff, 0..=0x0fff, ..] => V6Documentation2,
        // Global unicast is 2000::/3; everything from here on is outside it.
        [0x2000..=0x3fff, ..] => return None,
        [0x5f00, ..] => V6SegmentRouting,
        [0xfc00..=0xfdff, ..] => V6UniqueLocal,
        [0xfe80..=0xfebf, ..] => V6LinkLocal,
        [0xfec0..=0xfeff, ..] => V6SiteLocal,
        [0xff00..=0xffff, ..] => V6Multicast,
        _ => V6Reserved,
    })
}

/// Cloud instance-metadata endpoints outside link-local, denied even with `allow_private`:
/// AWS's IPv6 IMDS (`fd00:ec2::254`, unique local) and Alibaba Cloud's (`100.100.100.200`,
/// shared address space). The link-local ones (169.254.169.254 for AWS, GCP, Azure, OCI, ...;
/// 169.254.170.2 for ECS tasks) are denied as link-local already.
pub const METADATA_ENDPOINTS: [IpAddr; 2] = [
    IpAddr::V6(Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)),
    IpAddr::V4(Ipv4Addr::new(100, 100, 100, 200)),
];

/// Why [`AddressPolicy::check`] refused an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// One of the host's own interface addresses (or, for an IPv6 form carrying an IPv4
    /// address, the carried address is one).
    HostAddress,
    /// A cloud metadata endpoint ([`METADATA_ENDPOINTS`]).
    CloudMetadata,
    /// Not global unicast and not opted in.
    NotGlobal(Class),
}

/// A refused destination address; the message names the reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Denied {
    pub ip: IpAddr,
    pub reason: Reason,
}

impl Denied {
    /// A short name for the reason ("host-address", "cloud-metadata", or the block's name).
    pub fn name(&self) -> &'static str {
        match &self.reason {
            Reason::HostAddress => "host-address",
            Reason::CloudMetadata => "cloud-metadata",
            Reason::NotGlobal(c) => c.name(),
        }
    }
}

impl fmt::Display for Denied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.reason {
            Reason::HostAddress => write!(f, "{} is an address of this host", self.ip),
            Reason::CloudMetadata => write!(f, "{} is a cloud metadata endpoint", self.ip),
            Reason::NotGlobal(c) => write!(f, "{} is {c}", self.ip),
        }
    }
}

impl std::error::Error for Denied {}

/// The destination-address rule for outbound requests: global unicast only, never the host's
/// own addresses, private networks on explicit opt-in. See the module docs.
#[derive(Debug, Clone, Default)]
pub struct AddressPolicy {
    local: HashSet<IpAddr>,
    loopback_allowed: bool,
}

impl AddressPolicy {
    /// A policy that treats `local` as the host's own addresses.
    pub fn new(local: impl IntoIterator<Item = IpAddr>) -> AddressPolicy {
        AddressPolicy { local: local.into_iter().collect(), loopback_allowed: false }
    }

    /// A policy with the host's interface addresses, read now ([`local_addresses`]).
    pub fn from_host() -> io::Result<AddressPolicy> {
        Ok(AddressPolicy::new(local_addresses()?))
    }

    /// Operator-only switch for test harnesses and development, where the upstream runs on
    /// this machine: loopback (127.0.0.0/8, ::1) is then treated like a private-network block
    /// (permitted only with `allow_private`) and exempt from the own-address rule. Never set
    /// this from anything a tenant controls.
    pub fn with_loopback_allowed(mut self) -> AddressPolicy {
        self.loopback_allowed = true;
        self
    }

    /// The host addresses this policy refuses.
    pub fn local(&self) -> &HashSet<IpAddr> {
        &self.local
    }

    /// Whether a connection to `ip` is permitted. `allow_private` is the policy's explicit
    /// opt-in (for a pattern naming an IP literal) and permits only the private-network
    /// blocks ([`Range::is_private_network`]); the host's own addresses and the cloud
    /// metadata endpoints are refused regardless.
    pub fn check(&self, ip: IpAddr, allow_private: bool) -> Result<(), Denied> {
        let deny = |reason| Err(Denied { ip, reason });
        let class = classify(ip);
        let loopback_exempt = self.loopback_allowed && class.range().is_some_and(Range::is_loopback);
        if !loopback_exempt && self.is_local(ip) {
            return deny(Reason::HostAddress);
        }
        if METADATA_ENDPOINTS.contains(&ip) {
            return deny(Reason::CloudMetadata);
        }
        match class {
            Class::Global => Ok(()),
            Class::Special(r) if allow_private && (r.is_private_network() || loopback_exempt) => Ok(()),
            c => deny(Reason::NotGlobal(c)),
        }
    }

    fn is_local(&self, ip: IpAddr) -> bool {
        if self.local.contains(&ip) {
            return true;
        }
        match ip {
            IpAddr::V6(a) => Embedding::decode(a)
                .is_some_and(|e| e.ipv4().into_iter().any(|v4| self.local.contains(&IpAddr::V4(v4)))),
            IpAddr::V4(_) => false,
        }
    }
}

/// The addresses on the host's interfaces (all of them, up or down, loopback included),
/// sorted and deduplicated, from `getifaddrs(3)`.
///
/// An error, rather than an empty list, when the interfaces cannot be read: the gateway
/// should not start believing it has no addresses.
#[cfg(unix)]
pub fn local_addresses() -> io::Result<Vec<IpAddr>> {
    struct List(*mut libc::ifaddrs);
    impl Drop for List {
        fn drop(&mut self) {
            // SAFETY: the pointer came from a successful getifaddrs and is freed once.
            unsafe { libc::freeifaddrs(self.0) }
        }
    }

    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs writes a list head to `head` on success (returns 0).
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let list = List(head);
    let mut out = Vec::new();
    let mut cur = list.0;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list, which lives until `list` is dropped.
        let ifa = unsafe { &*cur };
        let sa = ifa.ifa_addr;
        if !sa.is_null() {
            // SAFETY: `ifa_addr` points to a sockaddr whose family says which struct it is;
            // the reads are unaligned-safe copies.
            let family = unsafe { std::ptr::addr_of!((*sa).sa_family).read_unaligned() } as libc::c_int;
            match family {
                libc::AF_INET => {
                    let sin = unsafe { (sa as *const libc::sockaddr_in).read_unaligned() };
                    out.push(IpAddr::V4(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr))));
                }
                libc::AF_INET6 => {
                    let sin6 = unsafe { (sa as *const libc::sockaddr_in6).read_unaligned() };
                    out.push(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)));
                }
                _ => {}
            }
        }
        cur = ifa.ifa_next;
    }
    drop(list);
    out.sort();
    out.dedup();
    Ok(out)
}

#[cfg(not(unix))]
pub fn local_addresses() -> io::Result<Vec<IpAddr>> {
    Err(io::Error::new(io::ErrorKind::Unsupported, "interface enumeration is only implemented on Unix"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use Range::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or_else(|_| panic!("bad test address {s}"))
    }

    fn v4(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[track_caller]
    fn special(s: &str, r: Range) {
        assert_eq!(classify(ip(s)), Class::Special(r), "{s}");
    }

    #[track_caller]
    fn global(s: &str) {
        assert_eq!(classify(ip(s)), Class::Global, "{s}");
    }

    const PUBLIC: &[&str] = &["8.8.8.8", "1.1.1.1", "93.184.216.34", "2606:4700::1111", "2001:4860:4860::8888"];

    #[test]
    fn public_addresses_are_global() {
        for s in PUBLIC {
            global(s);
        }
    }

    /// Every IPv4 registry block: first and last address, and its own name.
    #[test]
    fn ipv4_blocks_first_and_last() {
        let table: &[(&str, &str, Range)] = &[
            ("0.0.0.1", "0.255.255.255", V4ThisNetwork),
            ("10.0.0.0", "10.255.255.255", V4Private10),
            ("100.64.0.0", "100.127.255.255", V4SharedAddressSpace),
            ("127.0.0.0", "127.255.255.255", V4Loopback),
            ("169.254.0.0", "169.254.255.255", V4LinkLocal),
            ("172.16.0.0", "172.31.255.255", V4Private172),
            ("192.0.0.0", "192.0.0.7", V4ServiceContinuity),
            ("192.0.0.8", "192.0.0.8", V4Dummy),
            ("192.0.0.9", "192.0.0.9", V4PcpAnycast),
            ("192.0.0.10", "192.0.0.10", V4TurnAnycast),
            ("192.0.0.170", "192.0.0.171", V4Nat64Discovery),
            ("192.0.0.11", "192.0.0.255", V4IetfProtocolAssignments),
            ("192.0.2.0", "192.0.2.255", V4Documentation1),
            ("192.31.196.0", "192.31.196.255", V4As112),
            ("192.52.193.0", "192.52.193.255", V4Amt),
            ("192.88.99.0", "192.88.99.255", V4SixToFourRelayAnycast),
            ("192.88.99.2", "192.88.99.2", V4SixA44RelayAnycast),
            ("192.168.0.0", "192.168.255.255", V4Private192),
            ("192.175.48.0", "192.175.48.255", V4As112DirectDelegation),
            ("198.18.0.0", "198.19.255.255", V4Benchmarking),
            ("198.51.100.0", "198.51.100.255", V4Documentation2),
            ("203.0.113.0", "203.0.113.255", V4Documentation3),
            ("224.0.0.0", "239.255.255.255", V4Multicast),
            ("240.0.0.0", "255.255.255.254", V4Reserved),
            ("255.255.255.255", "255.255.255.255", V4Broadcast),
            ("0.0.0.0", "0.0.0.0", V4Unspecified),
        ];
        for (first, last, r) in table {
            special(first, *r);
            special(last, *r);
        }
        special("192.0.0.169", V4IetfProtocolAssignments);
        special("192.0.0.172", V4IetfProtocolAssignments);
        special("192.88.99.1", V4SixToFourRelayAnycast);
        special("192.88.99.3", V4SixToFourRelayAnycast);
    }

    /// The global neighbours just outside each IPv4 block.
    #[test]
    fn ipv4_boundary_neighbours_are_global() {
        for s in [
            "1.0.0.0",
            "9.255.255.255",
            "11.0.0.0",
            "100.63.255.255",
            "100.128.0.0",
            "126.255.255.255",
            "128.0.0.0",
            "169.253.255.255",
            "169.255.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "191.255.255.255",
            "192.0.1.0",
            "192.0.1.255",
            "192.0.3.0",
            "192.31.195.255",
            "192.31.197.0",
            "192.52.192.255",
            "192.52.194.0",
            "192.88.98.255",
            "192.88.100.0",
            "192.167.255.255",
            "192.169.0.0",
            "192.175.47.255",
            "192.175.49.0",
            "198.17.255.255",
            "198.20.0.0",
            "198.51.99.255",
            "198.51.101.0",
            "203.0.112.255",
            "203.0.114.0",
            "223.255.255.255",
        ] {
            global(s);
        }
    }

    #[test]
    fn ipv4_names() {
        let names = [
            ("0.0.0.0", "unspecified"),
            ("0.1.2.3", "this-network"),
            ("10.1.2.3", "private"),
            ("172.20.0.1", "private"),
            ("192.168.1.1", "private"),
            ("100.64.0.1", "shared-address-space"),
            ("127.0.0.1", "loopback"),
            ("169.254.169.254", "link-local"),
            ("192.0.0.1", "ipv4-service-continuity"),
            ("192.0.0.100", "ietf-protocol-assignments"),
            ("192.0.2.1", "documentation"),
            ("198.51.100.1", "documentation"),
            ("203.0.113.1", "documentation"),
            ("192.31.196.1", "as112"),
            ("192.175.48.1", "as112"),
            ("192.52.193.1", "amt"),
            ("192.88.99.1", "6to4-relay-anycast"),
            ("198.18.0.1", "benchmarking"),
            ("224.0.0.1", "multicast"),
            ("240.0.0.1", "reserved"),
            ("255.255.255.255", "broadcast"),
            ("8.8.8.8", "global"),
        ];
        for (s, n) in names {
            assert_eq!(classify(ip(s)).name(), n, "{s}");
        }
        assert_eq!(classify(ip("10.1.2.3")).to_string(), "private (10.0.0.0/8)");
    }

    /// Every IPv6 registry block (and the address-space blocks outside 2000::/3).
    #[test]
    fn ipv6_blocks_first_and_last() {
        let table: &[(&str, &str, Range)] = &[
            ("::", "::", V6Unspecified),
            ("::1", "::1", V6Loopback),
            ("100::", "100::ffff:ffff:ffff:ffff", V6DiscardOnly),
            ("100:0:0:1::", "100:0:0:1:ffff:ffff:ffff:ffff", V6Dummy),
            ("2001:1::1", "2001:1::1", V6PcpAnycast),
            ("2001:1::2", "2001:1::2", V6TurnAnycast),
            ("2001:1::3", "2001:1::3", V6DnsSdSrpAnycast),
            ("2001:2::", "2001:2:0:ffff:ffff:ffff:ffff:ffff", V6Benchmarking),
            ("2001:3::", "2001:3:ffff:ffff:ffff:ffff:ffff:ffff", V6Amt),
            ("2001:4:112::", "2001:4:112:ffff:ffff:ffff:ffff:ffff", V6As112),
            ("2001:10::", "2001:1f:ffff:ffff:ffff:ffff:ffff:ffff", V6Orchid),
            ("2001:20::", "2001:2f:ffff:ffff:ffff:ffff:ffff:ffff", V6OrchidV2),
            ("2001:30::", "2001:3f:ffff:ffff:ffff:ffff:ffff:ffff", V6DroneRemoteId),
            ("2001:1::", "2001:1::4", V6IetfProtocolAssignments),
            ("2001:1:ffff::", "2001:1ff:ffff:ffff:ffff:ffff:ffff:ffff", V6IetfProtocolAssignments),
            ("2001:2:1::", "2001:4:111:ffff:ffff:ffff:ffff:ffff", V6IetfProtocolAssignments),
            ("2001:4:113::", "2001:f:ffff:ffff:ffff:ffff:ffff:ffff", V6IetfProtocolAssignments),
            ("2001:40::", "2001:1ff::", V6IetfProtocolAssignments),
            ("2001:db8::", "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff", V6Documentation),
            ("2620:4f:8000::", "2620:4f:8000:ffff:ffff:ffff:ffff:ffff", V6As112DirectDelegation),
            ("3fff::", "3fff:fff:ffff:ffff:ffff:ffff:ffff:ffff", V6Documentation2),
            ("5f00::", "5f00:ffff:ffff:ffff:ffff:ffff:ffff:ffff", V6SegmentRouting),
            ("fc00::", "fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", V6UniqueLocal),
            ("fe80::", "febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff", V6LinkLocal),
            ("fec0::", "feff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", V6SiteLocal),
            ("ff00::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", V6Multicast),
        ];
        for (first, last, r) in table {
            special(first, *r);
            special(last, *r);
        }
    }

    /// Outside 2000::/3 is never global; the edges of 2000::/3 and of the blocks inside it are.
    #[test]
    fn ipv6_outside_2000_slash_3_is_reserved() {
        for s in [
            "::2:0:0:0",
            "1::",
            "100:1::",
            "100:0:0:2::",
            "101::",
            "1fff:ffff::1",
            "1fff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            "4000::",
            "5eff:ffff::1",
            "5f01::",
            "64:ff9b:0:0:1::",
            "64:ff9a::1",
            "8000::1",
            "e000::1",
            "fb00::1",
            "fe00::1",
            "fe7f:ffff::1",
        ] {
            special(s, V6Reserved);
        }
        for s in [
            "2000::",
            "2000::1",
            "2001:200::",
            "2001:db7:ffff:ffff:ffff:ffff:ffff:ffff",
            "2001:db9::",
            "2001:4860::1",
            "2003::1",
            "2620:4f:7fff:ffff:ffff:ffff:ffff:ffff",
            "2620:4f:8001::",
            "3ffe:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            "3fff:1000::",
            "3fff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        ] {
            global(s);
        }
    }

    #[test]
    fn ipv6_names() {
        for (s, n) in [
            ("::1", "loopback"),
            ("::", "unspecified"),
            ("fd00::1", "unique-local"),
            ("fe80::1", "link-local"),
            ("fec0::1", "site-local"),
            ("ff02::1", "multicast"),
            ("2001:db8::1", "documentation"),
            ("3fff::1", "documentation"),
            ("2001:2::1", "benchmarking"),
            ("100::1", "discard-only"),
            ("5f00::1", "srv6-sid"),
            ("4000::1", "reserved"),
            ("2606:4700::1111", "global"),
        ] {
            assert_eq!(classify(ip(s)).name(), n, "{s}");
        }
        assert_eq!(classify(ip("fe80::1")).to_string(), "link-local (fe80::/10)");
    }

    #[track_caller]
    fn embedded(s: &str, via: Embedding, inner: Option<(&str, Range)>) {
        let c = classify(ip(s));
        assert_eq!(c, Class::Embedded { via, inner: inner.map(|(a, r)| (v4(a), r)) }, "{s}");
        assert!(!c.is_global(), "{s}");
    }

    #[test]
    fn ipv4_mapped() {
        embedded("::ffff:10.1.2.3", Embedding::Mapped(v4("10.1.2.3")), Some(("10.1.2.3", V4Private10)));
        embedded("::ffff:127.0.0.1", Embedding::Mapped(v4("127.0.0.1")), Some(("127.0.0.1", V4Loopback)));
        embedded("::ffff:169.254.169.254", Embedding::Mapped(v4("169.254.169.254")), Some(("169.254.169.254", V4LinkLocal)));
        embedded("::ffff:8.8.8.8", Embedding::Mapped(v4("8.8.8.8")), None);
        embedded("::ffff:0:0", Embedding::Mapped(v4("0.0.0.0")), Some(("0.0.0.0", V4Unspecified)));
        embedded("::ffff:ffff:ffff", Embedding::Mapped(v4("255.255.255.255")), Some(("255.255.255.255", V4Broadcast)));
        assert_eq!(classify(ip("::ffff:8.8.8.8")).name(), "ipv4-mapped");
    }

    #[test]
    fn ipv4_compatible() {
        embedded("::10.0.0.1", Embedding::Compatible(v4("10.0.0.1")), Some(("10.0.0.1", V4Private10)));
        embedded("::127.0.0.1", Embedding::Compatible(v4("127.0.0.1")), Some(("127.0.0.1", V4Loopback)));
        embedded("::1.1.1.1", Embedding::Compatible(v4("1.1.1.1")), None);
        // The first and last of ::/96 after :: and ::1.
        embedded("::2", Embedding::Compatible(v4("0.0.0.2")), Some(("0.0.0.2", V4ThisNetwork)));
        embedded("::ffff:ffff", Embedding::Compatible(v4("255.255.255.255")), Some(("255.255.255.255", V4Broadcast)));
        special("::", V6Unspecified);
        special("::1", V6Loopback);
    }

    #[test]
    fn ipv4_translated() {
        embedded("::ffff:0:192.168.0.1", Embedding::Translated(v4("192.168.0.1")), Some(("192.168.0.1", V4Private192)));
        embedded("::ffff:0:8.8.8.8", Embedding::Translated(v4("8.8.8.8")), None);
        assert_eq!(classify(ip("::ffff:0:8.8.8.8")).name(), "ipv4-translated");
    }

    #[test]
    fn nat64_well_known_and_local_use() {
        embedded("64:ff9b::10.0.0.1", Embedding::Nat64(v4("10.0.0.1")), Some(("10.0.0.1", V4Private10)));
        embedded("64:ff9b::a9fe:a9fe", Embedding::Nat64(v4("169.254.169.254")), Some(("169.254.169.254", V4LinkLocal)));
        embedded("64:ff9b::8.8.8.8", Embedding::Nat64(v4("8.8.8.8")), None);
        embedded("64:ff9b::", Embedding::Nat64(v4("0.0.0.0")), Some(("0.0.0.0", V4Unspecified)));
        embedded("64:ff9b::ffff:ffff", Embedding::Nat64(v4("255.255.255.255")), Some(("255.255.255.255", V4Broadcast)));
        embedded("64:ff9b:1::127.0.0.1", Embedding::Nat64Local(v4("127.0.0.1")), Some(("127.0.0.1", V4Loopback)));
        embedded("64:ff9b:1::1.1.1.1", Embedding::Nat64Local(v4("1.1.1.1")), None);
        embedded(
            "64:ff9b:1:ffff:ffff:ffff:ffff:ffff",
            Embedding::Nat64Local(v4("255.255.255.255")),
            Some(("255.255.255.255", V4Broadcast)),
        );
        assert_eq!(classify(ip("64:ff9b::8.8.8.8")).name(), "nat64");
        assert_eq!(classify(ip("64:ff9b:1::8.8.8.8")).name(), "nat64-local");
        // Just outside both: reserved (outside 2000::/3), no embedding decoded.
        special("64:ff9b:2::1", V6Reserved);
        special("64:ff9b:0:0:0:1::", V6Reserved);
    }

    #[test]
    fn six_to_four() {
        embedded("2002:c0a8:0101::1", Embedding::SixToFour(v4("192.168.1.1")), Some(("192.168.1.1", V4Private192)));
        embedded("2002:7f00:1::", Embedding::SixToFour(v4("127.0.0.1")), Some(("127.0.0.1", V4Loopback)));
        embedded("2002:0808:0808::1", Embedding::SixToFour(v4("8.8.8.8")), None);
        embedded("2002::", Embedding::SixToFour(v4("0.0.0.0")), Some(("0.0.0.0", V4Unspecified)));
        embedded(
            "2002:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            Embedding::SixToFour(v4("255.255.255.255")),
            Some(("255.255.255.255", V4Broadcast)),
        );
        assert_eq!(classify(ip("2002:0808:0808::1")).name(), "6to4");
        global("2001:ffff::1");
        global("2003::");
    }

    #[test]
    fn teredo() {
        // RFC 4380 §4 example shape: server 65.54.227.120, client 10.0.0.1 (inverted: f5ff:fffe).
        let via = Embedding::Teredo { server: v4("65.54.227.120"), client: v4("10.0.0.1") };
        assert_eq!(Embedding::decode("2001:0:4136:e378:8000:63bf:f5ff:fffe".parse().unwrap()), Some(via));
        embedded("2001:0:4136:e378:8000:63bf:f5ff:fffe", via, Some(("10.0.0.1", V4Private10)));
        // Both public: still denied as teredo.
        let public = Embedding::Teredo { server: v4("65.54.227.120"), client: v4("8.8.8.8") };
        embedded("2001:0:4136:e378:8000:63bf:f7f7:f7f7", public, None);
        // A private server is reported when the client is public.
        let srv = Embedding::Teredo { server: v4("192.168.0.1"), client: v4("8.8.8.8") };
        embedded("2001:0:c0a8:1:0:0:f7f7:f7f7", srv, Some(("192.168.0.1", V4Private192)));
        // First and last of 2001::/32.
        assert_eq!(classify(ip("2001::")).name(), "teredo");
        assert_eq!(classify(ip("2001:0:ffff:ffff:ffff:ffff:ffff:ffff")).name(), "teredo");
        special("2001:1::", V6IetfProtocolAssignments);
        assert_eq!(
            classify(ip("2001:0:4136:e378:8000:63bf:f5ff:fffe")).to_string(),
            "teredo (2001::/32) carrying 10.0.0.1, private (10.0.0.0/8)"
        );
        assert_eq!(
            classify(ip("2001:0:4136:e378:8000:63bf:f7f7:f7f7")).to_string(),
            "teredo (2001::/32) carrying 8.8.8.8 (server 65.54.227.120)"
        );
    }

    #[test]
    fn embedding_messages() {
        assert_eq!(
            classify(ip("64:ff9b::10.0.0.1")).to_string(),
            "nat64 (64:ff9b::/96) carrying 10.0.0.1, private (10.0.0.0/8)"
        );
        assert_eq!(classify(ip("::ffff:8.8.8.8")).to_string(), "ipv4-mapped (::ffff:0:0/96) carrying 8.8.8.8");
    }

    /// No global IPv6 address decodes as an embedding, and every embedding is non-global.
    #[test]
    fn embeddings_only_in_their_blocks() {
        for s in PUBLIC.iter().filter(|s| s.contains(':')) {
            assert_eq!(Embedding::decode(s.parse().unwrap()), None, "{s}");
        }
        for s in ["::1", "::", "fe80::1", "2001:db8::1", "2001:1::1"] {
            assert_eq!(Embedding::decode(s.parse().unwrap()), None, "{s}");
        }
    }

    fn policy(local: &[&str]) -> AddressPolicy {
        AddressPolicy::new(local.iter().copied().map(ip))
    }

    #[test]
    fn check_allows_global_and_refuses_the_rest() {
        let p = policy(&[]);
        for s in PUBLIC {
            assert_eq!(p.check(ip(s), false), Ok(()), "{s}");
            assert_eq!(p.check(ip(s), true), Ok(()), "{s}");
        }
        for s in ["10.0.0.1", "127.0.0.1", "::1", "169.254.169.254", "fd00::1", "::ffff:8.8.8.8", "2001:db8::1"] {
            let d = p.check(ip(s), false).unwrap_err();
            assert_eq!(d.ip, ip(s));
            assert!(matches!(d.reason, Reason::NotGlobal(c) if c == classify(ip(s))), "{s}: {d}");
        }
        assert_eq!(p.check(ip("10.0.0.1"), false).unwrap_err().to_string(), "10.0.0.1 is private (10.0.0.0/8)");
        assert_eq!(p.check(ip("10.0.0.1"), false).unwrap_err().name(), "private");
    }

    /// The host's own addresses are refused even when global, and even with allow_private.
    #[test]
    fn check_refuses_the_hosts_own_addresses() {
        let p = policy(&["127.0.0.1", "::1", "203.0.113.7", "8.8.4.4", "10.0.0.5", "2606:4700::6810:1"]);
        for s in ["8.8.4.4", "2606:4700::6810:1", "10.0.0.5", "127.0.0.1", "::1", "203.0.113.7"] {
            for allow_private in [false, true] {
                let d = p.check(ip(s), allow_private).unwrap_err();
                assert_eq!(d.reason, Reason::HostAddress, "{s}");
                assert_eq!(d.name(), "host-address");
            }
        }
        assert_eq!(p.check(ip("8.8.4.4"), true).unwrap_err().to_string(), "8.8.4.4 is an address of this host");
        // Through an embedding: named as the host's address.
        assert_eq!(p.check(ip("::ffff:8.8.4.4"), true).unwrap_err().reason, Reason::HostAddress);
        assert_eq!(p.check(ip("64:ff9b::808:404"), true).unwrap_err().reason, Reason::HostAddress);
        // Neighbours are not the host.
        assert_eq!(p.check(ip("8.8.8.8"), false), Ok(()));
        assert_eq!(p.check(ip("10.0.0.6"), true), Ok(()));
    }

    /// allow_private permits exactly RFC 1918, 100.64/10 and fc00::/7.
    #[test]
    fn allow_private_permits_only_private_networks() {
        let p = policy(&[]);
        for s in [
            "10.0.0.0",
            "10.255.255.255",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.0.1",
            "192.168.255.255",
            "100.64.0.1",
            "100.127.255.255",
            "fc00::1",
            "fd12:3456::1",
        ] {
            assert_eq!(p.check(ip(s), true), Ok(()), "{s}");
            assert!(p.check(ip(s), false).is_err(), "{s}");
        }
        for s in [
            "127.0.0.1",
            "127.1.2.3",
            "::1",
            "0.0.0.0",
            "0.1.2.3",
            "::",
            "169.254.169.254",
            "169.254.170.2",
            "fe80::1",
            "fec0::1",
            "224.0.0.1",
            "239.255.255.250",
            "ff02::1",
            "255.255.255.255",
            "240.0.0.1",
            "192.0.0.9",
            "192.0.2.1",
            "198.18.0.1",
            "2001:db8::1",
            "2001:2::1",
            "100::1",
            "4000::1",
            // IPv4 carried in IPv6: write the IPv4 literal instead.
            "::ffff:10.0.0.1",
            "::10.0.0.1",
            "::ffff:0:10.0.0.1",
            "64:ff9b::10.0.0.1",
            "64:ff9b:1::10.0.0.1",
            "2002:0a00:0001::1",
            "2001:0:4136:e378:8000:63bf:f5ff:fffe",
        ] {
            let d = p.check(ip(s), true).unwrap_err();
            assert!(matches!(d.reason, Reason::NotGlobal(_)), "{s}: {d}");
        }
    }

    #[test]
    fn metadata_endpoints_are_always_refused() {
        let p = policy(&[]);
        for s in ["fd00:ec2::254", "100.100.100.200"] {
            for allow_private in [false, true] {
                let d = p.check(ip(s), allow_private).unwrap_err();
                assert_eq!(d.reason, Reason::CloudMetadata, "{s}");
                assert_eq!(d.name(), "cloud-metadata");
            }
        }
        for s in ["169.254.169.254", "169.254.170.2"] {
            assert_eq!(p.check(ip(s), true).unwrap_err().name(), "link-local", "{s}");
        }
        // Neighbours in the same ranges are ordinary private addresses.
        assert_eq!(p.check(ip("fd00:ec2::253"), true), Ok(()));
        assert_eq!(p.check(ip("100.100.100.201"), true), Ok(()));
    }

    #[test]
    fn loopback_switch_is_narrow() {
        let p = policy(&["127.0.0.1", "::1", "10.0.0.5", "198.51.100.9"]).with_loopback_allowed();
        // Loopback needs the pattern's opt-in too, and is no longer refused as a host address.
        for s in ["127.0.0.1", "127.0.0.2", "::1"] {
            assert_eq!(p.check(ip(s), true), Ok(()), "{s}");
            assert_eq!(p.check(ip(s), false).unwrap_err().name(), "loopback", "{s}");
        }
        // Nothing else changes: other host addresses, embedded loopback, unspecified, link-local.
        assert_eq!(p.check(ip("10.0.0.5"), true).unwrap_err().reason, Reason::HostAddress);
        assert_eq!(p.check(ip("198.51.100.9"), true).unwrap_err().reason, Reason::HostAddress);
        for s in ["::ffff:127.0.0.1", "::127.0.0.1", "64:ff9b::7f00:1", "0.0.0.0", "::", "169.254.169.254", "fe80::1"] {
            assert!(p.check(ip(s), true).is_err(), "{s}");
        }
        // Without the switch, loopback is refused even with allow_private.
        let strict = policy(&[]);
        assert!(strict.check(ip("127.0.0.1"), true).is_err());
        assert!(strict.check(ip("::1"), true).is_err());
    }

    #[test]
    fn local_addresses_reads_the_interfaces() {
        let addrs = local_addresses().expect("getifaddrs");
        // Every Linux host (and test container) has a loopback interface.
        assert!(addrs.contains(&ip("127.0.0.1")), "{addrs:?}");
        let mut sorted = addrs.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(addrs, sorted);
        let p = AddressPolicy::from_host().unwrap();
        for a in &addrs {
            assert_eq!(p.check(*a, true).unwrap_err().reason, Reason::HostAddress, "{a}");
        }
    }
}
