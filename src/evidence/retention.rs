//! Retention of evidence files: the evidence directory is kept under a maximum number of
//! files and a maximum total size. What goes first is the oldest file of the profile that
//! holds the most files (by modification time, then name; the profile is read from the
//! file name, `TIME_PROFILE_ID.pcap.zst`): an alert storm in one profile deletes its own
//! oldest evidence, not the last files of the others (a flood's window alerts keep their
//! packets while its flows profile raises thousands). Deletions are counted. Stale temporary files (`.*.tmp`, left by a crash while a
//! file was being written) are removed when the directory is scanned.

use std::collections::VecDeque;
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

/// The evidence files we know about, oldest first.
#[derive(Debug)]
pub struct Retention {
    limits: RetentionLimits,
    files: VecDeque<(PathBuf, u64)>,
    total_bytes: u64,
    /// Files deleted to stay within the limits.
    pub deleted_files: u64,
    pub deleted_bytes: u64,
    /// Deletions that failed (the file is forgotten; it no longer counts against limits).
    pub delete_errors: u64,
    /// Stale temporary files removed at scan.
    pub stale_tmp_removed: u64,
}

/// The profile of an evidence file, from its name `TIME_PROFILE_ID.pcap.zst` (profile
/// names may hold `_`; TIME has none, ID is last); "" for other names.
fn profile_of(p: &Path) -> &str {
    let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let stem = name.strip_suffix(".pcap.zst").unwrap_or(name);
    match stem.split_once('_') {
        Some((_, rest)) => rest.rsplit_once('_').map_or("", |(profile, _)| profile),
        None => "",
    }
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
            deleted_files: 0,
            deleted_bytes: 0,
            delete_errors: 0,
            stale_tmp_removed: 0,
        }
    }

    /// Scans `dir` for existing evidence files (and removes stale temporaries), then
    /// applies the limits.
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
        for (_, _, p, len) in found {
            r.total_bytes += len;
            r.files.push_back((p, len));
        }
        r.enforce();
        Ok(r)
    }

    /// Records a new file (the newest) and applies the limits. Returns the error of the
    /// first failed deletion, if any (also counted).
    pub fn add(&mut self, path: PathBuf, len: u64) -> Option<std::io::Error> {
        self.total_bytes += len;
        self.files.push_back((path, len));
        self.enforce()
    }

    fn over(&self) -> bool {
        (self.limits.max_files > 0 && self.files.len() as u64 > self.limits.max_files)
            || (self.limits.max_bytes > 0 && self.total_bytes > self.limits.max_bytes)
    }

    /// Index of the next file to delete: the oldest file of the profile with the most
    /// files (ties: the profile whose oldest file is oldest).
    fn victim(&self) -> Option<usize> {
        let mut counts: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
        for (p, _) in &self.files {
            *counts.entry(profile_of(p)).or_insert(0) += 1;
        }
        let most = counts.values().copied().max()?;
        self.files
            .iter()
            .position(|(p, _)| counts.get(profile_of(p)) == Some(&most))
    }

    fn enforce(&mut self) -> Option<std::io::Error> {
        let mut first_err = None;
        while self.over() {
            let Some((p, len)) = self.victim().and_then(|i| self.files.remove(i)) else {
                break;
            };
            self.total_bytes -= len;
            match std::fs::remove_file(&p) {
                Ok(()) => {
                    self.deleted_files += 1;
                    self.deleted_bytes += len;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    self.delete_errors += 1;
                    if first_err.is_none() {
                        first_err = Some(std::io::Error::new(
                            e.kind(),
                            format!("deleting {}: {e}", p.display()),
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
        assert_eq!(r.deleted_files, 30);
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
        assert_eq!(r.deleted_files, 1);
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
        assert_eq!(r.deleted_files, 1);
        assert!(!d.join("a1.pcap.zst").exists());
        assert!(d.join("notes.txt").exists());
        std::fs::write(d.join("c.pcap.zst"), vec![0u8; 10]).unwrap();
        r.add(d.join("c.pcap.zst"), 10);
        assert_eq!(r.total_bytes(), 210);
    }
}
