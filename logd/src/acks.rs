//! The offset invariant: the offset offered for commit for a file never
//! passes the first byte of a line the intake has not acknowledged.
//!
//! Each chunk of lines read from a file gets a token and the file's safe
//! offset when it was read (the parser's quiescent offset: every line
//! starting before it is in this chunk or an earlier one, including partial
//! lines still being reassembled). A file's committed offset is the safe
//! offset of its newest chunk such that it and every earlier chunk are
//! acknowledged. Acknowledgements may arrive in any order.

use std::collections::{HashMap, VecDeque};

/// Names one file being read, for as long as logd reads it (a file read
/// again after a truncation, or after a restart, gets a new key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileKey(pub u64);

/// Names one chunk of lines, to acknowledge it with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AckToken {
    pub file: FileKey,
    seq: u64,
}

/// A change of a file's committed offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Commit {
    pub file: FileKey,
    pub offset: u64,
    /// The file was read to its end and every chunk of it acknowledged: the
    /// file is done and no longer tracked.
    pub finished: bool,
}

#[derive(Debug)]
struct Sent {
    seq: u64,
    safe_offset: u64,
    acked: bool,
}

#[derive(Debug)]
struct Progress {
    committed: u64,
    sent: VecDeque<Sent>,
    next_seq: u64,
    done_reading: bool,
}

/// Chunks not yet acknowledged, per file.
#[derive(Debug, Default)]
pub struct AckTracker {
    files: HashMap<FileKey, Progress>,
}

impl AckTracker {
    /// Starts tracking `file`, whose bytes before `committed` need no acknowledgement.
    pub fn open(&mut self, file: FileKey, committed: u64) {
        self.files.insert(
            file,
            Progress {
                committed,
                sent: VecDeque::new(),
                next_seq: 0,
                done_reading: false,
            },
        );
    }

    /// Records a chunk of lines of `file` read up to `safe_offset`; returns its token.
    pub fn sent(&mut self, file: FileKey, safe_offset: u64) -> AckToken {
        let seq = self
            .push(file, safe_offset, false)
            .expect("chunks are only sent for open files");
        AckToken { file, seq }
    }

    /// Records progress of `file` to `safe_offset` with no line to
    /// acknowledge (e.g. the end of a finished file); commits once the
    /// chunks before it are acknowledged.
    pub fn advanced(&mut self, file: FileKey, safe_offset: u64) -> Option<Commit> {
        self.push(file, safe_offset, true)?;
        self.settle(file)
    }

    /// Queues a point of `file` up to which it was read; its sequence
    /// number, or None when the file is not tracked.
    fn push(&mut self, file: FileKey, safe_offset: u64, acked: bool) -> Option<u64> {
        let p = self.files.get_mut(&file)?;
        let seq = p.next_seq;
        p.next_seq += 1;
        p.sent.push_back(Sent {
            seq,
            safe_offset,
            acked,
        });
        Some(seq)
    }

    /// The intake acknowledged (or definitively dropped) the chunk. Unknown
    /// or repeated tokens are ignored.
    pub fn ack(&mut self, token: AckToken) -> Option<Commit> {
        let p = self.files.get_mut(&token.file)?;
        let i = p.sent.binary_search_by_key(&token.seq, |s| s.seq).ok()?;
        if p.sent[i].acked {
            return None;
        }
        p.sent[i].acked = true;
        self.settle(token.file)
    }

    /// Nothing more will be read from `file`: it finishes once its chunks are acknowledged.
    pub fn done_reading(&mut self, file: FileKey) -> Option<Commit> {
        self.files.get_mut(&file)?.done_reading = true;
        self.settle(file)
    }

    /// The committed offset of a tracked file.
    pub fn committed(&self, file: FileKey) -> Option<u64> {
        self.files.get(&file).map(|p| p.committed)
    }

    /// True while `file` is tracked (not finished).
    pub fn is_tracked(&self, file: FileKey) -> bool {
        self.files.contains_key(&file)
    }

    /// Chunks sent and not acknowledged yet, over all files.
    pub fn unacked(&self) -> usize {
        self.files
            .values()
            .map(|p| p.sent.iter().filter(|s| !s.acked).count())
            .sum()
    }

    /// Keys of every tracked file.
    pub fn keys(&self) -> impl Iterator<Item = FileKey> + '_ {
        self.files.keys().copied()
    }

    /// Moves the committed offset past the acknowledged prefix of chunks.
    fn settle(&mut self, file: FileKey) -> Option<Commit> {
        let p = self.files.get_mut(&file)?;
        let before = p.committed;
        while p.sent.front().is_some_and(|s| s.acked) {
            let s = p.sent.pop_front().expect("front exists");
            p.committed = p.committed.max(s.safe_offset);
        }
        let offset = p.committed;
        if p.done_reading && p.sent.is_empty() {
            self.files.remove(&file);
            return Some(Commit {
                file,
                offset,
                finished: true,
            });
        }
        (offset != before).then_some(Commit {
            file,
            offset,
            finished: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const F: FileKey = FileKey(1);

    #[test]
    fn offset_waits_for_the_first_unacked_chunk() {
        let mut t = AckTracker::default();
        t.open(F, 0);
        let a = t.sent(F, 100);
        let b = t.sent(F, 200);
        let c = t.sent(F, 300);
        assert_eq!(t.ack(b), None, "b is acked but a is not");
        assert_eq!(t.committed(F), Some(0));
        assert_eq!(
            t.ack(a),
            Some(Commit {
                file: F,
                offset: 200,
                finished: false
            })
        );
        assert_eq!(
            t.ack(c),
            Some(Commit {
                file: F,
                offset: 300,
                finished: false
            })
        );
        assert_eq!(t.unacked(), 0);
    }

    #[test]
    fn repeated_and_unknown_acks_are_ignored() {
        let mut t = AckTracker::default();
        t.open(F, 10);
        let a = t.sent(F, 100);
        assert!(t.ack(a).is_some());
        assert_eq!(t.ack(a), None);
        assert_eq!(
            t.ack(AckToken {
                file: FileKey(9),
                seq: 0
            }),
            None
        );
        assert_eq!(t.committed(F), Some(100));
    }

    #[test]
    fn file_finishes_when_done_reading_and_all_acked() {
        let mut t = AckTracker::default();
        t.open(F, 0);
        let a = t.sent(F, 50);
        assert_eq!(t.advanced(F, 60), None);
        assert_eq!(t.done_reading(F), None);
        assert!(t.is_tracked(F));
        assert_eq!(
            t.ack(a),
            Some(Commit {
                file: F,
                offset: 60,
                finished: true
            })
        );
        assert!(!t.is_tracked(F));
    }

    #[test]
    fn safe_offset_held_back_by_a_partial_line_is_respected() {
        // The second chunk's lines were read but a partial line that started
        // at 120 was pending: its safe offset stays at 120.
        let mut t = AckTracker::default();
        t.open(F, 0);
        let a = t.sent(F, 120);
        let b = t.sent(F, 120);
        t.ack(a);
        t.ack(b);
        assert_eq!(t.committed(F), Some(120));
    }
}
