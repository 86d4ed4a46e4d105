//! The state directory: where a sensor keeps `alerts.jsonl`, `evidence/`, `ring/` (the
//! per-shard evidence rings) and `models/` (HST checkpoints).
//!
//! Which directory, first match wins:
//! 1. `--state-dir DIR`;
//! 2. `$STATE_DIRECTORY` (systemd sets it for a unit with `StateDirectory=streamml`; the
//!    first entry if it lists several);
//! 3. `/var/lib/streamml` when running as root under systemd (`$INVOCATION_ID` set) —
//!    the service case without `StateDirectory=`;
//! 4. `$XDG_DATA_HOME/streamml` (if set and absolute);
//! 5. `$HOME/.local/share/streamml`.
//!
//! A root shell without systemd is a user like any other (case 4/5: `/root/.local/...`),
//! so running the sensor by hand never writes into the service's directory by accident.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The service's default.
pub const SERVICE_STATE_DIR: &str = "/var/lib/streamml";

/// A state directory that exists, with its subdirectories.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateDir {
    root: PathBuf,
}

/// One-line errors naming the directory.
#[derive(Debug, thiserror::Error)]
pub enum StateDirError {
    #[error("cannot create state directory {path}: {source}")]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no state directory: HOME is not set; use --state-dir DIR")]
    NoHome,
    #[error("state directory {path} is in use by another streamml-sensor{holder}: its evidence rings would be overwritten; give this run its own --state-dir")]
    InUse { path: PathBuf, holder: String },
}

/// Held while a sensor (live or replay) writes into a state directory: an exclusive
/// `flock` on `<dir>/lock`, released when dropped or when the process dies (kill -9
/// included, so a crashed sensor never leaves a stale lock). `evidence recover` only
/// reads and does not take it.
#[derive(Debug)]
pub struct StateLock {
    _file: std::fs::File,
}

/// Resolves the state directory from the process environment (see the module doc).
pub fn resolve(override_dir: Option<&Path>) -> Result<PathBuf, StateDirError> {
    resolve_with(
        override_dir,
        |k| std::env::var_os(k),
        nix::unistd::geteuid().is_root(),
    )
}

/// [`resolve`] with the environment and root-ness given (for tests).
pub fn resolve_with(
    override_dir: Option<&Path>,
    env: impl Fn(&str) -> Option<OsString>,
    is_root: bool,
) -> Result<PathBuf, StateDirError> {
    if let Some(d) = override_dir {
        return Ok(d.to_path_buf());
    }
    let nonempty = |k: &str| env(k).filter(|v| !v.is_empty());
    if let Some(sd) = nonempty("STATE_DIRECTORY") {
        let s = sd.to_string_lossy().into_owned();
        let first = s.split(':').next().unwrap_or("").to_string();
        if !first.is_empty() {
            return Ok(PathBuf::from(first));
        }
    }
    if is_root && nonempty("INVOCATION_ID").is_some() {
        return Ok(PathBuf::from(SERVICE_STATE_DIR));
    }
    if let Some(x) = nonempty("XDG_DATA_HOME") {
        let p = PathBuf::from(x);
        if p.is_absolute() {
            return Ok(p.join("streamml"));
        }
    }
    match nonempty("HOME") {
        Some(h) => Ok(PathBuf::from(h).join(".local/share/streamml")),
        None => Err(StateDirError::NoHome),
    }
}

fn mkdir(p: &Path) -> Result<(), StateDirError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o750)
        .create(p)
        .map_err(|source| StateDirError::Create {
            path: p.to_path_buf(),
            source,
        })?;
    // `create_dir_all` succeeds on an existing non-directory in some races; check.
    if !p.is_dir() {
        return Err(StateDirError::Create {
            path: p.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::AlreadyExists, "not a directory"),
        });
    }
    Ok(())
}

impl StateDir {
    /// Creates `root` and `ring/`, `evidence/`, `models/` (and an empty `alerts.jsonl` if
    /// there is none). The error names the directory (or file) that failed.
    pub fn create(root: &Path) -> Result<StateDir, StateDirError> {
        mkdir(root)?;
        for sub in ["ring", "evidence", "models"] {
            mkdir(&root.join(sub))?;
        }
        let alerts = root.join("alerts.jsonl");
        std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&alerts)
            .map_err(|source| StateDirError::Create {
                path: alerts.clone(),
                source,
            })?;
        Ok(StateDir {
            root: root.to_path_buf(),
        })
    }

    /// [`Self::create`] for a sensor that will write into it: creates `root`, takes its
    /// lock ([`Self::lock`]) and only then the rest, so a directory in use is not touched.
    pub fn create_locked(root: &Path) -> Result<(StateDir, StateLock), StateDirError> {
        mkdir(root)?;
        let lock = StateDir::existing(root).lock()?;
        Ok((StateDir::create(root)?, lock))
    }

    /// Takes the directory's lock (see [`StateLock`]) and writes this process's PID into
    /// the lock file, so that a second sensor told to use the same directory stops with
    /// an error naming the holder instead of overwriting its rings.
    pub fn lock(&self) -> Result<StateLock, StateDirError> {
        use std::io::{Read, Seek, Write};
        let path = self.root.join("lock");
        let create = |source| StateDirError::Create {
            path: path.clone(),
            source,
        };
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(create)?;
        match f.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut pid = String::new();
                let _ = f.read_to_string(&mut pid);
                let pid = pid.trim();
                let holder = if pid.is_empty() {
                    String::new()
                } else {
                    format!(" (pid {pid})")
                };
                return Err(StateDirError::InUse {
                    path: self.root.clone(),
                    holder,
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(create(e)),
        }
        // Ours now: record who holds it (best effort; the lock is what counts).
        let _ = f.set_len(0);
        let _ = f.rewind();
        let _ = writeln!(f, "{}", std::process::id());
        Ok(StateLock { _file: f })
    }

    /// An existing state directory, not created or checked (for readers such as
    /// `evidence recover`).
    pub fn existing(root: &Path) -> StateDir {
        StateDir {
            root: root.to_path_buf(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn alerts_path(&self) -> PathBuf {
        self.root.join("alerts.jsonl")
    }
    pub fn evidence_dir(&self) -> PathBuf {
        self.root.join("evidence")
    }
    pub fn ring_dir(&self) -> PathBuf {
        self.root.join("ring")
    }
    pub fn models_dir(&self) -> PathBuf {
        self.root.join("models")
    }
    /// `ring/shard-<n>.ring`
    pub fn ring_path(&self, shard: usize) -> PathBuf {
        self.ring_dir().join(format!("shard-{shard}.ring"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<OsString> + 'a {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| OsString::from(v))
        }
    }

    #[test]
    fn precedence() {
        let all = [
            ("STATE_DIRECTORY", "/run/sd/streamml:/other"),
            ("INVOCATION_ID", "abc"),
            ("XDG_DATA_HOME", "/x/data"),
            ("HOME", "/home/u"),
        ];
        let o = Path::new("/o");
        assert_eq!(resolve_with(Some(o), env(&all), true).unwrap(), o);
        assert_eq!(
            resolve_with(None, env(&all), false).unwrap(),
            Path::new("/run/sd/streamml")
        );
        assert_eq!(
            resolve_with(None, env(&all[1..]), true).unwrap(),
            Path::new(SERVICE_STATE_DIR)
        );
        assert_eq!(
            resolve_with(None, env(&all[1..]), false).unwrap(),
            Path::new("/x/data/streamml")
        );
        assert_eq!(
            resolve_with(None, env(&all[2..]), true).unwrap(),
            Path::new("/x/data/streamml")
        );
        let rel = [("XDG_DATA_HOME", "rel"), ("HOME", "/home/u")];
        assert_eq!(
            resolve_with(None, env(&rel), false).unwrap(),
            Path::new("/home/u/.local/share/streamml")
        );
        let e = resolve_with(None, env(&[]), false).unwrap_err().to_string();
        assert!(e.contains("--state-dir"), "{e}");
    }

    #[test]
    fn creates_layout_and_names_the_failing_directory() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("a/b/state");
        let sd = StateDir::create(&root).unwrap();
        for p in [sd.ring_dir(), sd.evidence_dir(), sd.models_dir()] {
            assert!(p.is_dir());
        }
        assert!(sd.alerts_path().is_file());
        assert_eq!(sd.ring_path(2), root.join("ring/shard-2.ring"));
        // A regular file in the way.
        let f = dir.path().join("file");
        std::fs::write(&f, b"x").unwrap();
        let e = StateDir::create(&f.join("state")).unwrap_err().to_string();
        assert!(e.starts_with("cannot create state directory"), "{e}");
        assert!(e.contains(&*f.join("state").to_string_lossy()), "{e}");
        assert!(!e.contains('\n'));
    }
}
