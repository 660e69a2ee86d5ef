//! Where log lines (and console span lines) go: stdout, either written by the thread that logs
//! or gathered and written in batches by a background thread.
//!
//! Under Lambda every line is written at once ([`LogSink::direct`]): an invocation's lines must
//! be out before its response is posted, because Lambda may freeze the sandbox right after.
//!
//! In server mode one `write(2)` per access line was a measured share of the request cost (a
//! system call, and the stdout lock the runtime's workers contend for). [`LogSink::batched`]
//! appends each line to a buffer under a short lock, and a thread named `log-writer` writes
//! the buffer every [`FLUSH_INTERVAL`]. No line is dropped while the process lives: a buffer past
//! [`HIGH_WATER`] (stdout slower than the logging) is written by the thread that filled it, so a
//! stuck reader slows requests down instead of growing memory. Lines keep their order: the
//! buffer is taken and written under one lock. [`LogSink::finish`] (telemetry shutdown) writes
//! what is left and turns the sink direct, so lines logged after it are still seen; a panic
//! hook writes the buffer before a panic's own message. Only a process killed outright
//! (SIGKILL, an OOM kill) loses up to one interval of lines.
//!
//! Why not `tracing-appender`'s non-blocking writer: it sends each line over a channel to its
//! worker, which is woken, writes and flushes per line when it keeps up, so the per-line system
//! call and a thread wake-up stay; it drops lines when its queue is full (lossy by default),
//! and it would be a dependency for ~100 lines.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

/// How long a line may wait in the buffer in server mode.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(20);

/// Buffered bytes past which the logging thread writes the buffer itself.
pub const HIGH_WATER: usize = 256 * 1024;

/// Handle on the log output; cheap to clone.
#[derive(Clone)]
pub struct LogSink {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for LogSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogSink")
            .field("batching", &self.shared.batching.load(Ordering::Relaxed))
            .finish()
    }
}

struct Shared {
    batching: AtomicBool,
    buffer: Mutex<Vec<u8>>,
    /// Held while bytes go to the output, taken before `buffer`: lines leave in order.
    output: Mutex<Box<dyn Write + Send>>,
    writer_thread: Mutex<Option<JoinHandle<()>>>,
}

fn lock<T: ?Sized>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl LogSink {
    /// Every line written to stdout by the thread that logs it.
    pub fn direct() -> Self {
        Self::new(Box::new(std::io::stdout()), false)
    }

    /// [`Self::direct`] to any output (tests).
    pub fn direct_to(output: Box<dyn Write + Send>) -> Self {
        Self::new(output, false)
    }

    /// Lines written to stdout in batches by a background thread.
    pub fn batched() -> Self {
        Self::batched_to(Box::new(std::io::stdout()))
    }

    /// [`Self::batched`] to any output (tests).
    pub fn batched_to(output: Box<dyn Write + Send>) -> Self {
        let sink = Self::new(output, true);
        sink.install_panic_flush();
        let shared = Arc::downgrade(&sink.shared);
        let spawned = std::thread::Builder::new()
            .name("log-writer".to_owned())
            .spawn(move || {
                loop {
                    std::thread::park_timeout(FLUSH_INTERVAL);
                    let Some(shared) = shared.upgrade() else {
                        return;
                    };
                    shared.write_pending();
                    if !shared.batching.load(Ordering::Acquire) {
                        return;
                    }
                }
            });
        match spawned {
            Ok(handle) => *lock(&sink.shared.writer_thread) = Some(handle),
            // No thread, no batching: every line is written where it is logged.
            Err(_) => sink.shared.batching.store(false, Ordering::Release),
        }
        sink
    }

    /// A panic that ends the process would otherwise lose the last interval's lines: the hook
    /// writes them first, then runs the hook that was there.
    fn install_panic_flush(&self) {
        let shared = Arc::downgrade(&self.shared);
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if let Some(shared) = shared.upgrade() {
                shared.write_pending();
            }
            previous(info);
        }));
    }

    fn new(output: Box<dyn Write + Send>, batching: bool) -> Self {
        Self {
            shared: Arc::new(Shared {
                batching: AtomicBool::new(batching),
                buffer: Mutex::new(Vec::new()),
                output: Mutex::new(output),
                writer_thread: Mutex::new(None),
            }),
        }
    }

    /// Writes complete lines (each ending in `\n`).
    pub fn write(&self, lines: &[u8]) {
        let shared = &self.shared;
        if shared.batching.load(Ordering::Acquire) {
            let write_now = {
                let mut buffer = lock(&shared.buffer);
                buffer.extend_from_slice(lines);
                // Checked again under the lock: if `finish` ran since, nobody else will write
                // this line.
                buffer.len() >= HIGH_WATER || !shared.batching.load(Ordering::Acquire)
            };
            if write_now {
                shared.write_pending();
            }
            return;
        }
        let mut output = lock(&shared.output);
        let _ = output.write_all(lines).and_then(|()| output.flush());
    }

    /// Writes what is buffered, stops the background thread and makes the sink direct.
    pub fn finish(&self) {
        self.shared.batching.store(false, Ordering::Release);
        self.shared.write_pending();
        if let Some(handle) = lock(&self.shared.writer_thread).take() {
            handle.thread().unpark();
            let _ = handle.join();
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        let pending = std::mem::take(self.buffer.get_mut().unwrap_or_else(|p| p.into_inner()));
        if !pending.is_empty() {
            let output = self.output.get_mut().unwrap_or_else(|p| p.into_inner());
            let _ = output.write_all(&pending).and_then(|()| output.flush());
        }
    }
}

impl Shared {
    fn write_pending(&self) {
        let mut output = lock(&self.output);
        let pending = std::mem::take(&mut *lock(&self.buffer));
        if !pending.is_empty() {
            let _ = output.write_all(&pending).and_then(|()| output.flush());
        }
    }
}

/// One event's bytes for `tracing_subscriber::fmt` (human format), handed to the sink whole
/// when the formatter is done with it.
pub struct EventWriter {
    sink: LogSink,
    bytes: Vec<u8>,
}

impl Write for EventWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for EventWriter {
    fn drop(&mut self) {
        if !self.bytes.is_empty() {
            self.sink.write(&self.bytes);
        }
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogSink {
    type Writer = EventWriter;

    fn make_writer(&'a self) -> Self::Writer {
        EventWriter {
            sink: self.clone(),
            bytes: Vec::new(),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An output the test can read back.
    #[derive(Clone, Default)]
    pub(crate) struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            lock(&self.0).extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        pub(crate) fn text(&self) -> String {
            String::from_utf8(lock(&self.0).clone()).unwrap()
        }
    }

    #[test]
    fn batched_lines_arrive_in_order_within_the_interval() {
        let out = Captured::default();
        let sink = LogSink::batched_to(Box::new(out.clone()));
        sink.write(b"one\n");
        sink.write(b"two\n");
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while out.text().is_empty() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(
            out.text(),
            "one\ntwo\n",
            "the writer thread wrote them, in order"
        );
        sink.finish();
    }

    #[test]
    fn a_full_buffer_is_written_by_the_logger_and_nothing_is_lost() {
        let out = Captured::default();
        // Batching without the writer thread: only the high-water rule and `finish` write.
        let sink = LogSink::new(Box::new(out.clone()), true);
        let line = format!("{}\n", "x".repeat(1023));
        sink.write(line.as_bytes());
        assert_eq!(out.text(), "", "below the high-water mark the line waits");
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let sink = sink.clone();
                let line = line.clone();
                std::thread::spawn(move || {
                    for _ in 0..100 {
                        sink.write(line.as_bytes());
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let written = out.text().len();
        assert!(
            written >= HIGH_WATER,
            "past the high-water mark the loggers wrote the buffer: {written}"
        );
        sink.finish();
        let text = out.text();
        assert_eq!(text.len(), 401 * 1024, "every byte written once");
        assert!(text.lines().all(|l| l.len() == 1023), "no line torn");
    }

    #[test]
    fn after_finish_lines_are_written_at_once() {
        let out = Captured::default();
        let sink = LogSink::batched_to(Box::new(out.clone()));
        sink.write(b"before\n");
        sink.finish();
        assert_eq!(out.text(), "before\n", "finish writes what is buffered");
        sink.write(b"after\n");
        assert_eq!(out.text(), "before\nafter\n");
    }
}
