use super::*;

fn frame(seq: u64, len: usize) -> Vec<u8> {
    (0..len).map(|i| (seq as usize * 31 + i) as u8).collect()
}

fn small(dir: &Path, size: u64, snaplen: u32) -> EvidenceRing {
    EvidenceRing::create(
        &dir.join("r.ring"),
        &RingConfig {
            size_bytes: size,
            snaplen,
            shard: 3,
        },
    )
    .unwrap()
}

#[test]
fn append_and_copy_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut r = small(dir.path(), 1 << 20, 1600);
    for i in 1..=100u64 {
        let f = frame(i, 60 + i as usize);
        assert_eq!(
            r.append(i * 1000, f.len() as u32, LinkType::Ethernet, i % 7, &f),
            i
        );
    }
    let rd = r.reader();
    let mut out = RecordBuf::new();
    let st = rd.copy_range(Start::Oldest, End::HEAD, |_| true, &mut out);
    assert_eq!(st.copied, 100);
    assert_eq!(st.lost_overwritten + st.torn, 0);
    for (i, v) in out.iter().enumerate() {
        let s = i as u64 + 1;
        assert_eq!(v.seq(), s);
        assert_eq!(v.ts_ns(), s * 1000);
        assert_eq!(v.data, &frame(s, 60 + s as usize)[..]);
        assert_eq!(v.link(), 1);
    }
    // Time range and filter.
    let st = rd.copy_range(
        Start::TsNs(10_000),
        End {
            seq: u64::MAX,
            ts_ns: 20_000,
        },
        |v| v.flow_hash() == 3,
        &mut out,
    );
    let seqs: Vec<u64> = out.iter().map(|v| v.seq()).collect();
    assert_eq!(seqs, vec![10, 17]);
    assert_eq!(st.copied, 2);
    assert!(!st.start_overwritten);
    // Seq range.
    rd.copy_range(
        Start::Seq(95),
        End {
            seq: 97,
            ts_ns: u64::MAX,
        },
        |_| true,
        &mut out,
    );
    assert_eq!(
        out.iter().map(|v| v.seq()).collect::<Vec<_>>(),
        vec![95, 96, 97]
    );
}

#[test]
fn time_bounded_copy_stops_after_a_run_past_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let mut r = small(dir.path(), 4 << 20, 256);
    let ms = 1_000_000u64;
    // 100 ms apart; seq 50 carries a bogus far-future time, seq 80 is 4 s late, seq
    // 1500 is 146 s late.
    for i in 1..=5000u64 {
        let ts = match i {
            50 => 1 << 62,
            80 => 4_000 * ms,
            1500 => 3_800 * ms,
            _ => i * 100 * ms,
        };
        r.append(ts, 60, LinkType::Ethernet, 0, &frame(i, 60));
    }
    let rd = r.reader();
    let mut out = RecordBuf::new();
    // [3 s, 7 s]: records 30..=70 except the bogus 50, and the late 80.
    rd.copy_range(
        Start::TsNs(3_000 * ms),
        End {
            seq: u64::MAX,
            ts_ns: 7_000 * ms,
        },
        |_| true,
        &mut out,
    );
    let want: Vec<u64> = (30..=70).filter(|&i| i != 50).chain([80]).collect();
    assert_eq!(out.iter().map(|v| v.seq()).collect::<Vec<_>>(), want);
    // [3.5 s, 4 s]: the late record 80 is 1 s past the end of 35..=40, within the
    // run of END_RUN records: still found.
    rd.copy_range(
        Start::TsNs(3_500 * ms),
        End {
            seq: u64::MAX,
            ts_ns: 4_000 * ms,
        },
        |_| true,
        &mut out,
    );
    let got: Vec<u64> = out.iter().map(|v| v.seq()).collect();
    assert_eq!(got, vec![35, 36, 37, 38, 39, 40, 80]);
    // A walk without the early stop (End::HEAD, then filtered) also finds 1500, more
    // than END_RUN records past the end of the span: the documented limit.
    let (a, b) = (3_500 * ms, 4_000 * ms);
    rd.copy_range(
        Start::Oldest,
        End::HEAD,
        |v| (a..=b).contains(&v.ts_ns()),
        &mut out,
    );
    let all: Vec<u64> = out.iter().map(|v| v.seq()).collect();
    assert_eq!(all, [&got[..], &[1500]].concat());
    assert!(1500 - 80 > u64::from(END_RUN));
}

#[test]
fn wraps_and_keeps_newest() {
    let dir = tempfile::tempdir().unwrap();
    let mut r = small(dir.path(), 64 * 1024, 512);
    let n = 5000u64;
    for i in 1..=n {
        let f = frame(i, (i as usize * 37) % 700);
        r.append(i, f.len() as u32, LinkType::Raw, 0, &f);
    }
    assert!(r.cut_to_snaplen > 0);
    let rd = r.reader();
    let mut out = RecordBuf::new();
    let st = rd.copy_range(Start::Oldest, End::HEAD, |_| true, &mut out);
    assert!(st.copied > 50 && st.copied < n);
    assert_eq!(st.torn, 0);
    let last = out.get(out.len() - 1);
    assert_eq!(last.seq(), n);
    let first = out.get(0).seq();
    for (k, v) in out.iter().enumerate() {
        let s = first + k as u64;
        assert_eq!(v.seq(), s);
        let f = frame(s, (s as usize * 37) % 700);
        assert_eq!(v.orig_len(), f.len() as u32);
        assert_eq!(v.data, &f[..f.len().min(512)]);
    }
    // A start older than the ring is reported.
    let st = rd.copy_range(Start::TsNs(1), End::HEAD, |_| true, &mut out);
    assert!(st.start_overwritten);
    let st = rd.copy_range(Start::Seq(1), End::HEAD, |_| true, &mut out);
    assert_eq!(out.get(0).seq(), first);
    assert_eq!(st.lost_overwritten, first - 1);
    // The index finds a start in the middle.
    let mid = n - 20;
    rd.copy_range(Start::TsNs(mid), End::HEAD, |_| true, &mut out);
    assert_eq!(out.get(0).seq(), mid);
    assert_eq!(out.len(), 21);
}

#[test]
fn readonly_scan_matches_and_counts_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.ring");
    let mut r = small(dir.path(), 64 * 1024, 256);
    for i in 1..=50u64 {
        let f = frame(i, 100);
        r.append(i, 100, LinkType::Ethernet, 0, &f);
    }
    let ro = RingReader::open_readonly(&path).unwrap();
    let mut seqs = vec![];
    let st = ro.scan(|v| seqs.push(v.seq()));
    assert_eq!(seqs, (1..=50).collect::<Vec<_>>());
    assert_eq!(st.torn, 0);
    drop(ro);
    drop(r);
    // Corrupt record 10's header (ts), as a torn write would.
    let hdr_len = {
        let ro = RingReader::open_readonly(&path).unwrap();
        ro.map.layout.header_len
    };
    let off = hdr_len + 9 * record_len(100) + R_TS;
    {
        use std::os::unix::fs::FileExt;
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        f.write_all_at(&[0xff], off).unwrap();
    }
    let ro = RingReader::open_readonly(&path).unwrap();
    let mut seqs = vec![];
    let st = ro.scan(|v| seqs.push(v.seq()));
    let want: Vec<u64> = (1..=50).filter(|&s| s != 10).collect();
    assert_eq!(seqs, want);
    // One record between two valid ones: corrupt, not torn.
    assert_eq!((st.corrupt, st.torn), (1, 0));
}

/// Flips one bit at byte `off` of the file.
fn flip(path: &Path, off: u64, bit: u8) {
    use std::os::unix::fs::FileExt;
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8];
    f.read_exact_at(&mut b, off).unwrap();
    b[0] ^= 1 << bit;
    f.write_all_at(&b, off).unwrap();
}

/// 50 records of 100 bytes in a fresh ring at `path`; returns header_len.
fn fifty(dir: &Path) -> (PathBuf, u64) {
    let path = dir.join("r.ring");
    let mut r = small(dir, 64 * 1024, 256);
    for i in 1..=50u64 {
        r.append(i, 100, LinkType::Ethernet, i, &frame(i, 100));
    }
    drop(r);
    let hl = RingReader::open_readonly(&path)
        .unwrap()
        .map
        .layout
        .header_len;
    (path, hl)
}

fn scan_all(path: &Path) -> (Vec<u64>, CopyStats) {
    let ro = RingReader::open_readonly(path).unwrap();
    let mut seqs = vec![];
    let st = ro.scan(|v| {
        assert_eq!(v.data, &frame(v.seq(), 100)[..], "seq {}", v.seq());
        seqs.push(v.seq())
    });
    (seqs, st)
}

#[test]
fn a_flipped_bit_anywhere_in_a_record_is_corrupt_and_never_returned() {
    let dir = tempfile::tempdir().unwrap();
    let rl = record_len(100);
    // (record seq, byte offset inside the record): every header field, the check, bytes.
    let spots = [
        (3u64, R_SEQ),
        (6, R_TS + 3),
        (9, R_HASH + 7),
        (12, R_ORIG),
        (15, R_CAP),
        (18, R_CAP + 2),
        (21, R_LINK),
        (24, R_HCHECK + 1),
        (27, R_CHECK),
        (30, R_CHECK + 3),
        (33, RECORD_HDR),
        (36, RECORD_HDR + 50),
        (39, RECORD_HDR + 99),
        (50, RECORD_HDR + 10),
        (1, RECORD_HDR + 1),
    ];
    for (i, &(seq, at)) in spots.iter().enumerate() {
        let (path, hl) = fifty(dir.path());
        flip(&path, hl + (seq - 1) * rl + at, (i % 8) as u8);
        let (seqs, st) = scan_all(&path);
        let want: Vec<u64> = (1..=50).filter(|&s| s != seq).collect();
        assert_eq!(seqs, want, "seq {seq} byte {at}");
        assert_eq!((st.corrupt, st.torn), (1, 0), "seq {seq} byte {at}");
        // The live copy path and read_at agree.
        let ro = RingReader::open_readonly(&path).unwrap();
        let mut out = RecordBuf::new();
        let st = ro.copy_range(Start::Oldest, End::HEAD, |_| true, &mut out);
        assert_eq!(out.iter().map(|v| v.seq()).collect::<Vec<_>>(), want);
        assert_eq!(st.corrupt, 1);
        let mut buf = Vec::new();
        let pos = (seq - 1) * rl;
        assert!(ro.read_at(RecordPos { pos, seq }, &mut buf).is_err());
        assert!(buf.is_empty());
    }
    // Two neighbouring damaged headers: their places are lost: torn.
    let (path, hl) = fifty(dir.path());
    flip(&path, hl + 9 * rl + R_TS, 1);
    flip(&path, hl + 10 * rl + R_TS, 1);
    let (seqs, st) = scan_all(&path);
    assert_eq!(seqs.len(), 48);
    assert_eq!((st.corrupt, st.torn), (0, 2));
    // Neighbouring damaged bytes with intact headers: each one located, each corrupt.
    let (path, hl) = fifty(dir.path());
    for s in 20..25u64 {
        flip(&path, hl + (s - 1) * rl + RECORD_HDR + 7, 4);
    }
    let (seqs, st) = scan_all(&path);
    assert_eq!(seqs.len(), 45);
    assert_eq!((st.corrupt, st.torn), (5, 0));
}

/// Writes `v` (little-endian) at `off` of the file.
fn poke(path: &Path, off: u64, v: &[u8]) {
    use std::os::unix::fs::FileExt;
    let f = OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(v, off).unwrap();
}

/// Recomputes the file header's CRC (a damaged header that lies consistently).
fn reseal(path: &Path) {
    use std::os::unix::fs::FileExt;
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut h = [0u8; 64];
    f.read_exact_at(&mut h, 0).unwrap();
    f.write_all_at(&crc32c::crc32c(&h).to_le_bytes(), HDR_CHECK as u64)
        .unwrap();
}

#[test]
fn damaged_files_are_refused_with_the_reason_before_mapping() {
    let dir = tempfile::tempdir().unwrap();
    let err = |p: &Path| {
        let e = RingReader::open_readonly(p).unwrap_err();
        let s = e.to_string();
        assert!(s.starts_with(&format!("{}: ", p.display())), "{s}");
        assert!(!s.contains('\n'));
        assert_eq!(e.path(), p);
        e.reason()
    };
    // Another layout version: both named.
    let (p, _) = fifty(dir.path());
    poke(&p, HDR_VERSION as u64, &1u32.to_le_bytes());
    assert_eq!(
        err(&p),
        "ring layout version 1, this build reads version 2 only"
    );
    poke(&p, HDR_VERSION as u64, &7u32.to_le_bytes());
    assert!(err(&p).contains("version 7"));
    // A flipped bit in the file header.
    let (p, _) = fifty(dir.path());
    flip(&p, HDR_DATA_LEN as u64 + 1, 3);
    assert!(err(&p).contains("damaged file header"), "{}", err(&p));
    // Truncated: shorter than its header says, and shorter than a header.
    let (p, _) = fifty(dir.path());
    let len = std::fs::metadata(&p).unwrap().len();
    OpenOptions::new()
        .write(true)
        .open(&p)
        .unwrap()
        .set_len(len - 4096)
        .unwrap();
    assert_eq!(
        err(&p),
        format!(
            "truncated: file is {} bytes, its header says {len}",
            len - 4096
        )
    );
    OpenOptions::new()
        .write(true)
        .open(&p)
        .unwrap()
        .set_len(100)
        .unwrap();
    assert!(
        err(&p).contains("truncated: file is 100 bytes"),
        "{}",
        err(&p)
    );
    std::fs::write(&p, b"SML").unwrap();
    assert!(
        err(&p).contains("truncated: file is 3 bytes"),
        "{}",
        err(&p)
    );
    std::fs::write(&p, b"").unwrap();
    assert!(
        err(&p).contains("truncated: file is 0 bytes"),
        "{}",
        err(&p)
    );
    // Longer than its header says.
    let (p, _) = fifty(dir.path());
    OpenOptions::new()
        .write(true)
        .open(&p)
        .unwrap()
        .set_len(len + 8)
        .unwrap();
    assert!(err(&p).contains("its header says"), "{}", err(&p));
    // Geometry that lies consistently (CRC recomputed): data_len past the file.
    let (p, _) = fifty(dir.path());
    poke(&p, HDR_DATA_LEN as u64, &u64::MAX.to_le_bytes());
    reseal(&p);
    assert!(err(&p).contains("inconsistent header"), "{}", err(&p));
    // Head and tail that cannot be.
    for (head, tail) in [(0u64, 8u64), (!7u64, 0), (4, 0)] {
        let (p, _) = fifty(dir.path());
        poke(&p, HDR_HEAD as u64, &head.to_le_bytes());
        poke(&p, HDR_TAIL as u64, &tail.to_le_bytes());
        assert!(err(&p).contains("inconsistent head"), "{}", err(&p));
    }
    // A writer replaces a ring it cannot read.
    let (p, _) = fifty(dir.path());
    poke(&p, HDR_VERSION as u64, &1u32.to_le_bytes());
    let cfg = RingConfig {
        size_bytes: 64 * 1024,
        snaplen: 256,
        shard: 3,
    };
    let (_, how) = EvidenceRing::open_or_create(&p, &cfg).unwrap();
    assert_eq!(how, Opened::Created);
}

#[test]
fn rejects_bad_files_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("x.ring");
    std::fs::write(&p, vec![7u8; 8192]).unwrap();
    let e = RingReader::open_readonly(&p).unwrap_err().to_string();
    assert!(e.contains("x.ring") && e.contains("bad magic"), "{e}");
    assert!(!e.contains('\n'));
    let e = EvidenceRing::create(
        &dir.path().join("y.ring"),
        &RingConfig {
            size_bytes: 1000,
            snaplen: 100,
            shard: 0,
        },
    )
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("y.ring") && e.contains("data area"), "{e}");
}

#[test]
fn second_writer_is_refused_and_resume_keeps_records() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.ring");
    let cfg = RingConfig {
        size_bytes: 64 * 1024,
        snaplen: 256,
        shard: 0,
    };
    let mut r = EvidenceRing::create(&path, &cfg).unwrap();
    for i in 1..=10u64 {
        r.append(i, 80, LinkType::Ethernet, 0, &frame(i, 80));
    }
    let e = EvidenceRing::open_or_create(&path, &cfg).err().unwrap();
    assert!(matches!(e, RingError::Locked { .. }), "{e}");
    drop(r);
    let (mut r, how) = EvidenceRing::open_or_create(&path, &cfg).unwrap();
    assert_eq!(
        how,
        Opened::Resumed {
            records: 10,
            torn: 0,
            corrupt: 0,
        }
    );
    assert_eq!(r.append(100, 80, LinkType::Ethernet, 0, &frame(11, 80)), 11);
    // This run's reader sees only this run's record; a scan sees all.
    let mut out = RecordBuf::new();
    r.reader()
        .copy_range(Start::Oldest, End::HEAD, |_| true, &mut out);
    assert_eq!(out.iter().map(|v| v.seq()).collect::<Vec<_>>(), vec![11]);
    let mut n = 0;
    r.reader().scan(|_| n += 1);
    assert_eq!(n, 11);
}

/// A new ring over an old one is a new file: a reader of the old one (recover) keeps its
/// whole mapping and reads every record; no temporary is left, a stale one is removed.
#[test]
fn create_replaces_the_file_and_never_shortens_a_mapped_one() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = fifty(dir.path());
    let old = RingReader::open_readonly(&path).unwrap();
    let stale = dir.path().join(".r.ring.abc123.tmp");
    std::fs::write(&stale, b"left by a killed creation").unwrap();
    let cfg = RingConfig {
        size_bytes: 32 * 1024,
        snaplen: 128,
        shard: 3,
    };
    let mut new = EvidenceRing::create(&path, &cfg).unwrap();
    new.append(1, 60, LinkType::Ethernet, 0, &frame(1, 60));
    // The old mapping still holds its 50 records, whole (a shortened file would SIGBUS).
    let (mut n, st) = (
        0u64,
        old.scan(|v| assert_eq!(v.data, &frame(v.seq(), 100)[..])),
    );
    old.scan(|_| n += 1);
    assert_eq!((n, st.corrupt, st.torn), (50, 0, 0));
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 32 * 1024);
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["r.ring"]);
    // Still one writer at a time.
    assert!(matches!(
        EvidenceRing::create(&path, &cfg),
        Err(RingError::Locked { .. })
    ));
}

/// `check` is the standard CRC-32C (checked with the independent `crc32c` crate) of the
/// stored bytes, continuing from the high half of the keyed header hash, for every length
/// the CRC code has a path for (0 to 600 bytes, then a frame of snaplen).
#[test]
fn check_is_crc32c_of_the_bytes_from_the_header_hash() {
    let dir = tempfile::tempdir().unwrap();
    let mut r = small(dir.path(), 1 << 20, 2048);
    let lens: Vec<usize> = (0..=600).chain([1500, 2048]).collect();
    for (i, &len) in lens.iter().enumerate() {
        let f = frame(i as u64, len);
        r.append(
            i as u64 * 3,
            len as u32,
            LinkType::Ethernet,
            i as u64 * 11,
            &f,
        );
    }
    let ro = r.reader();
    let map = &*ro.map;
    let mut pos = 0u64;
    for (i, &len) in lens.iter().enumerate() {
        let h = map.read_header(pos).expect("valid header");
        let want_h = header_hash(
            map.layout.salt,
            i as u64 + 1,
            i as u64 * 3,
            i as u64 * 11,
            len as u32,
            len as u32,
            1,
        );
        assert_eq!(h.hash, want_h);
        let want = crc32c::crc32c_append((want_h >> 32) as u32, &frame(i as u64, len));
        assert_eq!(h.check, want, "len {len}");
        pos += record_len(len as u32);
    }
}
