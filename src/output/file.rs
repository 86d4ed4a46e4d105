//! Output files that can only ever appear whole, and never where they would destroy
//! something.
//!
//! - The path must be a regular file or not exist yet: a device, a FIFO, a socket or a
//!   directory is refused (as root, replacing `/dev/null` with a file would break the box).
//!   A symbolic link is refused too, deliberately: renaming over it would replace the link,
//!   not the file it points to, which is never what was meant. The error says so.
//! - It must not be one of the run's inputs (`flows x.pcap -o x.pcap`).
//! - Bytes go to an anonymous file in the target directory (`O_TMPFILE`): nothing is left
//!   behind by a crash or `kill -9`. At commit the file is linked under a unique name and
//!   renamed over the target, so a reader sees the old file or the whole new one, and two
//!   runs writing one path each leave a whole file (the later rename wins). Where the file
//!   system has no `O_TMPFILE`, a uniquely named temporary is used instead and removed on
//!   every exit path but SIGKILL.
//! - [`check_output`] can be called before a run starts, so that an unusable path fails
//!   before the first packet.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Why an output path cannot be used, or writing it failed.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("{path}: is {what}; outputs must be regular files")]
    NotRegular { path: PathBuf, what: &'static str },
    #[error("{path}: is a symbolic link; give the path of the file itself (a link would be replaced, not followed)")]
    Symlink { path: PathBuf },
    #[error("{path}: is the input {input}; the output would destroy it")]
    IsInput { path: PathBuf, input: PathBuf },
    #[error("{path}: directory {dir} does not exist")]
    NoDir { path: PathBuf, dir: PathBuf },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> OutputError + '_ {
    move |source| OutputError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The directory an output goes to ("." for a bare file name).
fn dir_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Checks that `path` can take an output: a regular file or nothing yet, not a link, not
/// one of `inputs`, in an existing directory.
pub fn check_output(path: &Path, inputs: &[&Path]) -> Result<(), OutputError> {
    match std::fs::symlink_metadata(path) {
        Ok(m) => {
            let t = m.file_type();
            let what = if t.is_symlink() {
                return Err(OutputError::Symlink {
                    path: path.to_path_buf(),
                });
            } else if t.is_dir() {
                "a directory"
            } else if t.is_char_device() {
                "a character device"
            } else if t.is_block_device() {
                "a block device"
            } else if t.is_fifo() {
                "a FIFO"
            } else if t.is_socket() {
                "a socket"
            } else {
                ""
            };
            if !what.is_empty() {
                return Err(OutputError::NotRegular {
                    path: path.to_path_buf(),
                    what,
                });
            }
            for input in inputs {
                if let Ok(im) = std::fs::metadata(input) {
                    if im.dev() == m.dev() && im.ino() == m.ino() {
                        return Err(OutputError::IsInput {
                            path: path.to_path_buf(),
                            input: input.to_path_buf(),
                        });
                    }
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let dir = dir_of(path);
            if !dir.is_dir() {
                return Err(OutputError::NoDir {
                    path: path.to_path_buf(),
                    dir,
                });
            }
        }
        Err(e) => return Err(io(path)(e)),
    }
    Ok(())
}

enum Tmp {
    /// `O_TMPFILE`: nameless until committed.
    Anonymous,
    /// A uniquely named temporary, removed on drop unless committed.
    Named(tempfile::TempPath),
}

/// An output being written; see the module doc. Dropping it without [`OutputFile::commit`]
/// leaves the target as it was.
pub struct OutputFile {
    dst: PathBuf,
    dir: PathBuf,
    tmp: Tmp,
    /// Buffered writer of the temporary.
    pub w: BufWriter<File>,
}

impl OutputFile {
    /// Checks `dst` ([`check_output`]) and opens the temporary in its directory.
    pub fn create(dst: &Path, inputs: &[&Path]) -> Result<OutputFile, OutputError> {
        check_output(dst, inputs)?;
        let dir = dir_of(dst);
        let anon = OpenOptions::new()
            .write(true)
            .mode(0o666)
            .custom_flags(libc::O_TMPFILE)
            .open(&dir);
        let (file, tmp) = match anon {
            Ok(f) => (f, Tmp::Anonymous),
            // No O_TMPFILE on this file system (or kernel): a named temporary.
            Err(_) => {
                let name = dst
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let t = tempfile::Builder::new()
                    .prefix(&format!(".{name}."))
                    .suffix(".tmp")
                    .tempfile_in(&dir)
                    .map_err(io(dst))?;
                let (f, p) = t.into_parts();
                (f, Tmp::Named(p))
            }
        };
        Ok(OutputFile {
            dst: dst.to_path_buf(),
            dir,
            tmp,
            w: BufWriter::with_capacity(1 << 20, file),
        })
    }

    /// Writes what is buffered and puts the file in place of the target, atomically (not
    /// fsynced: the rename already means no reader ever sees a partial file; durability
    /// across a power cut is not worth it for outputs that can be regenerated).
    pub fn commit(self) -> Result<(), OutputError> {
        let OutputFile { dst, dir, tmp, w } = self;
        let file = w.into_inner().map_err(|e| io(&dst)(e.into_error()))?;
        match tmp {
            Tmp::Named(p) => {
                p.persist(&dst).map_err(|e| io(&dst)(e.error))?;
            }
            Tmp::Anonymous => {
                // Link the nameless file under a unique name, then rename it over the
                // target (linkat cannot replace an existing name).
                let fd_path = PathBuf::from(format!(
                    "/proc/self/fd/{}",
                    std::os::fd::AsRawFd::as_raw_fd(&file)
                ));
                let mut n = 0u32;
                let tmp_name = loop {
                    let name = dir.join(format!(
                        ".{}.{}.{n}.tmp",
                        dst.file_name()
                            .map(|x| x.to_string_lossy().into_owned())
                            .unwrap_or_default(),
                        std::process::id()
                    ));
                    match nix::unistd::linkat(
                        None,
                        fd_path.as_path(),
                        None,
                        name.as_path(),
                        nix::fcntl::AtFlags::AT_SYMLINK_FOLLOW,
                    ) {
                        Ok(()) => break name,
                        Err(nix::errno::Errno::EEXIST) if n < 1000 => n += 1,
                        Err(e) => return Err(io(&dst)(std::io::Error::from(e))),
                    }
                };
                if let Err(e) = std::fs::rename(&tmp_name, &dst) {
                    let _ = std::fs::remove_file(&tmp_name);
                    return Err(io(&dst)(e));
                }
            }
        }
        drop(file);
        Ok(())
    }
}

impl Write for OutputFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.w.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.w.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_or_nothing_and_refusals() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("out.csv");
        std::fs::write(&p, "old\n").unwrap();
        let mut f = OutputFile::create(&p, &[]).unwrap();
        f.w.write_all(b"new\n").unwrap();
        // not committed yet: the old file is what a reader sees
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "old\n");
        drop(f);
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "old\n");
        let mut f = OutputFile::create(&p, &[]).unwrap();
        f.w.write_all(b"new\n").unwrap();
        f.commit().unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "new\n");
        // nothing left beside it
        let names: Vec<_> = std::fs::read_dir(d.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
        // refusals
        let e = OutputFile::create(d.path(), &[]).err().unwrap().to_string();
        assert!(
            e.ends_with("is a directory; outputs must be regular files"),
            "{e}"
        );
        let e = check_output(Path::new("/dev/null"), &[])
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "/dev/null: is a character device; outputs must be regular files"
        );
        let link = d.path().join("link.csv");
        std::os::unix::fs::symlink(&p, &link).unwrap();
        let e = check_output(&link, &[]).unwrap_err().to_string();
        assert!(e.contains("is a symbolic link"), "{e}");
        let e = check_output(&p, &[p.as_path()]).unwrap_err().to_string();
        assert!(e.contains("is the input"), "{e}");
        let e = check_output(&d.path().join("no/such/x.csv"), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("does not exist"), "{e}");
    }
}
