//! Fuzz target for `wire::decode`: any bytes, any link type, tunnels on or off.
//!
//! Input: byte 0 selects the link type (bits 0-2) and turns GTP-U decoding off (bit 3);
//! the rest is the frame. The seed corpus (make_corpus.sh) holds every distinct frame
//! of the shared captures in this format. Beyond "never panics" (overflow checks are on
//! in cargo fuzz builds), every decoded frame must pass `PacketMeta::check_consistency`,
//! and decoding must be deterministic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use streamml_sensor::capture::LinkType;
use streamml_sensor::wire::{decode, DecodeOptions};

/// Selector values 0..8, in the order make_corpus.rs writes them.
pub const LINKS: [LinkType; 8] = [
    LinkType::Ethernet,
    LinkType::Null,
    LinkType::Loop,
    LinkType::Raw,
    LinkType::Ipv4,
    LinkType::Ipv6,
    LinkType::LinuxSll,
    LinkType::LinuxSll2,
];

fuzz_target!(|data: &[u8]| {
    let Some((&sel, frame)) = data.split_first() else {
        return;
    };
    let link = LINKS[usize::from(sel & 7)];
    let opts = DecodeOptions {
        decode_tunnels: sel & 8 == 0,
    };
    let orig_len = frame.len() as u32;
    let r = decode(frame, orig_len, link, &opts);
    if let Ok(m) = &r {
        if let Err(what) = m.check_consistency(frame) {
            panic!("inconsistent PacketMeta ({what}): {m:?}");
        }
        assert_eq!(m.wire_len, orig_len);
    }
    assert_eq!(r, decode(frame, orig_len, link, &opts), "not deterministic");
});
