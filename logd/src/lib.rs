//! logd as a library: the tailing core (identity, checkpoints, rotation,
//! parsing) works on plain files with no threads, so it can be tested alone;
//! the daemon's threads only move data between its parts.
//!
//! The entry point is [`Tailer`]: the daemon's inotify thread passes it
//! hints, the parse thread pulls [`Chunk`]s, the uploader hands back
//! [`AckToken`]s, and the checkpoint writer saves [`Checkpoints`].

pub mod acks;
pub mod checkpoint;
pub mod cri;
pub mod docker;
pub mod fingerprint;
pub mod parse;
pub mod pod_path;
pub mod reader;
pub mod tailer;
pub mod timestamp;

pub use acks::{AckToken, FileKey};
pub use checkpoint::{CheckpointStore, Checkpoints};
pub use tailer::{Chunk, LogMeta, ReadFrom, Stats, Tailer, TailerConfig};
