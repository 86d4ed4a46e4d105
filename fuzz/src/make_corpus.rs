//! Writes the fuzz seed corpus: every distinct frame of every capture under a folder, in
//! the decode target's input format (one selector byte, the link type's index in
//! `LinkType::ALL`, then the frame, cut to 4096 bytes). Usage: make-corpus PCAPS_DIR OUT_DIR

use std::collections::hash_map::DefaultHasher;
use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use streamml_sensor::capture::pcap::PcapFileSource;
use streamml_sensor::capture::{LinkType, PacketSource};

const MAX_LEN: usize = 4096;
/// At most this many frames per capture, so that the big captures do not dominate.
const PER_CAPTURE: usize = 300;

fn selector(link: LinkType) -> u8 {
    LinkType::ALL
        .iter()
        .position(|l| *l == link)
        .and_then(|i| u8::try_from(i).ok())
        .unwrap_or(0)
}

fn captures(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() {
            captures(&p, out)?;
        } else if matches!(
            p.extension().and_then(|x| x.to_str()),
            Some("pcap" | "pcapng" | "cap")
        ) {
            out.push(p);
        }
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, pcaps, out] = args.as_slice() else {
        return Err("usage: make-corpus PCAPS_DIR OUT_DIR".into());
    };
    std::fs::create_dir_all(out)?;
    let mut files = Vec::new();
    captures(Path::new(pcaps), &mut files)?;
    files.sort();
    let mut seen = HashSet::new();
    let mut written = 0usize;
    for path in &files {
        let Ok(mut src) = PcapFileSource::open(path) else {
            continue; // unsupported link type: nothing to seed
        };
        let mut n = 0;
        while let Ok(Some(f)) = src.next_frame() {
            let mut input = vec![selector(f.link)];
            input.extend_from_slice(&f.data[..f.data.len().min(MAX_LEN)]);
            let mut h = DefaultHasher::new();
            input.hash(&mut h);
            let key = h.finish();
            if seen.insert(key) {
                std::fs::write(Path::new(out).join(format!("{key:016x}")), &input)?;
                written += 1;
                n += 1;
                if n == PER_CAPTURE {
                    break;
                }
            }
        }
    }
    println!(
        "{written} seed inputs from {} captures in {out}",
        files.len()
    );
    Ok(())
}
