//! The narrow disk interface every durable structure of a shard (WAL segments, the page log,
//! superblocks, the vote file) is written through. Two implementations keep each other honest:
//! glommio DMA files (O_DIRECT over io_uring, crate `ballast-engine-glommio`) and the in-memory
//! simulator (`io::sim`), which can drop unsynced writes, tear the last write, corrupt reads,
//! add latency and fail on command. One conformance suite runs against both.
//!
//! Contract for implementers:
//! - `write_at` offsets and lengths are multiples of [`ALIGN`]; anything else is
//!   `IoError::Unaligned` (O_DIRECT would refuse it too). Reads may be unaligned.
//! - A write is durable only after a later `sync_data` on the same file returned `Ok`. Before
//!   that, a crash may keep it, drop it, or keep a prefix of it (a torn write), in units of
//!   512-byte sectors.
//! - `allocate(len)` makes the file at least `len` bytes long with zeros, reserving the space
//!   so that later writes inside it need no metadata update (fdatasync stays cheap).
//! - After any `Err` from `write_at` or `sync_data`, the caller must treat the file's content
//!   as unknown (fail-stop); implementations need not make a retry safe.
//! - Futures are `!Send`: a file belongs to the shard thread that opened it.

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
pub mod sim;

/// Alignment of every write offset and length (O_DIRECT, and the page size of the page log).
pub const ALIGN: usize = 4096;
/// Smallest unit a crash can tear a write into.
pub const SECTOR: usize = 512;
const _: () = assert!(ALIGN.is_multiple_of(SECTOR));

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IoError {
    #[error("{op} on {file} at offset {offset}: {detail}")]
    Os {
        op: &'static str,
        file: String,
        offset: u64,
        detail: String,
    },
    #[error("unaligned {op} on {file}: offset {offset}, length {len} (alignment {ALIGN})")]
    Unaligned {
        op: &'static str,
        file: String,
        offset: u64,
        len: usize,
    },
    #[error("read past the end of {file}: offset {offset}, length {len}, file size {size}")]
    OutOfBounds {
        file: String,
        offset: u64,
        len: usize,
        size: u64,
    },
    #[error("{file}: not found")]
    NotFound { file: String },
    /// Injected by the simulator.
    #[error("injected fault: {op} on {file}")]
    Injected { op: &'static str, file: String },
}

pub type IoResult<T> = std::result::Result<T, IoError>;

/// One open file.
#[allow(async_fn_in_trait)]
pub trait DiskFile {
    fn name(&self) -> &str;
    /// Current length in bytes.
    fn len(&self) -> u64;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    async fn read_at(&self, offset: u64, len: usize) -> IoResult<Vec<u8>>;
    async fn write_at(&self, offset: u64, data: &[u8]) -> IoResult<()>;
    async fn sync_data(&self) -> IoResult<()>;
    async fn allocate(&self, len: u64) -> IoResult<()>;
    async fn truncate(&self, len: u64) -> IoResult<()>;
}

/// A directory of files (one shard's data directory or a part of it).
#[allow(async_fn_in_trait)]
pub trait Disk {
    type File: DiskFile;
    /// Opens `name`, creating it empty when `create` is set and it does not exist.
    async fn open(&self, name: &str, create: bool) -> IoResult<Self::File>;
    async fn remove(&self, name: &str) -> IoResult<()>;
    /// File names in the directory, sorted.
    async fn list(&self) -> IoResult<Vec<String>>;
    /// Makes creations and removals of files durable (fsync of the directory).
    async fn sync_dir(&self) -> IoResult<()>;
}
