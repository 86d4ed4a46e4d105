//! Retention of evidence files: the evidence directory is kept under a maximum number of
//! files and a maximum total size, and a storm cannot empty it of the other incidents'
//! evidence.
//!
//! Every file belongs to an *incident*, read from its name (so files left by a previous
//! run are attributed at start as well, no index to keep in step):
//!
//! - `TIME_PROFILE_ID.pcap.zst`: the first file of its own incident, whose key is
//!   `TIME_PROFILE_ID` (an incident's key is the name of its first line's file);
//! - `TIME_PROFILE_ID@INCTIME_INCPROFILE_INCID.pcap.zst`: a later alert's file
//!   (`anomaly_update`) of the incident `INCTIME_INCPROFILE_INCID`.
//!
//! (Profile names hold letters, digits, `_`, `-`, `.`: never `@`. A `-N` suffix that a name
//! collision added is not part of the key.) An incident's *owner* is the profile of its
//! first line (`INCPROFILE`).
//!
//! When over a limit, the file deleted first is, in this order:
//! 1. `superseded`: the oldest update file (`@` name) of an incident that has a newer
//!    update (an incident keeps the evidence of its first line and of its newest update
//!    as long as anything else can go: a storm of updates cannot delete the packets of
//!    the alert that opened the incident);
//! 2. `oldest`: the oldest file of the owner profile whose incidents hold the most files
//!    (ties: the profile whose oldest file is older). A storm of one profile's incidents
//!    deletes that profile's oldest incidents, not the newest evidence of the others'.
//!
//! Age is modification time, then name, for files found at start, then the order files
//! were added. Every deletion is counted by reason (plus `gone`: a file someone else
//! removed, and `delete_errors`: a deletion that failed, the file forgotten), so that
//! files found + files added = deleted by every reason + files kept. Stale temporary files
//! (`.*.tmp`, left by a crash while a file was being written) are removed when the
//! directory is scanned.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};

/// Limits; 0 means unlimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetentionLimits {
    pub max_bytes: u64,
    pub max_files: u64,
}

impl Default for RetentionLimits {
    fn default() -> Self {
        RetentionLimits {
            max_bytes: 10 << 30,
            max_files: 10_000,
        }
    }
}

/// Why a file was deleted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeleteReason {
    /// An older file of an incident that has a newer one.
    Superseded,
    /// The oldest file of the owner profile holding the most files.
    Oldest,
}

/// One evidence file.
#[derive(Debug)]
struct Entry {
    path: PathBuf,
    len: u64,
    /// Incident key (see the module doc).
    incident: String,
    /// An update's file (`@` name), not the file of the incident's first line.
    update: bool,
    /// The incident's owner profile.
    owner: String,
}

/// Deletions so far, by reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Deleted {
    pub superseded: u64,
    pub oldest: u64,
    /// Already removed by someone else when retention came to delete it.
    pub gone: u64,
    /// Deletions that failed (the file is forgotten; it no longer counts against limits).
    pub errors: u64,
    /// Bytes of the files deleted (superseded + oldest).
    pub bytes: u64,
}

impl Deleted {
    /// Files that left the list, whatever the reason.
    pub fn total(&self) -> u64 {
        self.superseded + self.oldest + self.gone + self.errors
    }
}

/// The evidence files we know about, oldest first.
#[derive(Debug)]
pub struct Retention {
    limits: RetentionLimits,
    files: VecDeque<Entry>,
    total_bytes: u64,
    /// Update files (`@` names) per incident key.
    updates: HashMap<String, usize>,
    /// Files per owner profile.
    per_owner: HashMap<String, usize>,
    pub deleted: Deleted,
    /// Evidence files found by the scan at start.
    pub found_at_start: u64,
    /// Stale temporary files removed at scan.
    pub stale_tmp_removed: u64,
}

/// The stem of an evidence file name without `.pcap.zst` and without a collision suffix
/// `-N`.
fn stem_of(name: &str) -> &str {
    let stem = name.strip_suffix(".pcap.zst").unwrap_or(name);
    match stem.rsplit_once('-') {
        Some((s, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => {
            // `TIME_PROFILE_ID-N`: only a suffix after the id's digits
            if s.rsplit_once('_')
                .is_some_and(|(_, id)| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()))
            {
                s
            } else {
                stem
            }
        }
        _ => stem,
    }
}

/// The profile of `TIME_PROFILE_ID` (profile names may hold `_`; TIME has none, ID is
/// last); "" for other names.
fn profile_in(key: &str) -> &str {
    match key.split_once('_') {
        Some((_, rest)) => rest.rsplit_once('_').map_or("", |(profile, _)| profile),
        None => "",
    }
}

/// The file's own profile, from `TIME_PROFILE_ID[@...].pcap.zst`.
#[cfg(test)]
fn profile_of(p: &Path) -> &str {
    let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let own = name.split('@').next().unwrap_or("");
    profile_in(stem_of(own))
}

/// (incident key, owner profile) of an evidence file, from its name.
pub fn incident_of(p: &Path) -> (String, String) {
    let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let key = match name.split_once('@') {
        Some((_, inc)) => stem_of(inc),
        None => stem_of(name),
    };
    (key.to_string(), profile_in(key).to_string())
}

/// Whether a file is an update's (`...@INCIDENT.pcap.zst`).
fn is_update(p: &Path) -> bool {
    p.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.contains('@'))
}

/// The name of an update's evidence file: `own` (`TIME_PROFILE_ID.pcap.zst`, maybe with a
/// `-N`) with the incident key appended after `@`.
pub fn update_name(own: &str, incident_key: &str) -> String {
    let stem = own.strip_suffix(".pcap.zst").unwrap_or(own);
    format!("{stem}@{incident_key}.pcap.zst")
}

/// Whether `name` is an evidence file (`*.pcap.zst`, not hidden).
pub fn is_evidence_name(name: &str) -> bool {
    name.ends_with(".pcap.zst") && !name.starts_with('.')
}

impl Retention {
    /// An empty list (the directory could not be scanned).
    pub fn new(limits: RetentionLimits) -> Retention {
        Retention {
            limits,
            files: VecDeque::new(),
            total_bytes: 0,
            updates: HashMap::new(),
            per_owner: HashMap::new(),
            deleted: Deleted::default(),
            found_at_start: 0,
            stale_tmp_removed: 0,
        }
    }

    /// Scans `dir` for existing evidence files (and removes stale temporaries), attributes
    /// each to its incident by name, then applies the limits.
    pub fn scan(dir: &Path, limits: RetentionLimits) -> std::io::Result<Retention> {
        let mut r = Retention::new(limits);
        let mut found = Vec::new();
        for e in std::fs::read_dir(dir)? {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            let Ok(md) = e.metadata() else { continue };
            if !md.is_file() {
                continue;
            }
            if name.starts_with('.') && name.ends_with(".tmp") {
                if std::fs::remove_file(e.path()).is_ok() {
                    r.stale_tmp_removed += 1;
                }
                continue;
            }
            if is_evidence_name(&name) {
                let mtime = md.modified().ok();
                found.push((mtime, name, e.path(), md.len()));
            }
        }
        found.sort();
        r.found_at_start = found.len() as u64;
        for (_, _, p, len) in found {
            r.push(p, len);
        }
        r.enforce();
        Ok(r)
    }

    fn entry(&mut self, path: PathBuf, len: u64) -> Entry {
        let (incident, owner) = incident_of(&path);
        let update = is_update(&path);
        self.total_bytes += len;
        if update {
            *self.updates.entry(incident.clone()).or_insert(0) += 1;
        }
        *self.per_owner.entry(owner.clone()).or_insert(0) += 1;
        Entry {
            path,
            len,
            incident,
            update,
            owner,
        }
    }

    fn push(&mut self, path: PathBuf, len: u64) {
        let e = self.entry(path, len);
        self.files.push_back(e);
    }

    fn forget(&mut self, i: usize) -> Option<Entry> {
        let e = self.files.remove(i)?;
        self.total_bytes -= e.len;
        let dec = |m: &mut HashMap<String, usize>, k: &String| {
            if let Some(n) = m.get_mut(k) {
                *n -= 1;
                if *n == 0 {
                    m.remove(k);
                }
            }
        };
        if e.update {
            dec(&mut self.updates, &e.incident);
        }
        dec(&mut self.per_owner, &e.owner);
        Some(e)
    }

    /// Records a new file (the newest) and applies the limits. Returns the error of the
    /// first failed deletion, if any (also counted).
    pub fn add(&mut self, path: PathBuf, len: u64) -> Option<std::io::Error> {
        self.push(path, len);
        self.enforce()
    }

    /// A file was renamed (attributed to another incident: `new`'s name says which). It
    /// keeps its place in age order. False if `old` is not known.
    pub fn renamed(&mut self, old: &Path, new: PathBuf) -> bool {
        let Some(i) = self.files.iter().rposition(|e| e.path == old) else {
            return false;
        };
        let Some(e) = self.forget(i) else {
            return false;
        };
        let e = self.entry(new, e.len);
        self.files.insert(i, e);
        true
    }

    /// Whether `path` is still kept.
    pub fn holds(&self, path: &Path) -> bool {
        self.files.iter().any(|e| e.path == path)
    }

    fn over(&self) -> bool {
        (self.limits.max_files > 0 && self.files.len() as u64 > self.limits.max_files)
            || (self.limits.max_bytes > 0 && self.total_bytes > self.limits.max_bytes)
    }

    /// Index of the next file to delete and why (see the module doc).
    fn victim(&self) -> Option<(usize, DeleteReason)> {
        // The oldest update of an incident with several updates is not its newest.
        if let Some(i) = self
            .files
            .iter()
            .position(|e| e.update && self.updates.get(&e.incident).copied().unwrap_or(0) > 1)
        {
            return Some((i, DeleteReason::Superseded));
        }
        let most = self.per_owner.values().copied().max()?;
        self.files
            .iter()
            .position(|e| self.per_owner.get(&e.owner) == Some(&most))
            .map(|i| (i, DeleteReason::Oldest))
    }

    fn enforce(&mut self) -> Option<std::io::Error> {
        let mut first_err = None;
        while self.over() {
            let Some((e, why)) = self
                .victim()
                .and_then(|(i, why)| self.forget(i).map(|e| (e, why)))
            else {
                break;
            };
            match std::fs::remove_file(&e.path) {
                Ok(()) => {
                    match why {
                        DeleteReason::Superseded => self.deleted.superseded += 1,
                        DeleteReason::Oldest => self.deleted.oldest += 1,
                    }
                    self.deleted.bytes += e.len;
                }
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => self.deleted.gone += 1,
                Err(err) => {
                    self.deleted.errors += 1;
                    if first_err.is_none() {
                        first_err = Some(std::io::Error::new(
                            err.kind(),
                            format!("deleting {}: {err}", e.path.display()),
                        ));
                    }
                }
            }
        }
        first_err
    }

    pub fn files(&self) -> usize {
        self.files.len()
    }

    pub fn total_bytes(&self) -> u64 {
        self.total_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A storm of one profile's files deletes that profile's oldest, not the other
    /// profiles' few files (which were older).
    #[test]
    fn a_storm_in_one_profile_keeps_the_others_evidence() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let mut r = Retention::new(RetentionLimits {
            max_bytes: 0,
            max_files: 10,
        });
        let mut add = |name: String| {
            std::fs::write(d.join(&name), b"x").unwrap();
            assert!(r.add(d.join(&name), 1).is_none());
        };
        for i in 0..3 {
            add(format!(
                "20260101T00000{i}.000000Z_traffic_win_{i}.pcap.zst"
            ));
        }
        for i in 3..40 {
            add(format!("20260101T0010{i:02}.000000Z_flows_{i}.pcap.zst"));
        }
        for i in 0..3 {
            assert!(d
                .join(format!(
                    "20260101T00000{i}.000000Z_traffic_win_{i}.pcap.zst"
                ))
                .exists());
        }
        // the flows profile keeps its 7 newest
        for i in 3..40 {
            let kept = d
                .join(format!("20260101T0010{i:02}.000000Z_flows_{i}.pcap.zst"))
                .exists();
            assert_eq!(kept, i >= 33, "flows file {i}");
        }
        assert_eq!(r.deleted.oldest, 30);
        assert_eq!(r.deleted.total(), 30);
        assert_eq!(profile_of(Path::new("T_a_b_c_7-2.pcap.zst")), "a_b_c");
        assert_eq!(profile_of(Path::new("a0.pcap.zst")), "");
    }

    #[test]
    fn oldest_go_first_by_count_and_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join(".old.pcap.zst.tmp"), b"x").unwrap();
        for i in 0..3 {
            std::fs::write(d.join(format!("a{i}.pcap.zst")), vec![0u8; 100]).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        std::fs::write(d.join("notes.txt"), b"keep").unwrap();
        let mut r = Retention::scan(
            d,
            RetentionLimits {
                max_bytes: 0,
                max_files: 3,
            },
        )
        .unwrap();
        assert_eq!(r.stale_tmp_removed, 1);
        assert_eq!(r.files(), 3);
        std::fs::write(d.join("b.pcap.zst"), vec![0u8; 100]).unwrap();
        assert!(r.add(d.join("b.pcap.zst"), 100).is_none());
        assert!(!d.join("a0.pcap.zst").exists());
        assert!(d.join("a1.pcap.zst").exists());
        assert_eq!(r.deleted.oldest, 1);
        // Byte limit: 250 bytes keeps two 100-byte files.
        let mut r = Retention::scan(
            d,
            RetentionLimits {
                max_bytes: 250,
                max_files: 0,
            },
        )
        .unwrap();
        assert_eq!(r.files(), 2);
        assert_eq!(r.deleted.oldest, 1);
        assert!(!d.join("a1.pcap.zst").exists());
        assert!(d.join("notes.txt").exists());
        std::fs::write(d.join("c.pcap.zst"), vec![0u8; 10]).unwrap();
        r.add(d.join("c.pcap.zst"), 10);
        assert_eq!(r.total_bytes(), 210);
    }
}

#[cfg(test)]
mod incident_tests {
    use super::*;

    #[test]
    fn names_say_the_incident() {
        let (k, o) = incident_of(Path::new("20260101T000001.000000Z_a_b_7-2.pcap.zst"));
        assert_eq!(
            (k.as_str(), o.as_str()),
            ("20260101T000001.000000Z_a_b_7", "a_b")
        );
        let (k, o) = incident_of(Path::new(
            "20260101T000009.000000Z_flows_12@20260101T000001.000000Z_traffic_7.pcap.zst",
        ));
        assert_eq!(
            (k.as_str(), o.as_str()),
            ("20260101T000001.000000Z_traffic_7", "traffic")
        );
        assert_eq!(
            profile_of(Path::new(
                "20260101T000009.000000Z_flows_12@20260101T000001.000000Z_traffic_7.pcap.zst"
            )),
            "flows"
        );
        // a profile name ending in -N digits is not a collision suffix
        assert_eq!(stem_of("T_a-1_7.pcap.zst"), "T_a-1_7");
        assert_eq!(
            update_name("T_f_9-2.pcap.zst", "T0_w_1"),
            "T_f_9-2@T0_w_1.pcap.zst"
        );
    }

    /// Older files of an incident with a newer one go first; then the oldest file of the
    /// owner profile with the most files; an incident's updates count for its owner (the
    /// profile of its first line), also after a restart (scan).
    #[test]
    fn superseded_first_then_owner_quota_and_the_scan_agrees() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let lim = RetentionLimits {
            max_bytes: 0,
            max_files: 6,
        };
        let mut r = Retention::new(lim);
        let add = |r: &mut Retention, name: &str| {
            std::fs::write(d.join(name), b"x").unwrap();
            assert!(r.add(d.join(name), 1).is_none());
            std::thread::sleep(std::time::Duration::from_millis(5));
        };
        let inc = "20260101T000001.000000Z_traffic_1";
        add(&mut r, &format!("{inc}.pcap.zst"));
        for i in 2..5 {
            add(
                &mut r,
                &format!("20260101T00000{i}.000000Z_flows_{i}@{inc}.pcap.zst"),
            );
        }
        // 4 files of one incident (owner traffic), then a storm of flows incidents
        for i in 10..20 {
            add(
                &mut r,
                &format!("20260101T0000{i}.000000Z_flows_{i}.pcap.zst"),
            );
        }
        let exists = |n: &str| d.join(n).exists();
        // the incident kept its first file and its newest update
        assert!(exists(&format!("{inc}.pcap.zst")));
        assert!(!exists(&format!(
            "20260101T000003.000000Z_flows_3@{inc}.pcap.zst"
        )));
        assert!(exists(&format!(
            "20260101T000004.000000Z_flows_4@{inc}.pcap.zst"
        )));
        assert_eq!(r.deleted.superseded, 2);
        // flows incidents: the newest four (traffic owns two files)
        for i in 10..20 {
            assert_eq!(
                exists(&format!("20260101T0000{i}.000000Z_flows_{i}.pcap.zst")),
                i >= 16,
                "{i}"
            );
        }
        assert_eq!(r.deleted.oldest, 6);
        assert_eq!(r.files(), 6);
        assert_eq!(r.deleted.total() + r.files() as u64, 14);
        // renaming a file into an incident: it now counts there
        let old = d.join("20260101T000019.000000Z_flows_19.pcap.zst");
        let new = d.join(update_name(
            "20260101T000019.000000Z_flows_19.pcap.zst",
            "20260101T000018.000000Z_flows_18",
        ));
        std::fs::rename(&old, &new).unwrap();
        assert!(r.renamed(&old, new.clone()));
        assert!(r.holds(&new));
        // a restart with a tighter limit, the files attributed by name: flows (4 files)
        // lose their oldest two, then the tie (2 and 2) goes to the older traffic file
        let r2 = Retention::scan(
            d,
            RetentionLimits {
                max_bytes: 0,
                max_files: 3,
            },
        )
        .unwrap();
        assert_eq!(r2.found_at_start, 6);
        assert_eq!(r2.deleted.superseded, 0);
        assert_eq!(r2.deleted.oldest, 3);
        assert!(!exists("20260101T000017.000000Z_flows_17.pcap.zst"));
        assert!(!exists(&format!("{inc}.pcap.zst")));
        assert!(exists("20260101T000018.000000Z_flows_18.pcap.zst"));
        assert!(new.exists());
        assert!(exists(&format!(
            "20260101T000004.000000Z_flows_4@{inc}.pcap.zst"
        )));
    }
}
