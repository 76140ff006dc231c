//! [`WalLog`]: the [`LogBackend`] over the engine's WAL (`ballast_engine::wal::Wal`) on any
//! `engine::io::Disk` — glommio DMA files in the server, the simulator in tests. A thin
//! translation: both count indexes from 1, both keep the vote beside the log, and the WAL's
//! append/truncate are visible at once and durable when their futures resolve, as the
//! `LogBackend` contract asks. A WAL error (it fail-stops itself) becomes an `io::Error`.

use std::io;
use std::ops::Range;

use ballast_engine::io::Disk;
use ballast_engine::wal::{self, LogIndex, Term, Wal, WalError};

use super::{LocalFuture, LogBackend, LogPosition, LogRecord, StoredVote};

pub struct WalLog<D: Disk> {
    wal: Wal<D>,
}

impl<D: Disk> Clone for WalLog<D> {
    fn clone(&self) -> Self {
        WalLog {
            wal: self.wal.clone(),
        }
    }
}

impl<D: Disk> WalLog<D> {
    pub fn new(wal: Wal<D>) -> WalLog<D> {
        WalLog { wal }
    }
}

fn io_error(err: WalError) -> io::Error {
    io::Error::other(err)
}

fn position(id: wal::LogId) -> LogPosition {
    LogPosition {
        term: id.term.0,
        index: id.index.0,
    }
}

impl<D: Disk + 'static> LogBackend for WalLog<D> {
    fn prev(&self) -> LogPosition {
        position(self.wal.prev())
    }

    fn last(&self) -> LogPosition {
        position(self.wal.last())
    }

    fn vote(&self) -> Option<StoredVote> {
        self.wal.vote().map(|v| StoredVote {
            term: v.term.0,
            voted_for: v.voted_for,
            committed: v.committed,
        })
    }

    fn append(&self, records: Vec<LogRecord>) -> LocalFuture<io::Result<()>> {
        let entries = records
            .into_iter()
            .map(|r| wal::Entry {
                index: LogIndex(r.index),
                term: Term(r.term),
                kind: r.kind,
                payload: r.payload,
            })
            .collect();
        // `Wal::append` enqueues before returning: the records are in the log now.
        let durable = self.wal.append(entries);
        Box::pin(async move { durable.await.map_err(io_error) })
    }

    fn truncate_after(&self, index: u64) -> LocalFuture<io::Result<()>> {
        let durable = self.wal.truncate_after(LogIndex(index));
        Box::pin(async move { durable.await.map_err(io_error) })
    }

    fn purge_upto(&self, upto: LogPosition) -> LocalFuture<io::Result<()>> {
        let wal = self.wal.clone();
        Box::pin(async move {
            wal.purge_upto(wal::LogId::new(upto.term, upto.index))
                .await
                .map_err(io_error)
        })
    }

    fn read(&self, range: Range<u64>) -> LocalFuture<io::Result<Vec<LogRecord>>> {
        let wal = self.wal.clone();
        Box::pin(async move {
            let entries = wal
                .read(LogIndex(range.start)..LogIndex(range.end))
                .await
                .map_err(io_error)?;
            Ok(entries
                .into_iter()
                .map(|e| LogRecord {
                    term: e.term.0,
                    index: e.index.0,
                    kind: e.kind,
                    payload: e.payload,
                })
                .collect())
        })
    }

    fn save_vote(&self, vote: StoredVote) -> LocalFuture<io::Result<()>> {
        let wal = self.wal.clone();
        Box::pin(async move {
            let vote = wal::Vote {
                term: Term(vote.term),
                voted_for: vote.voted_for,
                committed: vote.committed,
            };
            wal.save_vote(vote).await.map_err(io_error)
        })
    }
}

#[cfg(test)]
mod tests {
    use ballast_engine::io::sim::SimDisk;
    use ballast_engine::wal::WalConfig;
    use futures::executor::block_on;

    use super::*;

    #[test]
    fn wal_log_keeps_the_contract() {
        let config = WalConfig {
            segment_bytes: 64 * 1024,
            record_payload_bytes_max: 4096,
            ..WalConfig::default()
        };
        let (wal, _recovered) = block_on(Wal::open(SimDisk::new(7), config)).expect("open");
        super::super::memory::conformance::check(WalLog::new(wal));
    }
}
