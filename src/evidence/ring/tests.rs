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
    assert_eq!(st.torn, 1);
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
            torn: 0
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
