//! Stateless cookies against amplification (SPEC.md §10.6), in the manner of DNS cookies
//! (RFC 7873, RFC 9018) and QUIC Retry.
//!
//! A server cookie is `version(1) ‖ reserved(3) ‖ timestamp(4) ‖ MAC(8)`, the MAC being
//! HMAC-SHA256 under a secret shared by every server of a deployment, over the client cookie, the
//! first 8 bytes of the server cookie and the client's IP address (not its port: clients use a
//! fresh port per query). A server checks it against its current and previous secret, so secrets
//! rotate without a flag day; no state is kept per client.

use std::fmt;
use std::net::IpAddr;

use hmac::{Hmac, Mac};
use serde::{Serialize, Serializer};
use sha2::Sha256;

use crate::limits::AMPLIFICATION_FACTOR;

/// Seconds a server cookie stays valid after its timestamp.
pub const COOKIE_LIFETIME_SECS: u64 = 3600;
/// Seconds a cookie's timestamp may lie in the future (clock skew between servers).
pub const COOKIE_FUTURE_SECS: u64 = 300;
/// The server cookie format version.
pub const COOKIE_VERSION: u8 = 1;

/// The client's 8 random bytes, kept per server.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ClientCookie(pub [u8; 8]);

impl ClientCookie {
    /// Its length on the wire.
    pub const LEN: usize = 8;
}

/// The server's 16-byte cookie, proof that the client can receive at its address.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ServerCookie(pub [u8; 16]);

impl ServerCookie {
    /// Its length on the wire.
    pub const LEN: usize = 16;

    /// The unix time at which the server made it.
    pub fn timestamp(&self) -> u32 {
        u32::from_be_bytes([self.0[4], self.0[5], self.0[6], self.0[7]])
    }
}

macro_rules! hex_debug_serialize {
    ($ty:ident) => {
        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($ty), "({})"), hex::encode(self.0))
            }
        }
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&hex::encode(self.0))
            }
        }
    };
}
hex_debug_serialize!(ClientCookie);
hex_debug_serialize!(ServerCookie);

/// A 32-byte cookie secret, shared by every server of a deployment.
#[derive(Clone)]
pub struct CookieSecret(pub [u8; 32]);

impl fmt::Debug for CookieSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CookieSecret(..)")
    }
}

fn address_bytes(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

fn cookie_mac(secret: &CookieSecret, client: &ClientCookie, head: &[u8; 8], ip: IpAddr) -> Hmac<Sha256> {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&secret.0)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(&client.0);
    mac.update(head);
    mac.update(&address_bytes(ip));
    mac
}

fn cookie_head(timestamp: u32) -> [u8; 8] {
    let t = timestamp.to_be_bytes();
    [COOKIE_VERSION, 0, 0, 0, t[0], t[1], t[2], t[3]]
}

/// Makes the server cookie for a client at `ip` with `client` cookie, at unix time `now`.
pub fn make_server_cookie(secret: &CookieSecret, client: &ClientCookie, ip: IpAddr, now: u64) -> ServerCookie {
    // The wire timestamp is 32 bits; it wraps in 2106, and checks compare modulo 2^32.
    let head = cookie_head(now as u32);
    let tag = cookie_mac(secret, client, &head, ip).finalize().into_bytes();
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&head);
    out[8..].copy_from_slice(&tag[..8]);
    ServerCookie(out)
}

/// The outcome of checking a server cookie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CookieCheck {
    /// Made by us (current or previous secret) for this client and address, and fresh.
    Valid {
        /// Whether it is past half its lifetime, so the reply should carry a fresh one.
        renew: bool,
    },
    /// Made by us but too old, or dated too far in the future.
    Stale,
    /// Not made by us for this client cookie and address, or not a cookie format we know.
    Invalid,
}

/// Checks `cookie` for a client at `ip` with `client` cookie at unix time `now`, against the
/// current secret and, during a rotation, the previous one. Constant time in the MAC.
pub fn check_server_cookie(
    secrets: &[&CookieSecret],
    client: &ClientCookie,
    cookie: &ServerCookie,
    ip: IpAddr,
    now: u64,
) -> CookieCheck {
    if !is_authentic_cookie(secrets, client, cookie, ip) {
        return CookieCheck::Invalid;
    }
    cookie_freshness(cookie, now)
}

/// Whether `cookie` was made under one of `secrets` for this client cookie and address (the
/// MAC check, constant time), whatever its age. A server may remember the answer for a cookie
/// it has seen, since it does not change; freshness is [`cookie_freshness`].
pub fn is_authentic_cookie(
    secrets: &[&CookieSecret],
    client: &ClientCookie,
    cookie: &ServerCookie,
    ip: IpAddr,
) -> bool {
    let mut head = [0u8; 8];
    head.copy_from_slice(&cookie.0[..8]);
    if head[0] != COOKIE_VERSION || head[1..4] != [0, 0, 0] {
        return false;
    }
    secrets.iter().any(|secret| cookie_mac(secret, client, &head, ip).verify_truncated_left(&cookie.0[8..]).is_ok())
}

/// The age check of an authentic cookie at unix time `now` (arithmetic modulo 2^32).
pub fn cookie_freshness(cookie: &ServerCookie, now: u64) -> CookieCheck {
    let age = (now as u32).wrapping_sub(cookie.timestamp());
    let ahead = cookie.timestamp().wrapping_sub(now as u32);
    if u64::from(ahead) <= COOKIE_FUTURE_SECS {
        return CookieCheck::Valid { renew: false };
    }
    if u64::from(age) <= COOKIE_LIFETIME_SECS {
        return CookieCheck::Valid { renew: u64::from(age) > COOKIE_LIFETIME_SECS / 2 };
    }
    CookieCheck::Stale
}

/// Whether a server may send `reply_len` bytes to a source it has not validated, which sent a
/// datagram of `received_len` bytes (the 3× rule).
pub fn within_amplification_limit(reply_len: usize, received_len: usize) -> bool {
    reply_len <= received_len.saturating_mul(AMPLIFICATION_FACTOR)
}
