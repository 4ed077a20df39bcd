//! Container log files in the CRI format, with size-based rotation, and
//! their reader (what `kubectl logs` needs: follow, tail, since, timestamps,
//! limit, previous files).
//!
//! Each line of a log file is `<RFC3339Nano timestamp> <stdout|stderr>
//! <F|P> <content>\n`: `P` marks a chunk of a longer line that continues in
//! the next entry, `F` the end of a line. Lines longer than
//! [`MAX_LINE`] bytes are split into `P` chunks, as containerd does.
//!
//! Rotation: when the file `N.log` would grow past `max_size`, it becomes
//! `N.log.1` (the older ones shifting to `.2`, … and the oldest beyond
//! `max_files - 1` being deleted) and a new `N.log` is started. Each entry is
//! written with one `write(2)`, so a reader never sees half an entry except
//! while it is being written.

use crate::types::LogRotation;
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::Stream;
use jiff::Timestamp;
use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Longest line content written as one entry.
pub const MAX_LINE: usize = 16 * 1024;

/// Which output stream a log entry came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogStream {
    Stdout,
    Stderr,
}

impl LogStream {
    pub fn as_str(self) -> &'static str {
        match self {
            LogStream::Stdout => "stdout",
            LogStream::Stderr => "stderr",
        }
    }
}

/// One parsed log entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry<'a> {
    /// The timestamp as written.
    pub timestamp: &'a str,
    pub stream: LogStream,
    /// `P`: the line continues in the next entry.
    pub partial: bool,
    pub content: &'a [u8],
}

/// Parses one entry (without its trailing newline). `None` for a malformed
/// line.
pub fn parse_entry(line: &[u8]) -> Option<LogEntry<'_>> {
    let mut parts = line.splitn(4, |b| *b == b' ');
    let timestamp = std::str::from_utf8(parts.next()?).ok()?;
    let stream = match parts.next()? {
        b"stdout" => LogStream::Stdout,
        b"stderr" => LogStream::Stderr,
        _ => return None,
    };
    let partial = match parts.next()? {
        b"P" => true,
        b"F" => false,
        _ => return None,
    };
    let content = parts.next().unwrap_or(b"");
    Some(LogEntry {
        timestamp,
        stream,
        partial,
        content,
    })
}

/// Appends one entry, newline included, to `out`.
pub fn format_entry(
    out: &mut Vec<u8>,
    ts: Timestamp,
    stream: LogStream,
    partial: bool,
    content: &[u8],
) {
    // Writing into a Vec cannot fail.
    let _ = write!(
        out,
        "{ts} {} {} ",
        stream.as_str(),
        if partial { 'P' } else { 'F' }
    );
    out.extend_from_slice(content);
    out.push(b'\n');
}

/// Cuts a byte stream into log lines: complete lines are emitted as `F`
/// entries, lines longer than [`MAX_LINE`] as `P` chunks.
#[derive(Debug, Default)]
pub struct LineSplitter {
    buf: Vec<u8>,
}

impl LineSplitter {
    /// Feeds `data`; calls `emit(content, partial)` for each entry ready.
    pub fn push(&mut self, mut data: &[u8], mut emit: impl FnMut(&[u8], bool)) {
        while !data.is_empty() {
            match memchr(data) {
                Some(i) => {
                    if self.buf.is_empty() {
                        emit_line(&data[..i], &mut emit);
                    } else {
                        self.buf.extend_from_slice(&data[..i]);
                        let line = std::mem::take(&mut self.buf);
                        emit_line(&line, &mut emit);
                    }
                    data = &data[i + 1..];
                }
                None => {
                    self.buf.extend_from_slice(data);
                    while self.buf.len() > MAX_LINE {
                        emit(&self.buf[..MAX_LINE], true);
                        self.buf.drain(..MAX_LINE);
                    }
                    data = &[];
                }
            }
        }
    }

    /// End of stream: a pending unterminated line is emitted as a full one
    /// (as containerd does).
    pub fn finish(&mut self, mut emit: impl FnMut(&[u8], bool)) {
        if !self.buf.is_empty() {
            let line = std::mem::take(&mut self.buf);
            emit(&line, false);
        }
    }
}

fn memchr(data: &[u8]) -> Option<usize> {
    data.iter().position(|b| *b == b'\n')
}

fn emit_line(mut line: &[u8], emit: &mut impl FnMut(&[u8], bool)) {
    while line.len() > MAX_LINE {
        emit(&line[..MAX_LINE], true);
        line = &line[MAX_LINE..];
    }
    emit(line, false);
}

/// The rotated file `n` of `path` (`0.log.1`, …).
pub fn rotated_path(path: &Path, n: u32) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

/// The existing files of one container instance's log, oldest first (the
/// rotated ones, then `path` itself if it exists).
pub fn log_files(path: &Path) -> Vec<PathBuf> {
    let mut rotated: Vec<(u32, PathBuf)> = Vec::new();
    if let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) {
        let prefix = format!("{name}.");
        if let Ok(entries) = fs::read_dir(dir) {
            for e in entries.flatten() {
                let fname = e.file_name();
                let Some(fname) = fname.to_str() else {
                    continue;
                };
                if let Some(n) = fname
                    .strip_prefix(&prefix)
                    .and_then(|s| s.parse::<u32>().ok())
                {
                    rotated.push((n, e.path()));
                }
            }
        }
    }
    rotated.sort_by_key(|r| std::cmp::Reverse(r.0));
    let mut files: Vec<PathBuf> = rotated.into_iter().map(|(_, p)| p).collect();
    if path.exists() {
        files.push(path.to_owned());
    }
    files
}

/// Removes a container instance's log file and its rotated files.
pub fn remove_log_files(path: &Path) -> io::Result<()> {
    for f in log_files(path) {
        match fs::remove_file(&f) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

/// Appends entries to a log file, rotating it by size.
#[derive(Debug)]
pub struct LogWriter {
    path: PathBuf,
    rotation: LogRotation,
    file: File,
    size: u64,
    buf: Vec<u8>,
}

impl LogWriter {
    /// Opens (creating it and its directory) `path` for appending.
    pub fn open(path: &Path, rotation: LogRotation) -> io::Result<Self> {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let size = file.metadata()?.len();
        Ok(LogWriter {
            path: path.to_owned(),
            rotation,
            file,
            size,
            buf: Vec::with_capacity(256),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes one entry, rotating first if it would not fit.
    pub fn write_entry(
        &mut self,
        ts: Timestamp,
        stream: LogStream,
        partial: bool,
        content: &[u8],
    ) -> io::Result<()> {
        self.buf.clear();
        format_entry(&mut self.buf, ts, stream, partial, content);
        if self.size > 0 && self.size + self.buf.len() as u64 > self.rotation.max_size {
            self.rotate()?;
        }
        self.file.write_all(&self.buf)?;
        self.size += self.buf.len() as u64;
        Ok(())
    }

    /// Reopens the file at `path` (after someone moved it away).
    pub fn reopen(&mut self) -> io::Result<()> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        self.size = file.metadata()?.len();
        self.file = file;
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        let keep = self.rotation.max_files.max(1) - 1;
        if keep == 0 {
            self.file = OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(true)
                .open(&self.path)?;
            self.size = 0;
            return Ok(());
        }
        // Drop what falls off the end, then shift.
        for stale in log_files(&self.path) {
            if let Some(n) = stale
                .to_str()
                .and_then(|s| s.rsplit('.').next())
                .and_then(|n| n.parse::<u32>().ok())
            {
                if n >= keep && stale != self.path {
                    let _ = fs::remove_file(&stale);
                }
            }
        }
        for n in (1..keep).rev() {
            let from = rotated_path(&self.path, n);
            if from.exists() {
                fs::rename(&from, rotated_path(&self.path, n + 1))?;
            }
        }
        fs::rename(&self.path, rotated_path(&self.path, 1))?;
        self.reopen()
    }
}

/// What to read from a log (the `pods/log` query parameters).
#[derive(Debug, Clone, Default)]
pub struct LogOptions {
    /// Keep reading new entries until the stop future resolves.
    pub follow: bool,
    /// Only the last N lines.
    pub tail_lines: Option<u64>,
    /// Only entries at or after this time.
    pub since: Option<Timestamp>,
    /// Prefix each line with its timestamp and a space.
    pub timestamps: bool,
    /// Stop after this many bytes of output.
    pub limit_bytes: Option<u64>,
    /// Streams to show; both when both are false.
    pub stdout: bool,
    pub stderr: bool,
}

impl LogOptions {
    fn wants(&self, e: &LogEntry<'_>) -> bool {
        let stream_ok = (!self.stdout && !self.stderr)
            || (self.stdout && e.stream == LogStream::Stdout)
            || (self.stderr && e.stream == LogStream::Stderr);
        if !stream_ok {
            return false;
        }
        match self.since {
            None => true,
            Some(since) => e
                .timestamp
                .parse::<Timestamp>()
                .map(|t| t >= since)
                .unwrap_or(true),
        }
    }
}

/// How often a following reader looks for new entries.
const FOLLOW_POLL: Duration = Duration::from_millis(100);

/// Reads a container instance's log (its rotated files first). Build with
/// [`LogReader::new`], consume with [`LogReader::next_chunk`] or
/// [`LogReader::into_stream`]. Reads are plain file reads on the calling
/// task: log files are local and the page cache makes them short.
pub struct LogReader {
    path: PathBuf,
    opts: LogOptions,
    stop: Option<BoxFuture<'static, ()>>,
    stopping: bool,
    files: VecDeque<PathBuf>,
    cur: Option<(BufReader<File>, u64, bool)>,
    line: Vec<u8>,
    skip: u64,
    remaining: Option<u64>,
    done: bool,
}

impl LogReader {
    /// `stop` ends a follow once it resolves (the container exited): what
    /// was written up to then is still returned.
    pub fn new(path: impl Into<PathBuf>, opts: LogOptions, stop: BoxFuture<'static, ()>) -> Self {
        let path = path.into();
        let files: VecDeque<PathBuf> = log_files(&path).into();
        let skip = match opts.tail_lines {
            Some(n) => count_lines(&files, &opts).saturating_sub(n),
            None => 0,
        };
        LogReader {
            path,
            remaining: opts.limit_bytes,
            opts,
            stop: Some(stop),
            stopping: false,
            files,
            cur: None,
            line: Vec::new(),
            skip,
            done: false,
        }
    }

    /// The next piece of output, `None` at the end.
    pub async fn next_chunk(&mut self) -> io::Result<Option<Bytes>> {
        loop {
            if self.done || self.remaining == Some(0) {
                return Ok(None);
            }
            if self.cur.is_none() {
                match self.files.pop_front() {
                    Some(p) => {
                        let is_current = p == self.path;
                        match File::open(&p) {
                            Ok(f) => {
                                let ino = f.metadata()?.ino();
                                self.cur = Some((BufReader::new(f), ino, is_current));
                            }
                            // Rotated away between listing and opening.
                            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                            Err(e) => return Err(e),
                        }
                    }
                    None => {
                        if !self.opts.follow || self.stopping {
                            self.done = true;
                            return Ok(None);
                        }
                        // The current file does not exist (yet).
                        self.wait().await;
                        if self.path.exists() {
                            self.files.push_back(self.path.clone());
                        }
                        continue;
                    }
                }
            }
            let (reader, ino, is_current) = self.cur.as_mut().expect("opened above");
            let (ino, is_current) = (*ino, *is_current);
            let n = reader.read_until(b'\n', &mut self.line)?;
            if n > 0 && self.line.last() == Some(&b'\n') {
                let line = std::mem::take(&mut self.line);
                if let Some(out) = self.render(&line[..line.len() - 1]) {
                    return Ok(Some(self.limit(out)));
                }
                continue;
            }
            // End of this file (maybe with half an entry in `self.line`).
            if !is_current {
                self.line.clear();
                self.cur = None;
                continue;
            }
            if !self.opts.follow || self.stopping {
                self.done = true;
                return Ok(None);
            }
            if fs::metadata(&self.path).map(|m| m.ino()).ok() != Some(ino) {
                // Rotated: everything of the old file was read.
                self.line.clear();
                self.cur = None;
                self.files.push_back(self.path.clone());
                continue;
            }
            self.wait().await;
        }
    }

    /// Waits for more data or the stop signal; after the stop signal the
    /// reader drains what is there and ends.
    async fn wait(&mut self) {
        let Some(stop) = self.stop.as_mut() else {
            self.stopping = true;
            return;
        };
        tokio::select! {
            _ = tokio::time::sleep(FOLLOW_POLL) => {}
            _ = stop => {
                self.stop = None;
                self.stopping = true;
            }
        }
    }

    fn render(&mut self, line: &[u8]) -> Option<Bytes> {
        let e = parse_entry(line)?;
        if !self.opts.wants(&e) {
            return None;
        }
        if self.skip > 0 {
            self.skip -= 1;
            return None;
        }
        let mut out = Vec::with_capacity(e.content.len() + 40);
        if self.opts.timestamps {
            out.extend_from_slice(e.timestamp.as_bytes());
            out.push(b' ');
        }
        out.extend_from_slice(e.content);
        if !e.partial {
            out.push(b'\n');
        }
        Some(Bytes::from(out))
    }

    fn limit(&mut self, mut out: Bytes) -> Bytes {
        if let Some(rem) = self.remaining.as_mut() {
            if out.len() as u64 > *rem {
                out.truncate(*rem as usize);
            }
            *rem -= out.len() as u64;
        }
        out
    }

    /// The reader as a stream of chunks; ends after the first error.
    pub fn into_stream(self) -> impl Stream<Item = io::Result<Bytes>> + Send {
        futures::stream::unfold(Some(self), |r| async move {
            let mut r = r?;
            match r.next_chunk().await {
                Ok(Some(b)) => Some((Ok(b), Some(r))),
                Ok(None) => None,
                Err(e) => Some((Err(e), None)),
            }
        })
    }
}

fn count_lines(files: &VecDeque<PathBuf>, opts: &LogOptions) -> u64 {
    let mut n = 0;
    for p in files {
        let Ok(f) = File::open(p) else { continue };
        for line in BufReader::new(f).split(b'\n').map_while(Result::ok) {
            if parse_entry(&line).is_some_and(|e| opts.wants(&e)) {
                n += 1;
            }
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    fn never() -> BoxFuture<'static, ()> {
        Box::pin(futures::future::pending())
    }

    async fn read_all(path: &Path, opts: LogOptions) -> String {
        let chunks: Vec<_> = LogReader::new(path, opts, never())
            .into_stream()
            .collect()
            .await;
        let mut s = String::new();
        for c in chunks {
            s.push_str(std::str::from_utf8(&c.unwrap()).unwrap());
        }
        s
    }

    #[test]
    fn entries_round_trip() {
        let mut out = Vec::new();
        let ts: Timestamp = "2024-01-02T03:04:05.123456789Z".parse().unwrap();
        format_entry(&mut out, ts, LogStream::Stderr, true, b"a b c");
        assert_eq!(out, b"2024-01-02T03:04:05.123456789Z stderr P a b c\n");
        let e = parse_entry(&out[..out.len() - 1]).unwrap();
        assert_eq!(e.stream, LogStream::Stderr);
        assert!(e.partial);
        assert_eq!(e.content, b"a b c");
        assert_eq!(parse_entry(b"ts stdout F ").unwrap().content, b"");
        assert!(parse_entry(b"garbage").is_none());
        assert!(parse_entry(b"ts stdin F x").is_none());
    }

    #[test]
    fn splitter_cuts_lines_and_long_lines() {
        let mut s = LineSplitter::default();
        let mut got: Vec<(Vec<u8>, bool)> = Vec::new();
        s.push(b"one\ntw", |l, p| got.push((l.to_vec(), p)));
        s.push(b"o\n\nthree", |l, p| got.push((l.to_vec(), p)));
        s.finish(|l, p| got.push((l.to_vec(), p)));
        let want: Vec<(Vec<u8>, bool)> = vec![
            (b"one".to_vec(), false),
            (b"two".to_vec(), false),
            (b"".to_vec(), false),
            (b"three".to_vec(), false),
        ];
        assert_eq!(got, want);

        let long = vec![b'x'; MAX_LINE * 2 + 10];
        let mut got = Vec::new();
        s.push(&long, |l, p| got.push((l.len(), p)));
        s.push(b"\n", |l, p| got.push((l.len(), p)));
        assert_eq!(got, vec![(MAX_LINE, true), (MAX_LINE, true), (10, false)]);
    }

    #[tokio::test]
    async fn writer_rotates_and_reader_reads_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c/0.log");
        let rotation = LogRotation {
            max_size: 300,
            max_files: 3,
        };
        let mut w = LogWriter::open(&path, rotation).unwrap();
        for i in 0..40 {
            w.write_entry(
                Timestamp::now(),
                LogStream::Stdout,
                false,
                format!("line {i:02}").as_bytes(),
            )
            .unwrap();
        }
        let files = log_files(&path);
        assert_eq!(files.len(), 3, "{files:?}");
        assert_eq!(files[0], rotated_path(&path, 2));
        assert!(!rotated_path(&path, 3).exists());
        for f in &files {
            assert!(fs::metadata(f).unwrap().len() <= 300);
        }
        let all = read_all(&path, LogOptions::default()).await;
        let lines: Vec<&str> = all.lines().collect();
        assert_eq!(*lines.last().unwrap(), "line 39");
        // Consecutive and in order.
        let first: usize = lines[0][5..].parse().unwrap();
        for (k, l) in lines.iter().enumerate() {
            assert_eq!(*l, format!("line {:02}", first + k));
        }

        let tail = read_all(
            &path,
            LogOptions {
                tail_lines: Some(2),
                ..Default::default()
            },
        )
        .await;
        assert_eq!(tail, "line 38\nline 39\n");
        let limited = read_all(
            &path,
            LogOptions {
                tail_lines: Some(2),
                limit_bytes: Some(10),
                ..Default::default()
            },
        )
        .await;
        assert_eq!(limited, "line 38\nli");
        let ts = read_all(
            &path,
            LogOptions {
                tail_lines: Some(1),
                timestamps: true,
                ..Default::default()
            },
        )
        .await;
        assert!(ts.ends_with("Z line 39\n"), "{ts}");
        remove_log_files(&path).unwrap();
        assert!(log_files(&path).is_empty());
    }

    #[tokio::test]
    async fn stream_filter_and_since() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let mut w = LogWriter::open(&path, LogRotation::default()).unwrap();
        let t0: Timestamp = "2024-01-01T00:00:00Z".parse().unwrap();
        let t1: Timestamp = "2024-01-01T00:00:10Z".parse().unwrap();
        w.write_entry(t0, LogStream::Stdout, false, b"old out")
            .unwrap();
        w.write_entry(t1, LogStream::Stderr, true, b"new ").unwrap();
        w.write_entry(t1, LogStream::Stderr, false, b"err").unwrap();
        w.write_entry(t1, LogStream::Stdout, false, b"new out")
            .unwrap();
        let err_only = read_all(
            &path,
            LogOptions {
                stderr: true,
                ..Default::default()
            },
        )
        .await;
        assert_eq!(err_only, "new err\n");
        let since = read_all(
            &path,
            LogOptions {
                since: Some("2024-01-01T00:00:05Z".parse().unwrap()),
                ..Default::default()
            },
        )
        .await;
        assert_eq!(since, "new err\nnew out\n");
    }

    #[tokio::test(start_paused = true)]
    async fn follow_sees_new_entries_across_rotation_until_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let rotation = LogRotation {
            max_size: 200,
            max_files: 2,
        };
        let mut w = LogWriter::open(&path, rotation).unwrap();
        w.write_entry(Timestamp::now(), LogStream::Stdout, false, b"first")
            .unwrap();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let stop: BoxFuture<'static, ()> = Box::pin(async move {
            let _ = stop_rx.await;
        });
        let mut r = LogReader::new(
            &path,
            LogOptions {
                follow: true,
                ..Default::default()
            },
            stop,
        );
        assert_eq!(r.next_chunk().await.unwrap().unwrap(), "first\n");
        let writer = tokio::spawn(async move {
            for i in 0..10 {
                tokio::time::sleep(Duration::from_millis(250)).await;
                w.write_entry(
                    Timestamp::now(),
                    LogStream::Stdout,
                    false,
                    format!("entry {i}").as_bytes(),
                )
                .unwrap();
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
            stop_tx.send(()).unwrap();
        });
        let mut got = Vec::new();
        while let Some(c) = r.next_chunk().await.unwrap() {
            got.push(String::from_utf8(c.to_vec()).unwrap());
        }
        writer.await.unwrap();
        let want: Vec<String> = (0..10).map(|i| format!("entry {i}\n")).collect();
        assert_eq!(got, want);
    }
}
