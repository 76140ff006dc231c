//! `SimDisk` / `SimFile`: the in-memory disk used by every crash and fault test. Deterministic
//! from a seed, single-threaded (`Rc<RefCell<_>>`), usable from `futures::executor::block_on`
//! or a `LocalPool`.
//!
//! Model. Every file (an "inode") keeps two images: `live` (what reads see now) and `durable`
//! (what survives a crash), plus the list of operations applied to `live` since the last
//! `sync_data`. The directory likewise keeps live and durable name tables; `sync_dir` makes the
//! live one durable. [`SimDisk::crash`] builds the disk a reboot would find:
//! - a name created, removed or replaced since the last `sync_dir` comes back in its live or
//!   its durable form (seeded choice);
//! - each surviving file starts from its durable image, then every unsynced operation is, in
//!   order and by seeded choice, kept, dropped, or (for a write) torn: only a prefix of whole
//!   512-byte sectors lands. This is exactly the freedom the `Disk` contract grants.
//!
//! Faults on command: fail the next write / sync / read of a file, flip a byte of the next read
//! of a file, flip a byte of the stored images, or kill the disk at its n-th mutating operation
//! (that operation lands in the live image, then it and everything after it fail), which is how
//! crash tests stop a workload "between any two steps".
//!
//! Time: each operation first yields to the executor `yields_per_op` times (so that concurrent
//! tasks interleave as they would around real I/O) and advances a virtual clock by the
//! configured latency; nothing sleeps.
//!
//! Invariants: `live` and `durable` lengths are the file sizes; an unsynced operation list is
//! empty right after `sync_data`; a dead disk changes nothing.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use super::{Disk, DiskFile, IoError, IoResult, ALIGN, SECTOR};

/// A small deterministic generator (splitmix64): the simulator must not depend on `rand`'s
/// algorithm choices to stay reproducible from a seed.
#[derive(Debug, Clone)]
pub struct SimRng(u64);

impl SimRng {
    pub fn new(seed: u64) -> Self {
        SimRng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0);
        self.next_u64() % n
    }
}

/// What a crash does with the unsynced state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashPolicy {
    /// Each unsynced operation and directory change is kept, dropped or torn by the seed.
    Random,
    /// Everything unsynced is lost (only `durable` survives).
    DropAll,
    /// Everything unsynced lands (as if synced just before the crash).
    KeepAll,
}

/// Which operation of a file an injected fault hits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultOp {
    Write,
    Sync,
    Read,
    /// The read succeeds but one byte of the returned data is flipped.
    CorruptRead,
}

/// Virtual latency added to the clock by each operation, in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SimLatency {
    pub read_us: u64,
    pub write_us: u64,
    pub sync_us: u64,
}

/// Operation counts, for tests that check how many writes or syncs a component issued.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SimStats {
    pub reads: u64,
    pub writes: u64,
    pub bytes_written: u64,
    pub syncs: u64,
    pub dir_syncs: u64,
    /// Mutating operations (the unit of `crash_at_op`).
    pub mutations: u64,
}

#[derive(Debug, Clone)]
enum Unsynced {
    Write { offset: u64, data: Vec<u8> },
    SetLen(u64),
}

#[derive(Debug, Clone, Default)]
struct Inode {
    live: Vec<u8>,
    durable: Vec<u8>,
    unsynced: Vec<Unsynced>,
}

#[derive(Debug)]
struct State {
    rng: SimRng,
    inodes: BTreeMap<u64, Inode>,
    names: BTreeMap<String, u64>,
    durable_names: BTreeMap<String, u64>,
    next_inode: u64,
    faults: Vec<(String, FaultOp)>,
    crash_at: Option<u64>,
    dead: bool,
    clock_us: u64,
    latency: SimLatency,
    yields_per_op: u32,
    stats: SimStats,
}

impl State {
    fn take_fault(&mut self, file: &str, op: FaultOp) -> bool {
        match self.faults.iter().position(|(f, o)| f == file && *o == op) {
            Some(i) => {
                self.faults.remove(i);
                true
            }
            None => false,
        }
    }

    fn check_alive(&self, op: &'static str, file: &str) -> IoResult<()> {
        if self.dead {
            return Err(IoError::Injected {
                op,
                file: format!("{file} (disk crashed)"),
            });
        }
        Ok(())
    }

    /// Counts one mutating operation; returns whether this one is the crash point (it lands,
    /// then fails, and the disk is dead from now on).
    fn count_mutation(&mut self) -> bool {
        self.stats.mutations += 1;
        if self.crash_at == Some(self.stats.mutations) {
            self.dead = true;
            return true;
        }
        false
    }
}

/// The simulated directory. Cloning gives another handle to the same disk.
#[derive(Debug, Clone)]
pub struct SimDisk {
    state: Rc<RefCell<State>>,
}

/// One open file of a [`SimDisk`]; it keeps referring to its inode after a remove, as an open
/// descriptor would.
#[derive(Debug, Clone)]
pub struct SimFile {
    name: String,
    inode: u64,
    state: Rc<RefCell<State>>,
}

/// Yields to the executor `n` times: lets other tasks run as they would around real I/O.
struct YieldNow(u32);

impl Future for YieldNow {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 == 0 {
            Poll::Ready(())
        } else {
            self.0 -= 1;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }
}

fn check_aligned(op: &'static str, file: &str, offset: u64, len: usize) -> IoResult<()> {
    if !offset.is_multiple_of(ALIGN as u64) || !len.is_multiple_of(ALIGN) {
        return Err(IoError::Unaligned {
            op,
            file: file.to_string(),
            offset,
            len,
        });
    }
    Ok(())
}

fn apply_write(image: &mut Vec<u8>, offset: u64, data: &[u8]) {
    let off = usize::try_from(offset).expect("sim file offset fits in memory");
    let end = off + data.len();
    if image.len() < end {
        image.resize(end, 0);
    }
    image[off..end].copy_from_slice(data);
}

fn set_len(image: &mut Vec<u8>, len: u64) {
    image.resize(
        usize::try_from(len).expect("sim file length fits in memory"),
        0,
    );
}

impl SimDisk {
    /// An empty disk whose every random choice (crash outcome, corrupted byte) follows `seed`.
    pub fn new(seed: u64) -> Self {
        SimDisk {
            state: Rc::new(RefCell::new(State {
                rng: SimRng::new(seed),
                inodes: BTreeMap::new(),
                names: BTreeMap::new(),
                durable_names: BTreeMap::new(),
                next_inode: 1,
                faults: Vec::new(),
                crash_at: None,
                dead: false,
                clock_us: 0,
                latency: SimLatency::default(),
                yields_per_op: 1,
                stats: SimStats::default(),
            })),
        }
    }

    /// How many times each operation yields to the executor before acting (default 1).
    pub fn set_yields_per_op(&self, n: u32) {
        self.state.borrow_mut().yields_per_op = n;
    }

    pub fn set_latency(&self, latency: SimLatency) {
        self.state.borrow_mut().latency = latency;
    }

    /// Virtual time spent in I/O so far.
    pub fn clock_us(&self) -> u64 {
        self.state.borrow().clock_us
    }

    pub fn stats(&self) -> SimStats {
        self.state.borrow().stats
    }

    /// Arms a one-shot fault: the next `op` on `file` fails (or, for `CorruptRead`, returns
    /// one flipped byte).
    pub fn fail_next(&self, file: &str, op: FaultOp) {
        self.state.borrow_mut().faults.push((file.to_string(), op));
    }

    /// Kills the disk at its `n`-th mutating operation from the start (1-based, counted over
    /// creates, removes, writes, syncs, allocates, truncates and directory syncs): that
    /// operation lands in the live image (unsynced) and returns an error, and every operation
    /// after it fails. `None` disarms.
    pub fn crash_at_op(&self, n: Option<u64>) {
        self.state.borrow_mut().crash_at = n;
    }

    /// Whether the disk was killed by `crash_at_op`.
    pub fn is_dead(&self) -> bool {
        self.state.borrow().dead
    }

    /// Flips `mask` into the byte at `offset` of both the live and the durable image of `name`
    /// (bit rot under the file system). Panics if the file or offset does not exist.
    pub fn flip_byte(&self, name: &str, offset: u64, mask: u8) {
        assert!(mask != 0, "a zero mask flips nothing");
        let mut st = self.state.borrow_mut();
        let ino = *st.names.get(name).expect("flip_byte: no such file");
        let inode = st.inodes.get_mut(&ino).expect("inode exists");
        let off = usize::try_from(offset).expect("offset fits");
        inode.live[off] ^= mask;
        if off < inode.durable.len() {
            inode.durable[off] ^= mask;
        }
    }

    /// The live content of `name`, if it exists.
    pub fn live_image(&self, name: &str) -> Option<Vec<u8>> {
        let st = self.state.borrow();
        let ino = st.names.get(name)?;
        Some(st.inodes[ino].live.clone())
    }

    /// The durable content of `name` under its durable directory entry, if any.
    pub fn durable_image(&self, name: &str) -> Option<Vec<u8>> {
        let st = self.state.borrow();
        let ino = st.durable_names.get(name)?;
        Some(st.inodes[ino].durable.clone())
    }

    /// The disk a reboot would find, by the seeded [`CrashPolicy::Random`]. The old handle
    /// (and its open files) stays usable but is unrelated to the new disk.
    pub fn crash(&self) -> SimDisk {
        self.crash_with(CrashPolicy::Random)
    }

    pub fn crash_with(&self, policy: CrashPolicy) -> SimDisk {
        let mut st = self.state.borrow_mut();
        let (yields_per_op, latency) = (st.yields_per_op, st.latency);
        let State {
            rng,
            inodes,
            names,
            durable_names,
            ..
        } = &mut *st;
        let mut all_names: Vec<&String> = names.keys().chain(durable_names.keys()).collect();
        all_names.sort();
        all_names.dedup();

        let out = SimDisk::new(rng.next_u64());
        {
            let mut new_st = out.state.borrow_mut();
            for name in all_names {
                let live = names.get(name).copied();
                let durable = durable_names.get(name).copied();
                let chosen = if live == durable {
                    live
                } else {
                    match policy {
                        CrashPolicy::KeepAll => live,
                        CrashPolicy::DropAll => durable,
                        CrashPolicy::Random => {
                            if rng.below(2) == 0 {
                                live
                            } else {
                                durable
                            }
                        }
                    }
                };
                let Some(ino) = chosen else { continue };
                let inode = &inodes[&ino];
                let mut image = inode.durable.clone();
                for op in &inode.unsynced {
                    // 0 = keep, 1 = drop, 2 = tear (writes only).
                    let choice = match policy {
                        CrashPolicy::KeepAll => 0,
                        CrashPolicy::DropAll => 1,
                        CrashPolicy::Random => rng.below(3),
                    };
                    match (op, choice) {
                        (Unsynced::Write { offset, data }, 0) => {
                            apply_write(&mut image, *offset, data)
                        }
                        (Unsynced::Write { offset, data }, 2) => {
                            let sectors = data.len() / SECTOR;
                            let kept = rng.below(sectors as u64 + 1) as usize * SECTOR;
                            if kept > 0 {
                                apply_write(&mut image, *offset, &data[..kept]);
                            }
                        }
                        (Unsynced::SetLen(len), 0 | 2) => set_len(&mut image, *len),
                        _ => {}
                    }
                }
                let id = new_st.next_inode;
                new_st.next_inode += 1;
                new_st.inodes.insert(
                    id,
                    Inode {
                        live: image.clone(),
                        durable: image,
                        unsynced: Vec::new(),
                    },
                );
                new_st.names.insert(name.clone(), id);
                new_st.durable_names.insert(name.clone(), id);
            }
            new_st.yields_per_op = yields_per_op;
            new_st.latency = latency;
        }
        out
    }

    async fn pause(&self, latency: impl Fn(&SimLatency) -> u64) {
        let n = {
            let mut st = self.state.borrow_mut();
            let add = latency(&st.latency);
            st.clock_us += add;
            st.yields_per_op
        };
        YieldNow(n).await;
    }
}

impl SimFile {
    async fn pause(&self, latency: impl Fn(&SimLatency) -> u64) {
        SimDisk {
            state: self.state.clone(),
        }
        .pause(latency)
        .await
    }
}

impl DiskFile for SimFile {
    fn name(&self) -> &str {
        &self.name
    }

    fn len(&self) -> u64 {
        self.state.borrow().inodes[&self.inode].live.len() as u64
    }

    async fn read_at(&self, offset: u64, len: usize) -> IoResult<Vec<u8>> {
        self.pause(|l| l.read_us).await;
        let mut st = self.state.borrow_mut();
        st.check_alive("read", &self.name)?;
        st.stats.reads += 1;
        if st.take_fault(&self.name, FaultOp::Read) {
            return Err(IoError::Injected {
                op: "read",
                file: self.name.clone(),
            });
        }
        let size = st.inodes[&self.inode].live.len() as u64;
        if offset.checked_add(len as u64).is_none_or(|end| end > size) {
            return Err(IoError::OutOfBounds {
                file: self.name.clone(),
                offset,
                len,
                size,
            });
        }
        let off = offset as usize;
        let mut out = st.inodes[&self.inode].live[off..off + len].to_vec();
        if !out.is_empty() && st.take_fault(&self.name, FaultOp::CorruptRead) {
            let at = st.rng.below(out.len() as u64) as usize;
            let mask = (st.rng.below(255) + 1) as u8;
            out[at] ^= mask;
        }
        Ok(out)
    }

    async fn write_at(&self, offset: u64, data: &[u8]) -> IoResult<()> {
        self.pause(|l| l.write_us).await;
        let mut st = self.state.borrow_mut();
        st.check_alive("write", &self.name)?;
        check_aligned("write", &self.name, offset, data.len())?;
        if st.take_fault(&self.name, FaultOp::Write) {
            return Err(IoError::Injected {
                op: "write",
                file: self.name.clone(),
            });
        }
        st.stats.writes += 1;
        st.stats.bytes_written += data.len() as u64;
        let crash_now = st.count_mutation();
        let inode = st.inodes.get_mut(&self.inode).expect("inode exists");
        apply_write(&mut inode.live, offset, data);
        inode.unsynced.push(Unsynced::Write {
            offset,
            data: data.to_vec(),
        });
        if crash_now {
            return Err(IoError::Injected {
                op: "write",
                file: format!("{} (disk crashed)", self.name),
            });
        }
        Ok(())
    }

    async fn sync_data(&self) -> IoResult<()> {
        self.pause(|l| l.sync_us).await;
        let mut st = self.state.borrow_mut();
        st.check_alive("sync", &self.name)?;
        if st.take_fault(&self.name, FaultOp::Sync) {
            return Err(IoError::Injected {
                op: "sync",
                file: self.name.clone(),
            });
        }
        st.stats.syncs += 1;
        let crash_now = st.count_mutation();
        let inode = st.inodes.get_mut(&self.inode).expect("inode exists");
        inode.durable = inode.live.clone();
        inode.unsynced.clear();
        if crash_now {
            return Err(IoError::Injected {
                op: "sync",
                file: format!("{} (disk crashed)", self.name),
            });
        }
        Ok(())
    }

    async fn allocate(&self, len: u64) -> IoResult<()> {
        self.pause(|l| l.write_us).await;
        let mut st = self.state.borrow_mut();
        st.check_alive("allocate", &self.name)?;
        let crash_now = st.count_mutation();
        let inode = st.inodes.get_mut(&self.inode).expect("inode exists");
        if (inode.live.len() as u64) < len {
            set_len(&mut inode.live, len);
            inode.unsynced.push(Unsynced::SetLen(len));
        }
        if crash_now {
            return Err(IoError::Injected {
                op: "allocate",
                file: format!("{} (disk crashed)", self.name),
            });
        }
        Ok(())
    }

    async fn truncate(&self, len: u64) -> IoResult<()> {
        self.pause(|l| l.write_us).await;
        let mut st = self.state.borrow_mut();
        st.check_alive("truncate", &self.name)?;
        let crash_now = st.count_mutation();
        let inode = st.inodes.get_mut(&self.inode).expect("inode exists");
        set_len(&mut inode.live, len);
        inode.unsynced.push(Unsynced::SetLen(len));
        if crash_now {
            return Err(IoError::Injected {
                op: "truncate",
                file: format!("{} (disk crashed)", self.name),
            });
        }
        Ok(())
    }
}

impl Disk for SimDisk {
    type File = SimFile;

    async fn open(&self, name: &str, create: bool) -> IoResult<SimFile> {
        self.pause(|_| 0).await;
        let mut st = self.state.borrow_mut();
        st.check_alive("open", name)?;
        if let Some(&ino) = st.names.get(name) {
            return Ok(SimFile {
                name: name.to_string(),
                inode: ino,
                state: self.state.clone(),
            });
        }
        if !create {
            return Err(IoError::NotFound {
                file: name.to_string(),
            });
        }
        let crash_now = st.count_mutation();
        let ino = st.next_inode;
        st.next_inode += 1;
        st.inodes.insert(ino, Inode::default());
        st.names.insert(name.to_string(), ino);
        if crash_now {
            return Err(IoError::Injected {
                op: "create",
                file: format!("{name} (disk crashed)"),
            });
        }
        Ok(SimFile {
            name: name.to_string(),
            inode: ino,
            state: self.state.clone(),
        })
    }

    async fn remove(&self, name: &str) -> IoResult<()> {
        self.pause(|_| 0).await;
        let mut st = self.state.borrow_mut();
        st.check_alive("remove", name)?;
        if !st.names.contains_key(name) {
            return Err(IoError::NotFound {
                file: name.to_string(),
            });
        }
        let crash_now = st.count_mutation();
        st.names.remove(name);
        if crash_now {
            return Err(IoError::Injected {
                op: "remove",
                file: format!("{name} (disk crashed)"),
            });
        }
        Ok(())
    }

    async fn list(&self) -> IoResult<Vec<String>> {
        self.pause(|_| 0).await;
        let st = self.state.borrow();
        st.check_alive("list", "")?;
        Ok(st.names.keys().cloned().collect())
    }

    async fn sync_dir(&self) -> IoResult<()> {
        self.pause(|l| l.sync_us).await;
        let mut st = self.state.borrow_mut();
        st.check_alive("sync_dir", "")?;
        st.stats.dir_syncs += 1;
        let crash_now = st.count_mutation();
        st.durable_names = st.names.clone();
        if crash_now {
            return Err(IoError::Injected {
                op: "sync_dir",
                file: "(disk crashed)".to_string(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::executor::block_on;

    fn page(b: u8) -> Vec<u8> {
        vec![b; ALIGN]
    }

    #[test]
    fn passes_the_conformance_suite() {
        block_on(crate::io::conformance::run_all(&SimDisk::new(1)));
    }

    #[test]
    fn synced_data_survives_and_unsynced_data_may_not() {
        block_on(async {
            let d = SimDisk::new(7);
            let f = d.open("a", true).await.unwrap();
            d.sync_dir().await.unwrap();
            f.write_at(0, &page(1)).await.unwrap();
            f.sync_data().await.unwrap();
            f.write_at(ALIGN as u64, &page(2)).await.unwrap();

            let dropped = d.crash_with(CrashPolicy::DropAll);
            assert_eq!(dropped.live_image("a").unwrap(), page(1));
            let kept = d.crash_with(CrashPolicy::KeepAll);
            assert_eq!(kept.live_image("a").unwrap(), [page(1), page(2)].concat());
        });
    }

    #[test]
    fn random_crashes_tear_at_sector_boundaries_and_cover_every_outcome() {
        let mut outcomes = std::collections::BTreeSet::new();
        for seed in 0..200 {
            block_on(async {
                let d = SimDisk::new(seed);
                let f = d.open("a", true).await.unwrap();
                f.write_at(0, &page(0)).await.unwrap();
                f.sync_data().await.unwrap();
                d.sync_dir().await.unwrap();
                f.write_at(0, &page(9)).await.unwrap();
                let img = d.crash().live_image("a").unwrap();
                assert_eq!(img.len(), ALIGN);
                // A prefix of whole sectors is new, the rest old.
                let new = img.iter().take_while(|&&b| b == 9).count();
                assert_eq!(new % SECTOR, 0, "seed {seed}: tear inside a sector");
                assert!(
                    img[new..].iter().all(|&b| b == 0),
                    "seed {seed}: not a prefix"
                );
                outcomes.insert(new / SECTOR);
            });
        }
        // Dropped (0), whole (8) and several torn lengths all happen.
        assert!(outcomes.contains(&0) && outcomes.contains(&(ALIGN / SECTOR)));
        assert!(outcomes.len() >= 5, "outcomes {outcomes:?}");
    }

    #[test]
    fn crashes_are_deterministic_from_the_seed() {
        let run = |seed| {
            block_on(async {
                let d = SimDisk::new(seed);
                let f = d.open("a", true).await.unwrap();
                for i in 0..8u8 {
                    f.write_at(i as u64 * ALIGN as u64, &page(i + 1))
                        .await
                        .unwrap();
                }
                d.crash().live_image("a")
            })
        };
        assert_eq!(run(3), run(3));
        assert!(
            (0..20).any(|s| run(s) != run(3)),
            "the seed changes the outcome"
        );
    }

    #[test]
    fn directory_changes_need_sync_dir() {
        block_on(async {
            let d = SimDisk::new(1);
            let f = d.open("new", true).await.unwrap();
            f.write_at(0, &page(1)).await.unwrap();
            f.sync_data().await.unwrap();
            assert!(d
                .crash_with(CrashPolicy::DropAll)
                .live_image("new")
                .is_none());
            d.sync_dir().await.unwrap();
            assert!(d
                .crash_with(CrashPolicy::DropAll)
                .live_image("new")
                .is_some());
            d.remove("new").await.unwrap();
            // Not yet durable: the file comes back, with its synced content.
            assert_eq!(
                d.crash_with(CrashPolicy::DropAll)
                    .live_image("new")
                    .unwrap(),
                page(1)
            );
            assert!(d
                .crash_with(CrashPolicy::KeepAll)
                .live_image("new")
                .is_none());
            // An open handle still works on the removed file.
            assert_eq!(f.read_at(0, 4).await.unwrap(), vec![1; 4]);
        });
    }

    #[test]
    fn allocate_and_truncate_are_unsynced_until_sync() {
        block_on(async {
            let d = SimDisk::new(1);
            let f = d.open("a", true).await.unwrap();
            d.sync_dir().await.unwrap();
            f.allocate(4 * ALIGN as u64).await.unwrap();
            assert_eq!(
                d.crash_with(CrashPolicy::DropAll)
                    .live_image("a")
                    .unwrap()
                    .len(),
                0
            );
            f.sync_data().await.unwrap();
            f.truncate(ALIGN as u64).await.unwrap();
            assert_eq!(
                d.crash_with(CrashPolicy::DropAll)
                    .live_image("a")
                    .unwrap()
                    .len(),
                4 * ALIGN
            );
            assert_eq!(
                d.crash_with(CrashPolicy::KeepAll)
                    .live_image("a")
                    .unwrap()
                    .len(),
                ALIGN
            );
        });
    }

    #[test]
    fn injected_faults_hit_once_and_only_their_file() {
        block_on(async {
            let d = SimDisk::new(5);
            let a = d.open("a", true).await.unwrap();
            let b = d.open("b", true).await.unwrap();
            d.fail_next("a", FaultOp::Write);
            d.fail_next("a", FaultOp::Sync);
            d.fail_next("a", FaultOp::Read);
            b.write_at(0, &page(1)).await.unwrap();
            assert!(matches!(
                a.write_at(0, &page(1)).await,
                Err(IoError::Injected { op: "write", .. })
            ));
            assert_eq!(a.len(), 0, "a failed write lands nothing");
            a.write_at(0, &page(1)).await.unwrap();
            assert!(matches!(
                a.sync_data().await,
                Err(IoError::Injected { op: "sync", .. })
            ));
            a.sync_data().await.unwrap();
            assert!(matches!(
                a.read_at(0, 1).await,
                Err(IoError::Injected { op: "read", .. })
            ));
            assert_eq!(a.read_at(0, 8).await.unwrap(), vec![1; 8]);

            d.fail_next("a", FaultOp::CorruptRead);
            let bad = a.read_at(0, ALIGN).await.unwrap();
            let diff = bad.iter().filter(|&&x| x != 1).count();
            assert_eq!(diff, 1, "exactly one byte flipped");
            assert_eq!(
                a.read_at(0, ALIGN).await.unwrap(),
                page(1),
                "stored data intact"
            );
        });
    }

    #[test]
    fn crash_at_op_lands_that_op_then_kills_the_disk() {
        block_on(async {
            let d = SimDisk::new(2);
            let f = d.open("a", true).await.unwrap(); // mutation 1
            d.crash_at_op(Some(3));
            f.write_at(0, &page(1)).await.unwrap(); // 2
            assert!(f.sync_data().await.is_err()); // 3: lands, then fails
            assert!(d.is_dead());
            assert!(f.write_at(0, &page(2)).await.is_err());
            assert!(f.read_at(0, 1).await.is_err());
            assert!(d.list().await.is_err());
            assert_eq!(d.stats().mutations, 3);
            // The sync landed: data durable (the name was never synced, so KeepAll for it).
            let after = d.crash_with(CrashPolicy::KeepAll);
            assert_eq!(after.live_image("a").unwrap(), page(1));
            assert!(!after.is_dead());
        });
    }

    #[test]
    fn latency_advances_the_virtual_clock_and_ops_yield() {
        use futures::task::LocalSpawnExt;
        let d = SimDisk::new(1);
        d.set_latency(SimLatency {
            read_us: 10,
            write_us: 100,
            sync_us: 1000,
        });
        let mut pool = futures::executor::LocalPool::new();
        let order = Rc::new(RefCell::new(Vec::new()));
        for t in 0..2u8 {
            let (d, order) = (d.clone(), order.clone());
            pool.spawner()
                .spawn_local(async move {
                    let f = d.open(&format!("f{t}"), true).await.unwrap();
                    order.borrow_mut().push((t, 0));
                    f.write_at(0, &page(t)).await.unwrap();
                    order.borrow_mut().push((t, 1));
                    f.sync_data().await.unwrap();
                    f.read_at(0, 1).await.unwrap();
                })
                .unwrap();
        }
        pool.run();
        assert_eq!(d.clock_us(), 2 * (100 + 1000 + 10));
        // Both tasks were inside their first operation before either finished its second.
        let o = order.borrow();
        assert_eq!(&o[..2], &[(0, 0), (1, 0)], "order {o:?}");
    }
}
