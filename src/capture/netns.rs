//! A private test network for `bench --generate`: two network namespaces joined by a veth
//! pair, the sensor's end in one and the generator's in the other, addresses from
//! 198.18.0.0/15 only, IPv6 off before link up (no RS/MLD frames to spoil exact counts),
//! static neighbours (no ARP). Made with `ip` (iproute2), every command bounded in time;
//! torn down in `Drop` (deleting the namespaces deletes the veth pair and any XDP
//! program on it), so also when the run fails or unwinds. A SIGKILL leaves the
//! namespaces behind: they are named `smbench<pid>s`/`p`, and `ip netns del` removes them.
#![allow(unsafe_code)] // setns(2) on the calling thread; the block has a SAFETY comment

use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The interface names inside the namespaces.
pub const SENSOR_IF: &str = "sens0";
pub const PEER_IF: &str = "peer0";
pub const SENSOR_ADDR: &str = "198.19.0.1";
pub const PEER_ADDR: &str = "198.18.0.1";
pub const SENSOR_MAC: &str = "02:53:4d:00:00:01";
pub const PEER_MAC: &str = "02:53:4d:00:00:02";

/// How long one `ip` command may take.
const CMD_TIMEOUT: Duration = Duration::from_secs(20);

/// Runs a command to completion (bounded), returning stdout; the error has its stderr.
pub fn run(cmd: &[&str]) -> Result<String, String> {
    let mut child = Command::new(cmd[0])
        .args(&cmd[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{}: {e}", cmd[0]))?;
    let end = Instant::now() + CMD_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if Instant::now() < end => std::thread::sleep(Duration::from_millis(5)),
            _ => {
                // Ours, by its PID (std's kill).
                let _ = child.kill();
                break None;
            }
        }
    };
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    match status {
        Some(s) if s.success() => Ok(String::from_utf8_lossy(&out.stdout).into_owned()),
        Some(s) => Err(format!(
            "{} failed ({s}): {}",
            cmd.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        None => Err(format!(
            "{} did not finish in {} s",
            cmd.join(" "),
            CMD_TIMEOUT.as_secs()
        )),
    }
}

/// Two namespaces and a veth pair between them; deleted on drop.
#[derive(Debug)]
pub struct VethLab {
    pub ns_sensor: String,
    pub ns_peer: String,
    pub queues: u32,
    created: Vec<String>,
}

impl VethLab {
    /// Creates the namespaces and the pair with `queues` RX and TX queues on both ends.
    pub fn create(queues: u32) -> Result<VethLab, String> {
        let base = format!("smbench{}", std::process::id());
        let mut lab = VethLab {
            ns_sensor: format!("{base}s"),
            ns_peer: format!("{base}p"),
            queues,
            created: Vec::new(),
        };
        // From here on, Drop deletes whatever got created.
        for ns in [lab.ns_sensor.clone(), lab.ns_peer.clone()] {
            run(&["ip", "netns", "add", &ns])?;
            lab.created.push(ns.clone());
            run(&[
                "ip",
                "netns",
                "exec",
                &ns,
                "sysctl",
                "-qw",
                "net.ipv6.conf.all.disable_ipv6=1",
                "net.ipv6.conf.default.disable_ipv6=1",
            ])?;
        }
        let q = queues.to_string();
        run(&[
            "ip",
            "link",
            "add",
            SENSOR_IF,
            "numrxqueues",
            &q,
            "numtxqueues",
            &q,
            "netns",
            &lab.ns_sensor,
            "type",
            "veth",
            "peer",
            "name",
            PEER_IF,
            "numrxqueues",
            &q,
            "numtxqueues",
            &q,
            "netns",
            &lab.ns_peer,
        ])?;
        for (ns, ifc, addr, mac) in [
            (&lab.ns_sensor, SENSOR_IF, SENSOR_ADDR, SENSOR_MAC),
            (&lab.ns_peer, PEER_IF, PEER_ADDR, PEER_MAC),
        ] {
            let _ = run(&[
                "ip",
                "netns",
                "exec",
                ns,
                "sysctl",
                "-qw",
                &format!("net.ipv6.conf.{ifc}.disable_ipv6=1"),
            ]);
            run(&[
                "ip",
                "-n",
                ns,
                "addr",
                "add",
                &format!("{addr}/15"),
                "dev",
                ifc,
            ])?;
            run(&["ip", "-n", ns, "link", "set", ifc, "address", mac])?;
            run(&["ip", "-n", ns, "link", "set", ifc, "up"])?;
        }
        for (ns, ifc, addr, mac) in [
            (&lab.ns_sensor, SENSOR_IF, PEER_ADDR, PEER_MAC),
            (&lab.ns_peer, PEER_IF, SENSOR_ADDR, SENSOR_MAC),
        ] {
            run(&[
                "ip",
                "-n",
                ns,
                "neigh",
                "replace",
                addr,
                "lladdr",
                mac,
                "dev",
                ifc,
                "nud",
                "permanent",
            ])?;
        }
        Ok(lab)
    }

    /// Moves the calling thread into the sensor's namespace (see [`enter`]).
    pub fn enter_sensor_ns(&self) -> std::io::Result<()> {
        enter(&self.ns_sensor)
    }

    /// A counter of the peer's interface (e.g. `tx_dropped`), from its sysfs statistics.
    pub fn peer_stat(&self, name: &str) -> Result<u64, String> {
        let out = run(&[
            "ip",
            "netns",
            "exec",
            &self.ns_peer,
            "cat",
            &format!("/sys/class/net/{PEER_IF}/statistics/{name}"),
        ])?;
        out.trim()
            .parse()
            .map_err(|_| format!("{PEER_IF} {name}: {out:?} is not a number"))
    }
}

/// Moves the calling thread into the named network namespace (`ip netns` names): the
/// threads it starts later are there too; the rest of the process stays where it was.
/// /sys is not remounted (a mount namespace is per process): what the sensor reads there
/// about the interface (its MTU) falls back to defaults.
pub fn enter(ns: &str) -> std::io::Result<()> {
    let f = std::fs::File::open(format!("/run/netns/{ns}"))?;
    // SAFETY: setns on a valid namespace fd, for this thread only.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

impl Drop for VethLab {
    fn drop(&mut self) {
        for ns in self.created.drain(..).rev() {
            let _ = run(&["ip", "netns", "del", &ns]);
        }
    }
}
