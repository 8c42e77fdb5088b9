//! SQLite only: the hand-out writer's checkpoints, on a thread of their own.
//!
//! A checkpoint copies the pages a WAL file holds back into its database file and syncs both:
//! work that grows with the number of distinct pages in the log. SQLite runs it inside the
//! commit that takes a WAL past `wal_autocheckpoint` pages (1,000), in the connection that
//! committed. For the hand-out audit file, and for the main file whenever a batch carried
//! touches, that connection was the writer thread's, so every hand-out waiting for its audit row
//! waited for the checkpoint's writes and `fsync`s as well. The main file's share is the large
//! one: a wave of `last_seen_at` and `last_used_at` touches over a large store dirties a page per
//! user, scattered over the file.
//!
//! So the writer's connection has automatic checkpoints off, and every
//! [`CHECKPOINT_EVERY_BATCHES`] commits it nudges this thread, which runs a `PASSIVE` checkpoint of
//! both files on a connection of its own. A `PASSIVE` checkpoint neither waits for nor blocks the
//! writer or any reader (it copies what no reader still needs, and leaves the rest for the next
//! one), so the writer goes on committing while the checkpoint runs. Nudges coalesce: one waits
//! while a checkpoint runs, the rest are dropped. The main pool's connections keep SQLite's
//! automatic checkpoint for their own rare writes.
//!
//! A WAL file starts again from its beginning only when a writer begins a transaction with every
//! frame already copied back. Under load the writer always appended a few commits while the
//! thread's checkpoint ran, so that moment never came: the audit file's WAL grew by every frame
//! written, about 70 MB a second in `cargo xtask bench`, until the load stopped (or the disk was
//! full). Every append past the end of the file made the kernel allocate and zero new page-cache
//! pages (9% of a profile's samples; about 2 µs of CPU per hand-out measured without the
//! profiler, see `docs/operations.md`). So after each of the thread's checkpoints, the
//! writer copies back the few frames it appended meanwhile itself, between two batches
//! ([`Checkpointer::committed`]); its next commit then starts the WAL again, and the WAL stays
//! within a few hundred frames, rewriting the same pages.

use super::open_sqlite;
use crate::store::CallCounter;
use diesel::prelude::*;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// How many commits the writer makes between nudges. A commit of the audit file writes a few
/// pages to its WAL (two to seven, with one to a few dozen rows), so the WAL stays within a few
/// hundred pages. 256 was tried too (`cargo xtask bench`, 2026-12-07): CPU per hand-out the same
/// within the run-to-run noise, p99 a little higher.
pub(super) const CHECKPOINT_EVERY_BATCHES: u32 = 64;

/// The schemas the checkpoint thread's connection sees: the hand-out audit file is its `main`,
/// the main database file is attached as `custody` (as on the writer's connection).
const SCHEMAS: [&str; 2] = ["main", "custody"];

/// The writer's side of the checkpoint thread: counts commits, nudges the thread, and ends it
/// (joined) when dropped.
pub(super) struct Checkpointer {
    nudge: Option<SyncSender<()>>,
    commits: u32,
    /// Set by the thread after each checkpoint it completed, taken by the writer.
    checkpointed: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// Starts the thread for the SQLite database at `path`. It opens its connection on the
    /// first nudge. If the thread cannot be started, nothing checkpoints the two files until the
    /// last connection closes them (then SQLite does); the error is logged.
    pub(super) fn start(path: &Path, busy_timeout: Duration, counter: &CallCounter) -> Self {
        let (nudge, nudged) = sync_channel(1);
        let path = path.to_owned();
        let counter = CallCounter(counter.0.clone());
        let checkpointed = Arc::new(AtomicBool::new(false));
        let done = checkpointed.clone();
        let spawned = std::thread::Builder::new()
            .name("custody-checkpoint".into())
            .spawn(move || run(&path, busy_timeout, &counter, &nudged, &done));
        let thread = spawned.inspect_err(|e| tracing::error!(error = %e, "could not start the checkpoint thread")).ok();
        Self { nudge: Some(nudge), commits: 0, checkpointed, thread }
    }

    /// Called by the writer after each commit, once that commit's waiters are answered, with its
    /// connection (on the audit file, see `open_sqlite`).
    ///
    /// When the thread has completed a checkpoint since the last call, it first copies back what
    /// the writer appended to the audit file's WAL while that checkpoint ran (a `PASSIVE`
    /// checkpoint of the audit file alone, on `writer`), so that the writer's next commit starts
    /// the WAL again from its beginning. Then every [`CHECKPOINT_EVERY_BATCHES`]th call nudges
    /// the thread, without waiting.
    pub(super) fn committed(&mut self, writer: &mut SqliteConnection) {
        if self.checkpointed.swap(false, Ordering::Acquire) {
            if let Err(e) = finish_audit_checkpoint(writer) {
                // The WAL grows until a later one succeeds; nothing is lost.
                tracing::warn!(error = %e, "the writer could not checkpoint the hand-out audit file; retried after the next checkpoint");
            }
        }
        self.commits += 1;
        if self.commits < CHECKPOINT_EVERY_BATCHES {
            return;
        }
        self.commits = 0;
        if let Some(nudge) = &self.nudge {
            match nudge.try_send(()) {
                // `Full`: a nudge is already waiting, and that checkpoint covers this one.
                Ok(()) | Err(TrySendError::Full(())) => {}
                Err(TrySendError::Disconnected(())) => self.nudge = None,
            }
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        // The thread runs a nudge still queued, then sees the channel closed and ends.
        drop(self.nudge.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The thread: one checkpoint of both files per nudge, until the writer is gone. After each that
/// succeeded it sets `checkpointed`, for the writer to finish it (see [`Checkpointer::committed`]).
fn run(path: &Path, busy_timeout: Duration, counter: &CallCounter, nudged: &Receiver<()>, checkpointed: &AtomicBool) {
    let mut conn: Option<SqliteConnection> = None;
    while nudged.recv().is_ok() {
        let db = match conn.as_mut() {
            Some(db) => db,
            // Logged by `open_sqlite`; the next nudge tries again.
            None => match open_sqlite(path, busy_timeout, counter) {
                Ok(db) => conn.insert(db),
                Err(_) => continue,
            },
        };
        match checkpoint(db) {
            Ok(_) => checkpointed.store(true, Ordering::Release),
            Err(e) => {
                tracing::warn!(error = %e, "the checkpoint of the hand-out audit and main files failed; retried on the next");
                conn = None;
            }
        }
    }
}

/// What `PRAGMA wal_checkpoint` reports for one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, diesel::QueryableByName)]
pub(super) struct Checkpointed {
    /// 1 when another checkpoint was running (nothing was done), else 0.
    #[diesel(sql_type = diesel::sql_types::Integer)]
    pub(super) busy: i32,
    /// Frames in the WAL file.
    #[diesel(sql_type = diesel::sql_types::Integer)]
    pub(super) log: i32,
    /// Frames of it now copied into the database file.
    #[diesel(sql_type = diesel::sql_types::Integer)]
    pub(super) checkpointed: i32,
}

/// Runs a `PASSIVE` checkpoint of the audit file and of the attached main file on `conn`, and
/// returns what each reported, in that order.
pub(super) fn checkpoint(conn: &mut SqliteConnection) -> QueryResult<[Checkpointed; 2]> {
    let mut one = |schema: &str| {
        diesel::sql_query(format!("PRAGMA {schema}.wal_checkpoint(PASSIVE)")).get_result::<Checkpointed>(conn)
    };
    Ok([one(SCHEMAS[0])?, one(SCHEMAS[1])?])
}

/// On the writer's connection: a `PASSIVE` checkpoint of the audit file (its `main`) alone.
/// Right after the thread's, it has only the frames appended since to copy; with every frame
/// copied and no reader in the WAL, the writer's next transaction starts the WAL again.
fn finish_audit_checkpoint(writer: &mut SqliteConnection) -> QueryResult<Checkpointed> {
    diesel::sql_query("PRAGMA main.wal_checkpoint(PASSIVE)").get_result::<Checkpointed>(writer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handout_log::tests::{handout_audit, handout_record, sqlite_store};
    use crate::handout_log::write_sqlite;
    use diesel::connection::SimpleConnection as _;

    /// SQLite's default `wal_autocheckpoint`, in pages.
    const AUTOCHECKPOINT_PAGES: u64 = 1000;

    /// The writer's commits take the audit file's WAL past SQLite's automatic checkpoint without
    /// one running (the WAL file only grows), and a checkpoint on another connection then copies
    /// all of it, in both files.
    #[tokio::test]
    async fn the_writers_commits_leave_the_checkpoint_to_another_connection() {
        let (store, dir) = sqlite_store(Default::default()).await;
        let (path, busy_timeout) = store.sqlite_file().map(|(p, t)| (p.to_owned(), t)).unwrap();
        let counter = store.call_counter();
        let mut writer = open_sqlite(&path, busy_timeout, &counter).unwrap();
        let mut wal = crate::handout_audit::side_path(&path).into_os_string();
        wal.push("-wal");
        // A frame is a page (4,096 bytes) and a 24-byte header. With automatic checkpoints, the
        // WAL would restart from its beginning once past 1,000 frames and stay near that size.
        let past_autocheckpoint = (AUTOCHECKPOINT_PAGES + 200) * (4096 + 24);
        let mut commits = 0;
        while std::fs::metadata(&wal).map_or(0, |m| m.len()) < past_autocheckpoint {
            let batch: Vec<_> = (0..16).map(|_| handout_record(handout_audit())).collect();
            write_sqlite(&mut writer, &batch).unwrap();
            commits += 1;
            assert!(commits < 20_000, "the WAL stopped growing: something checkpointed it");
        }
        let mut other = open_sqlite(&path, busy_timeout, &counter).unwrap();
        let [audit, main] = checkpoint(&mut other).unwrap();
        assert_eq!(audit.busy, 0);
        assert!(audit.log as u64 > AUTOCHECKPOINT_PAGES, "{audit:?}: nothing checkpointed during the commits");
        assert_eq!(audit.checkpointed, audit.log, "a PASSIVE checkpoint with no reader copies every frame");
        assert_eq!((main.busy, main.checkpointed), (0, main.log), "the main file: {main:?}");
        drop((writer, other, store));
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// A checkpointer without a thread, whose thread has not completed a checkpoint yet.
    fn threadless(nudge: Option<SyncSender<()>>) -> Checkpointer {
        Checkpointer { nudge, commits: 0, checkpointed: Arc::new(AtomicBool::new(false)), thread: None }
    }

    #[test]
    fn every_nth_commit_nudges_and_nudges_coalesce() {
        let (nudge, nudged) = sync_channel(1);
        let mut checkpointer = threadless(Some(nudge));
        let mut writer = SqliteConnection::establish(":memory:").unwrap();
        for _ in 0..CHECKPOINT_EVERY_BATCHES - 1 {
            checkpointer.committed(&mut writer);
        }
        assert!(nudged.try_recv().is_err(), "no nudge before the {CHECKPOINT_EVERY_BATCHES}th commit");
        checkpointer.committed(&mut writer);
        assert!(nudged.try_recv().is_ok(), "the {CHECKPOINT_EVERY_BATCHES}th commit nudges");
        // Three more rounds while the thread is busy: one nudge waits, the others are dropped.
        for _ in 0..3 * CHECKPOINT_EVERY_BATCHES {
            checkpointer.committed(&mut writer);
        }
        assert!(nudged.try_recv().is_ok());
        assert!(nudged.try_recv().is_err(), "nudges coalesce into one");
        // A thread that has ended leaves the writer unaffected.
        drop(nudged);
        for _ in 0..2 * CHECKPOINT_EVERY_BATCHES {
            checkpointer.committed(&mut writer);
        }
        assert!(checkpointer.nudge.is_none());
    }

    /// The race that kept the audit file's WAL growing under load, played in order: the thread's
    /// checkpoint cannot copy the frames the writer appended while it ran (here, a reader's
    /// snapshot from before those frames holds them back, as the checkpoint's own start would).
    /// Left alone, the writer's next commit appends again; once the writer has finished the
    /// checkpoint, its next commit rewrites the WAL from its beginning.
    #[tokio::test]
    async fn the_writer_finishes_the_threads_checkpoint_so_that_the_wal_starts_again() {
        let (store, dir) = sqlite_store(Default::default()).await;
        let (path, busy_timeout) = store.sqlite_file().map(|(p, t)| (p.to_owned(), t)).unwrap();
        let counter = store.call_counter();
        let open = || open_sqlite(&path, busy_timeout, &counter).unwrap();
        let (mut writer, mut reader, mut thread) = (open(), open(), open());
        let mut wal = crate::handout_audit::side_path(&path).into_os_string();
        wal.push("-wal");
        let wal_bytes = || std::fs::metadata(&wal).unwrap().len();
        let commit = |writer: &mut SqliteConnection| {
            let batch: Vec<_> = (0..16).map(|_| handout_record(handout_audit())).collect();
            write_sqlite(writer, &batch).unwrap();
        };
        for _ in 0..20 {
            commit(&mut writer);
        }
        reader.batch_execute("BEGIN; SELECT count(*) FROM audit_log;").unwrap();
        for _ in 0..20 {
            commit(&mut writer);
        }
        let [audit, _] = checkpoint(&mut thread).unwrap();
        assert!(0 < audit.checkpointed && audit.checkpointed < audit.log, "the thread copied part: {audit:?}");
        reader.batch_execute("COMMIT;").unwrap();

        let mut checkpointer = threadless(None);
        checkpointer.committed(&mut writer);
        let before = wal_bytes();
        commit(&mut writer);
        assert!(wal_bytes() > before, "without the thread's signal, the writer's commit appends");

        checkpointer.checkpointed.store(true, Ordering::Release);
        checkpointer.committed(&mut writer);
        assert!(!checkpointer.checkpointed.load(Ordering::Acquire), "the signal is taken");
        let before = wal_bytes();
        commit(&mut writer);
        assert_eq!(wal_bytes(), before, "the commit rewrote the WAL's first frames");
        let one_commit = finish_audit_checkpoint(&mut thread).unwrap();
        assert!(
            one_commit.log > 0 && one_commit.log < audit.log / 10,
            "the WAL holds the last commit alone: {one_commit:?}, before {audit:?}"
        );
        drop((writer, reader, thread, store));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
