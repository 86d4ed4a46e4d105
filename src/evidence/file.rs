//! Evidence files: standard PCAP (pcap-file) inside a zstd stream, written to a hidden
//! temporary name in the target directory and moved to the final name only when complete
//! (fsync'd, then `renameat2(RENAME_NOREPLACE)`): a reader never sees a half file under a
//! final name, and an existing file is never replaced. `zstd -dc x.pcap.zst | tshark -r -`
//! reads the result.

use std::fs::{File, OpenOptions};
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::time::Duration;

use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use pcap_file::{DataLink, Endianness, TsResolution};

use super::ring::RecordView;

/// Timestamp resolution of the PCAP inside.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum TsRes {
    Micro,
    /// Nanosecond PCAP (magic a1b23c4d): no rounding of packet times.
    #[default]
    Nano,
}

/// How evidence files are written.
#[derive(Clone, Copy, Debug)]
pub struct FileConfig {
    pub ts_res: TsRes,
    /// zstd level (1..=19; 3 is zstd's default).
    pub zstd_level: i32,
    /// fsync each file before it gets its final name.
    pub fsync: bool,
}

impl Default for FileConfig {
    fn default() -> Self {
        FileConfig {
            ts_res: TsRes::Nano,
            zstd_level: 3,
            fsync: true,
        }
    }
}

type Inner = PcapWriter<zstd::stream::write::Encoder<'static, BufWriter<File>>>;

/// A `.pcap.zst` being written. Dropping it without [`PcapZstWriter::finish`] removes the
/// temporary file.
pub struct PcapZstWriter {
    inner: Option<Inner>,
    tmp: PathBuf,
    dest: PathBuf,
    cfg: FileConfig,
    snaplen: u32,
    packets: u64,
}

/// A finished file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finished {
    /// Final path (may carry a `-N` suffix if the wanted name existed).
    pub path: PathBuf,
    pub packets: u64,
    /// Compressed size in bytes.
    pub bytes: u64,
}

fn pcap_err(e: pcap_file::PcapError) -> std::io::Error {
    match e {
        pcap_file::PcapError::IoError(e) => e,
        other => std::io::Error::new(std::io::ErrorKind::InvalidData, other.to_string()),
    }
}

/// `dir/name` → `dir/.name.tmp` (hidden: retention and readers skip it).
pub fn tmp_name(dest: &Path) -> PathBuf {
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    dest.with_file_name(format!(".{name}.tmp"))
}

impl PcapZstWriter {
    /// Starts `dest` (via its temporary name) with link type `link` (LINKTYPE_ value).
    pub fn create(dest: &Path, link: u16, snaplen: u32, cfg: FileConfig) -> std::io::Result<Self> {
        let tmp = tmp_name(dest);
        let f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        let mut w = PcapZstWriter {
            inner: None,
            tmp,
            dest: dest.to_path_buf(),
            cfg,
            snaplen,
            packets: 0,
        };
        let enc = zstd::stream::write::Encoder::new(
            BufWriter::with_capacity(256 * 1024, f),
            cfg.zstd_level,
        )?;
        let header = PcapHeader {
            version_major: 2,
            version_minor: 4,
            ts_correction: 0,
            ts_accuracy: 0,
            snaplen,
            datalink: DataLink::from(u32::from(link)),
            ts_resolution: match cfg.ts_res {
                TsRes::Micro => TsResolution::MicroSecond,
                TsRes::Nano => TsResolution::NanoSecond,
            },
            endianness: Endianness::native(),
        };
        w.inner = Some(PcapWriter::with_header(enc, header).map_err(pcap_err)?);
        Ok(w)
    }

    /// Appends one packet.
    pub fn write(&mut self, ts_ns: u64, orig_len: u32, data: &[u8]) -> std::io::Result<()> {
        let inner = self.inner.as_mut().expect("not finished");
        let data = &data[..data.len().min(self.snaplen as usize)];
        let pkt = PcapPacket::new(
            Duration::from_nanos(ts_ns),
            orig_len.max(data.len() as u32),
            data,
        );
        inner.write_packet(&pkt).map_err(pcap_err)?;
        self.packets += 1;
        Ok(())
    }

    /// Appends a ring record.
    pub fn write_record(&mut self, v: &RecordView<'_>) -> std::io::Result<()> {
        self.write(v.meta.ts_ns, v.meta.orig_len, v.data)
    }

    pub fn packets(&self) -> u64 {
        self.packets
    }

    /// Completes the zstd frame, syncs, and moves the file to its final name (adding
    /// `-2`, `-3` ... before the extension if that name is taken).
    pub fn finish(mut self) -> std::io::Result<Finished> {
        let inner = self.inner.take().expect("not finished");
        let r = self.complete(inner);
        if r.is_err() {
            // publish_no_replace removes it on its own failures; everything before it
            // leaves the temporary file to us.
            let _ = std::fs::remove_file(&self.tmp);
        }
        r
    }

    fn complete(&self, inner: Inner) -> std::io::Result<Finished> {
        let enc = inner.into_writer();
        let buf = enc.finish()?;
        let f = buf.into_inner().map_err(|e| e.into_error())?;
        if self.cfg.fsync {
            f.sync_all()?;
        }
        let bytes = f.metadata()?.len();
        drop(f);
        let path = publish_no_replace(&self.tmp, &self.dest)?;
        if self.cfg.fsync {
            if let Some(dir) = path.parent() {
                if let Ok(d) = File::open(dir) {
                    let _ = d.sync_all();
                }
            }
        }
        Ok(Finished {
            path,
            packets: self.packets,
            bytes,
        })
    }
}

impl Drop for PcapZstWriter {
    fn drop(&mut self) {
        if self.inner.is_some() {
            self.inner = None;
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Renames `tmp` to `dest`, or to `dest` with `-N` inserted before `.pcap.zst` (or the
/// extension) when `dest` exists. Never replaces a file. Removes `tmp` on failure.
fn publish_no_replace(tmp: &Path, dest: &Path) -> std::io::Result<PathBuf> {
    use nix::fcntl::{renameat2, RenameFlags};
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let (stem, ext) = match name.find(".pcap") {
        Some(i) => (&name[..i], &name[i..]),
        None => (name.as_str(), ""),
    };
    let mut result = Err(std::io::Error::other("no attempt"));
    for n in 1..10_000u32 {
        let cand = if n == 1 {
            dest.to_path_buf()
        } else {
            dest.with_file_name(format!("{stem}-{n}{ext}"))
        };
        match renameat2(None, tmp, None, &cand, RenameFlags::RENAME_NOREPLACE) {
            Ok(()) => return Ok(cand),
            Err(nix::errno::Errno::EEXIST) => continue,
            Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOSYS) => {
                // Filesystem without RENAME_NOREPLACE: check, then rename (one writer
                // thread per state directory, so the window is ours alone).
                if cand.exists() {
                    continue;
                }
                match std::fs::rename(tmp, &cand) {
                    Ok(()) => return Ok(cand),
                    Err(e) => {
                        result = Err(e);
                        break;
                    }
                }
            }
            Err(e) => {
                result = Err(std::io::Error::from(e));
                break;
            }
        }
    }
    let _ = std::fs::remove_file(tmp);
    result
}

/// Keeps the characters that are safe in a file name (`[A-Za-z0-9_-.]`), others → `-`.
pub fn sanitize(s: &str) -> String {
    let t: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let t = t.trim_start_matches('.').to_string();
    if t.is_empty() {
        "x".into()
    } else {
        t
    }
}
