//! The server cookie's time window as SPEC.md §10.6 words it: with d = (ts − now) mod 2^32 read
//! as a signed 32-bit number, a cookie is fresh when −3600 ≤ d ≤ 300, and due for renewal when
//! d < −1800; across the wrap of the 32-bit timestamp too.

use std::net::{IpAddr, Ipv4Addr};

use upgram_core::cookie::{ClientCookie, CookieCheck, CookieSecret, cookie_freshness, make_server_cookie};

/// What SPEC.md §10.6 says of a cookie made at `ts`, checked at `now`.
fn spec_says(ts: u64, now: u64) -> CookieCheck {
    let d = (ts as u32).wrapping_sub(now as u32) as i32;
    match d {
        -3600..=300 => CookieCheck::Valid { renew: d < -1800 },
        _ => CookieCheck::Stale,
    }
}

#[test]
fn the_window_is_a_signed_difference_up_to_300_s_ahead_and_3600_s_behind() {
    let secret = CookieSecret([0x42; 32]);
    let client = ClientCookie([7; 8]);
    let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
    // Today, just before and just after the 32-bit timestamp wraps (2106), and at the wrap.
    for now in [1_764_000_000u64, (1 << 32) - 1, 1 << 32, (1 << 32) + 100, (1 << 32) - 200] {
        let offsets = (-4000i64..=700).step_by(50).chain(-3602..=-3598).chain(-1802..=-1798).chain(298..=302);
        for offset in offsets {
            let ts = now.checked_add_signed(offset).unwrap();
            let cookie = make_server_cookie(&secret, &client, ip, ts);
            let got = cookie_freshness(&cookie, now);
            assert_eq!(got, spec_says(ts, now), "made at now{offset:+}, now = {now}");
        }
        // The boundaries themselves, named.
        let at = |offset: i64| {
            cookie_freshness(&make_server_cookie(&secret, &client, ip, now.checked_add_signed(offset).unwrap()), now)
        };
        assert_eq!(at(300), CookieCheck::Valid { renew: false }, "300 s ahead is accepted");
        assert_eq!(at(301), CookieCheck::Stale, "301 s ahead is not");
        assert_eq!(at(-3600), CookieCheck::Valid { renew: true }, "3600 s old is accepted");
        assert_eq!(at(-3601), CookieCheck::Stale, "3601 s old is not");
    }
}
