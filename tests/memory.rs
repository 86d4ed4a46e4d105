//! Memory is bounded by the flow-table capacity: once the table is full, the resident set
//! does not grow with the capture's length.

use std::process::Command;

#[allow(clippy::zombie_processes)] // reaped by wait4 below, which also gives its rusage
fn max_rss_kib(args: &[&str]) -> i64 {
    let child = Command::new(env!("CARGO_BIN_EXE_streamml-sensor"))
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawning streamml-sensor");
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: rusage is plain data filled by the kernel; pid is our own child.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
    assert_eq!(r, pid);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "status {status}"
    );
    ru.ru_maxrss
}

#[test]
fn rss_does_not_grow_with_capture_length_once_the_table_is_full() {
    let dir = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_streamml-sensor");
    let mut rss = vec![];
    for minutes in ["4", "16"] {
        let cap = dir.path().join(format!("b{minutes}.pcap"));
        let o = Command::new(bin)
            .args([
                "synth",
                "--preset",
                "benign",
                "--minutes",
                minutes,
                "--seed",
                "5",
                "-o",
                cap.to_str().unwrap(),
            ])
            .output()
            .unwrap();
        assert!(o.status.success());
        let out = dir.path().join("flows.csv");
        let r = max_rss_kib(&[
            "flows",
            cap.to_str().unwrap(),
            "--shards",
            "1",
            "--capacity",
            "20000",
            "--sort-buffer-mib",
            "8",
            "-o",
            out.to_str().unwrap(),
        ]);
        // The short capture must already fill the table (~100 new flows per second).
        rss.push(r);
        std::fs::remove_file(&cap).unwrap();
    }
    eprintln!("max RSS KiB: 4 min {} / 16 min {}", rss[0], rss[1]);
    // Four times the packets and flows: the resident set stays within 10% (+8 MiB slack
    // for allocator noise), because the table, the output buffer and the mapped window
    // of the capture are all bounded.
    assert!(rss[1] <= rss[0] + rss[0] / 10 + 8 * 1024, "{rss:?}");
}
