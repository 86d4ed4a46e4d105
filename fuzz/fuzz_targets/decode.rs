//! Fuzz target for `wire::decode`: any bytes, any link type, tunnels on or off.
//!
//! Input: byte 0 selects the link type (bits 0-3: an index into `LinkType::ALL`, taken
//! modulo its length) and turns GTP-U decoding off (bit 4); the rest is the frame. The
//! seed corpus (make_corpus.sh) holds every distinct frame of the shared captures in this
//! format. Beyond "never panics" (overflow checks are on in cargo fuzz builds), every
//! decoded frame must pass `PacketMeta::check_consistency`, and decoding must be
//! deterministic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use streamml_sensor::capture::LinkType;
use streamml_sensor::wire::{decode, DecodeOptions};

fuzz_target!(|data: &[u8]| {
    let Some((&sel, frame)) = data.split_first() else {
        return;
    };
    let link = LinkType::ALL[usize::from(sel & 0x0f) % LinkType::ALL.len()];
    let opts = DecodeOptions {
        decode_tunnels: sel & 0x10 == 0,
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
