//! Checkpoint container: versioned header, typed little-endian fields, CRC-32 trailer.
//!
//! ```text
//! offset  size  field
//! 0       8     magic  b"SMLHSTCK"
//! 8       4     format version (u32 LE), currently 1
//! 12      4     reserved, 0
//! 16      8     payload length in bytes (u64 LE)
//! 24      n     payload (see `ScaledHst::encode`)
//! 24+n    4     CRC-32 (IEEE) of bytes 0..24+n
//! ```
//! Every f64 is stored as its exact IEEE-754 bits, so a restored model continues bit for bit.
//! Decoding never panics: every length is checked against what is left, and the model-level
//! decoders re-validate every invariant (feature indices, counters, mass sums).

use std::path::{Path, PathBuf};

/// The 8 bytes every checkpoint starts with.
pub const MAGIC: [u8; 8] = *b"SMLHSTCK";
/// The only format version this build reads and writes.
pub const VERSION: u32 = 1;
const HEADER_LEN: usize = 24;
const TRAILER_LEN: usize = 4;

/// Why a checkpoint could not be read. Every message is one line.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("not a streamml HST checkpoint (bad magic)")]
    Magic,
    #[error("unsupported checkpoint version {found} (this build reads version {VERSION})")]
    Version { found: u32 },
    #[error("truncated checkpoint: {0}")]
    Truncated(String),
    #[error("checkpoint checksum mismatch (stored {stored:08x}, computed {computed:08x}): file is corrupted")]
    Checksum { stored: u32, computed: u32 },
    #[error("corrupt checkpoint: {0}")]
    Corrupt(String),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {inner}", path.display())]
    InFile {
        path: PathBuf,
        inner: Box<CheckpointError>,
    },
}

pub(crate) fn corrupt(msg: impl Into<String>) -> CheckpointError {
    CheckpointError::Corrupt(msg.into())
}

/// CRC-32 (IEEE 802.3, reflected, poly 0xEDB88320), as used by zlib and PNG.
pub fn crc32(data: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut t = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 {
                    0xedb8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
                k += 1;
            }
            t[i] = c;
            i += 1;
        }
        t
    };
    let mut c = !0u32;
    for &b in data {
        c = TABLE[((c ^ b as u32) & 0xff) as usize] ^ (c >> 8);
    }
    !c
}

/// Append-only little-endian encoder for a checkpoint payload.
#[derive(Default)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    pub fn new() -> Self {
        Writer { buf: Vec::new() }
    }
    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    pub fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    /// Exact bits: NaN payloads and -0.0 survive.
    pub fn f64(&mut self, v: f64) {
        self.u64(v.to_bits());
    }
    pub fn bool(&mut self, v: bool) {
        self.u8(v as u8);
    }
    pub fn str(&mut self, s: &str) {
        self.u32(s.len() as u32);
        self.buf.extend_from_slice(s.as_bytes());
    }
    pub fn len(&self) -> usize {
        self.buf.len()
    }
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Wraps the payload in header and trailer.
    pub fn finish(self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + self.buf.len() + TRAILER_LEN);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&(self.buf.len() as u64).to_le_bytes());
        out.extend_from_slice(&self.buf);
        let crc = crc32(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }
}

/// Bounds-checked little-endian decoder over a payload. Each read names what it reads, so a
/// short payload says which field was cut.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// Checks header, length and checksum, and returns a reader over the payload.
    pub fn open(file: &'a [u8]) -> Result<Reader<'a>, CheckpointError> {
        if file.len() < MAGIC.len() || file[..MAGIC.len()] != MAGIC {
            if file.len() < MAGIC.len() && MAGIC.starts_with(file) {
                return Err(CheckpointError::Truncated(format!(
                    "{} bytes, shorter than the header",
                    file.len()
                )));
            }
            return Err(CheckpointError::Magic);
        }
        if file.len() < HEADER_LEN {
            return Err(CheckpointError::Truncated(format!(
                "{} bytes, shorter than the {HEADER_LEN}-byte header",
                file.len()
            )));
        }
        let version = u32::from_le_bytes(file[8..12].try_into().expect("4 bytes"));
        if version != VERSION {
            return Err(CheckpointError::Version { found: version });
        }
        let payload_len = u64::from_le_bytes(file[16..24].try_into().expect("8 bytes"));
        let need = (HEADER_LEN as u64)
            .checked_add(payload_len)
            .and_then(|n| n.checked_add(TRAILER_LEN as u64))
            .ok_or_else(|| corrupt(format!("payload length {payload_len} overflows")))?;
        if (file.len() as u64) < need {
            return Err(CheckpointError::Truncated(format!(
                "header announces {need} bytes, file has {}",
                file.len()
            )));
        }
        if (file.len() as u64) > need {
            return Err(corrupt(format!(
                "{} bytes after the end of the checkpoint",
                file.len() as u64 - need
            )));
        }
        let body_end = file.len() - TRAILER_LEN;
        let stored = u32::from_le_bytes(file[body_end..].try_into().expect("4 bytes"));
        let computed = crc32(&file[..body_end]);
        if stored != computed {
            return Err(CheckpointError::Checksum { stored, computed });
        }
        Ok(Reader {
            buf: &file[HEADER_LEN..body_end],
            pos: 0,
        })
    }

    /// A reader over raw payload bytes (no header), for unit tests of the field decoders.
    pub fn over_payload(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf, pos: 0 }
    }

    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], CheckpointError> {
        if self.remaining() < n {
            return Err(corrupt(format!(
                "payload ends inside {what} (at byte {} of {})",
                self.pos,
                self.buf.len()
            )));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    pub fn u8(&mut self, what: &str) -> Result<u8, CheckpointError> {
        Ok(self.take(1, what)?[0])
    }
    pub fn u32(&mut self, what: &str) -> Result<u32, CheckpointError> {
        Ok(u32::from_le_bytes(
            self.take(4, what)?.try_into().expect("4 bytes"),
        ))
    }
    pub fn u64(&mut self, what: &str) -> Result<u64, CheckpointError> {
        Ok(u64::from_le_bytes(
            self.take(8, what)?.try_into().expect("8 bytes"),
        ))
    }
    pub fn f64(&mut self, what: &str) -> Result<f64, CheckpointError> {
        Ok(f64::from_bits(self.u64(what)?))
    }
    pub fn bool(&mut self, what: &str) -> Result<bool, CheckpointError> {
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(corrupt(format!("{what}: {v} is not a boolean"))),
        }
    }
    pub fn str(&mut self, what: &str) -> Result<String, CheckpointError> {
        let n = self.u32(what)? as usize;
        let b = self.take(n, what)?;
        String::from_utf8(b.to_vec()).map_err(|_| corrupt(format!("{what}: not UTF-8")))
    }
    /// A count of items that each need at least `min_item_bytes`: refuses counts the rest of
    /// the payload cannot hold, so a corrupt count never triggers a huge allocation.
    pub fn count(&mut self, what: &str, min_item_bytes: usize) -> Result<usize, CheckpointError> {
        let n = self.u32(what)? as usize;
        if n.saturating_mul(min_item_bytes.max(1)) > self.remaining() {
            return Err(corrupt(format!(
                "{what} = {n} does not fit in the {} bytes left",
                self.remaining()
            )));
        }
        Ok(n)
    }
    pub fn finish(self) -> Result<(), CheckpointError> {
        if self.remaining() != 0 {
            return Err(corrupt(format!(
                "{} unread bytes at the end of the payload",
                self.remaining()
            )));
        }
        Ok(())
    }
}

/// Reads a whole file; a missing or unreadable file is an `Io` error naming the path.
pub fn read_file(path: &Path) -> Result<Vec<u8>, CheckpointError> {
    std::fs::read(path).map_err(|source| CheckpointError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes `bytes` to `path` atomically: a temporary file beside it, fsync, rename. A crash
/// leaves either the old checkpoint or the new one, never a torn file.
pub fn write_file_atomic(path: &Path, bytes: &[u8]) -> Result<(), CheckpointError> {
    use std::io::Write;
    let io = |source| CheckpointError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut f = std::fs::File::create(&tmp).map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    f.sync_all().map_err(io)?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(io)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_check_value() {
        // The standard check value of CRC-32/ISO-HDLC.
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
    }

    #[test]
    fn header_errors_are_distinct() {
        let mut w = Writer::new();
        w.u32(7);
        let good = w.finish();
        assert!(Reader::open(&good).is_ok());

        assert!(matches!(
            Reader::open(b"PK\x03\x04zipzip"),
            Err(CheckpointError::Magic)
        ));
        assert!(matches!(
            Reader::open(b"SMLH"),
            Err(CheckpointError::Truncated(_))
        ));
        assert!(matches!(
            Reader::open(b""),
            Err(CheckpointError::Truncated(_))
        ));
        let cut = &good[..good.len() - 1];
        assert!(matches!(
            Reader::open(cut),
            Err(CheckpointError::Truncated(_))
        ));
        let mut v = good.clone();
        v[8] = 9;
        assert!(matches!(
            Reader::open(&v),
            Err(CheckpointError::Version { found: 9 })
        ));
        let mut v = good.clone();
        v[HEADER_LEN] ^= 1;
        assert!(matches!(
            Reader::open(&v),
            Err(CheckpointError::Checksum { .. })
        ));
        let mut v = good.clone();
        v.push(0);
        assert!(matches!(Reader::open(&v), Err(CheckpointError::Corrupt(_))));
    }

    #[test]
    fn reader_refuses_impossible_counts() {
        let mut w = Writer::new();
        w.u32(u32::MAX);
        let bytes = w.finish();
        let mut r = Reader::open(&bytes).unwrap();
        let e = r.count("n_things", 8).unwrap_err();
        assert!(e.to_string().contains("n_things"), "{e}");
    }
}
