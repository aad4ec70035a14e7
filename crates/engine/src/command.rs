//! External commands (`zfs`, `btrfs`), run the one way strata runs them.
//!
//! - never through a shell: a program and its arguments;
//! - at most [`max_children`] at a time in this process (a caller past
//!   the bound waits for a slot), so a burst of saves cannot exhaust
//!   processes or descriptors;
//! - standard error captured (its last [`STDERR_KEPT`] bytes) into the
//!   error, with the exit status, which is always checked;
//! - a command whose data stops flowing for its stall timeout is killed
//!   (a `zfs send` or `receive` stuck on a dead pool must not hang a save
//!   forever);
//! - every child is waited for and every pipe closed on every path, errors
//!   and panics of the caller's reader or writer included: no zombie, no
//!   leaked descriptor (the standard library opens pipes close-on-exec).

use std::ffi::{OsStr, OsString};
use std::io::{self, Read, Write};
use std::process::{Child, ChildStderr, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// How much of a command's standard error an error keeps (the end of it).
pub const STDERR_KEPT: usize = 8 << 10;

/// The default most children running at once ([`set_max_children`]).
pub const DEFAULT_MAX_CHILDREN: usize = 8;

/// The default stall timeout: how long a command may go without moving a
/// byte of its data before it is killed.
pub const DEFAULT_STALL: Duration = Duration::from_secs(300);

/// What went wrong running a command.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// It could not be started (not installed, not executable).
    #[error("{what}: cannot run {program:?}: {source}")]
    Spawn {
        /// The command line, for the message.
        what: String,
        /// The program.
        program: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// It exited unsuccessfully (or was killed by a signal).
    #[error("{what}: {status}{}", stderr_suffix(.stderr))]
    Failed {
        /// The command line.
        what: String,
        /// How it ended.
        status: ExitStatus,
        /// The end of its standard error.
        stderr: String,
    },
    /// Its data stopped flowing for longer than the stall timeout, and it
    /// was killed.
    #[error("{what}: no data moved for {secs} s; killed{}", stderr_suffix(.stderr))]
    Stalled {
        /// The command line.
        what: String,
        /// The stall timeout in seconds.
        secs: u64,
        /// The end of its standard error.
        stderr: String,
    },
    /// Reading what was fed to it, or writing what it produced, failed; it
    /// was killed. The error is the caller's reader's or writer's.
    #[error("{what}: {source}")]
    Data {
        /// The command line.
        what: String,
        /// The reader's or writer's error.
        #[source]
        source: io::Error,
    },
}

fn stderr_suffix(s: &str) -> String {
    let s = s.trim();
    if s.is_empty() {
        String::new()
    } else {
        format!(": {s}")
    }
}

impl CommandError {
    /// The standard error the command printed, if it ran.
    pub fn stderr(&self) -> &str {
        match self {
            CommandError::Failed { stderr, .. } | CommandError::Stalled { stderr, .. } => stderr,
            _ => "",
        }
    }
}

/// A command to run: a program, its arguments and its stall timeout.
#[derive(Debug, Clone)]
pub struct Cmd {
    program: OsString,
    args: Vec<OsString>,
    stall: Duration,
}

impl Cmd {
    /// `program` with no arguments and the [`DEFAULT_STALL`] timeout.
    pub fn new(program: impl AsRef<OsStr>) -> Self {
        Self {
            program: program.as_ref().to_os_string(),
            args: Vec::new(),
            stall: DEFAULT_STALL,
        }
    }

    /// Appends an argument.
    pub fn arg(mut self, a: impl AsRef<OsStr>) -> Self {
        self.args.push(a.as_ref().to_os_string());
        self
    }

    /// Appends arguments.
    pub fn args<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(mut self, it: I) -> Self {
        self.args
            .extend(it.into_iter().map(|a| a.as_ref().to_os_string()));
        self
    }

    /// Sets the stall timeout.
    pub fn stall(mut self, d: Duration) -> Self {
        self.stall = d;
        self
    }

    /// The command line, for messages.
    pub fn describe(&self) -> String {
        let mut s = self.program.to_string_lossy().into_owned();
        for a in &self.args {
            s.push(' ');
            s.push_str(&a.to_string_lossy());
        }
        s
    }

    /// Runs it to the end and returns its standard output (for commands
    /// that print a little: listings, properties; at most `max_out` bytes
    /// are kept, the rest is an error).
    ///
    /// # Errors
    /// See [`CommandError`].
    pub fn output(&self, max_out: usize) -> Result<Vec<u8>, CommandError> {
        let mut out = Vec::new();
        let mut sink = Bounded {
            out: &mut out,
            max: max_out,
        };
        self.run(None, Some(&mut sink))?;
        Ok(out)
    }

    /// Runs it to the end, ignoring what it prints on standard output.
    ///
    /// # Errors
    /// See [`CommandError`].
    pub fn status(&self) -> Result<(), CommandError> {
        self.run(None, None).map(|_| ())
    }

    /// Runs it with its standard output copied into `sink` (a `zfs send`);
    /// returns the bytes copied.
    ///
    /// # Errors
    /// See [`CommandError`]; a failing `sink` kills the command.
    pub fn stream_out(&self, sink: &mut dyn Write) -> Result<u64, CommandError> {
        self.run(None, Some(sink))
    }

    /// Runs it with `source` copied into its standard input (a `zfs
    /// receive`); returns the bytes copied. When `source` fails, the
    /// command is killed before its input ends, so it never takes a cut
    /// stream for a whole one.
    ///
    /// # Errors
    /// See [`CommandError`].
    pub fn stream_in(&self, source: &mut dyn Read) -> Result<u64, CommandError> {
        self.run(Some(source), None)
    }

    fn run(
        &self,
        input: Option<&mut dyn Read>,
        output: Option<&mut dyn Write>,
    ) -> Result<u64, CommandError> {
        let what = self.describe();
        let _slot = Slot::take();
        let mut child = Command::new(&self.program)
            .args(&self.args)
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(if output.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| CommandError::Spawn {
                what: what.clone(),
                program: self.program.to_string_lossy().into_owned(),
                source,
            })?;
        let stderr = child.stderr.take().expect("piped");
        let moved = AtomicU64::new(0);
        let (done, done_rx) = std::sync::mpsc::channel::<()>();
        let stalled = AtomicBool::new(false);
        let pid = child.id();
        let (copied, err_text) = thread::scope(|s| {
            let err_reader = s.spawn(move || tail_of(stderr));
            let (moved, stalled) = (&moved, &stalled);
            let watchdog = s.spawn(move || watch(pid, self.stall, moved, &done_rx, stalled));
            let copied = copy_data(&mut child, input, output, moved);
            if let Err(Broke::Ours(_)) = copied {
                // A failed reader or writer: the command must not go on
                // (nor take a cut input for a whole one).
                let _ = child.kill();
            }
            // Its end, under the watchdog, without reaping it: until the
            // child is reaped its pid cannot be reused, so the watchdog
            // never signals another process.
            if let Some(p) = rustix::process::Pid::from_raw(pid as i32) {
                let opts =
                    rustix::process::WaitIdOptions::EXITED | rustix::process::WaitIdOptions::NOWAIT;
                while let Err(e) = rustix::process::waitid(rustix::process::WaitId::Pid(p), opts) {
                    if e != rustix::io::Errno::INTR {
                        break;
                    }
                }
            }
            drop(done);
            let _ = watchdog.join();
            let text = err_reader.join().unwrap_or_default();
            (copied, text)
        });
        // Reaped on every path: the watchdog no longer signals this pid.
        let status = child.wait();
        if stalled.load(Ordering::Relaxed) {
            return Err(CommandError::Stalled {
                what,
                secs: self.stall.as_secs(),
                stderr: err_text,
            });
        }
        let status = status.map_err(|source| CommandError::Data {
            what: what.clone(),
            source,
        })?;
        match copied {
            Err(Broke::Ours(source)) => Err(CommandError::Data { what, source }),
            // A command that failed explains a broken pipe better than
            // the pipe does.
            Err(Broke::Child(_)) if !status.success() => Err(CommandError::Failed {
                what,
                status,
                stderr: err_text,
            }),
            Err(Broke::Child(source)) => Err(CommandError::Data { what, source }),
            Ok(_) if !status.success() => Err(CommandError::Failed {
                what,
                status,
                stderr: err_text,
            }),
            Ok(n) => Ok(n),
        }
    }
}

/// Which side of a copy failed.
enum Broke {
    /// The caller's reader or writer.
    Ours(io::Error),
    /// The pipe to or from the child (it closed its end: it is exiting).
    Child(io::Error),
}

/// Copies `input` into the child's stdin, or its stdout into `output`
/// (a command here has at most one of them), counting bytes in `moved`.
fn copy_data(
    child: &mut Child,
    input: Option<&mut dyn Read>,
    output: Option<&mut dyn Write>,
    moved: &AtomicU64,
) -> Result<u64, Broke> {
    let mut buf = vec![0u8; 256 << 10];
    let mut total = 0u64;
    if let Some(src) = input {
        let mut stdin = child.stdin.take().expect("piped");
        loop {
            let n = match src.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Broke::Ours(e)),
            };
            stdin.write_all(&buf[..n]).map_err(Broke::Child)?;
            total += n as u64;
            moved.fetch_add(n as u64, Ordering::Relaxed);
        }
        // Closing stdin is the end of the input.
        drop(stdin);
    }
    if let Some(sink) = output {
        let mut stdout = child.stdout.take().expect("piped");
        loop {
            let n = match stdout.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Broke::Child(e)),
            };
            sink.write_all(&buf[..n]).map_err(Broke::Ours)?;
            total += n as u64;
            moved.fetch_add(n as u64, Ordering::Relaxed);
        }
        sink.flush().map_err(Broke::Ours)?;
    }
    Ok(total)
}

/// Kills `pid` once no byte moved for `stall`, until `done` hangs up.
fn watch(
    pid: u32,
    stall: Duration,
    moved: &AtomicU64,
    done: &std::sync::mpsc::Receiver<()>,
    stalled: &AtomicBool,
) {
    let tick = stall.min(Duration::from_millis(100));
    let mut last = moved.load(Ordering::Relaxed);
    let mut since = Instant::now();
    while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = done.recv_timeout(tick) {
        let now = moved.load(Ordering::Relaxed);
        if now != last {
            last = now;
            since = Instant::now();
        } else if since.elapsed() >= stall {
            stalled.store(true, Ordering::Relaxed);
            if let Some(p) = rustix::process::Pid::from_raw(pid as i32) {
                let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
            }
            return;
        }
    }
}

/// The last [`STDERR_KEPT`] bytes of a child's standard error (read to its
/// end, so the child never blocks on a full pipe).
fn tail_of(mut stderr: ChildStderr) -> String {
    let mut kept: Vec<u8> = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stderr.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                kept.extend_from_slice(&buf[..n]);
                if kept.len() > 2 * STDERR_KEPT {
                    kept.drain(..kept.len() - STDERR_KEPT);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    if kept.len() > STDERR_KEPT {
        kept.drain(..kept.len() - STDERR_KEPT);
    }
    String::from_utf8_lossy(&kept).into_owned()
}

/// A sink that refuses more than `max` bytes.
struct Bounded<'a> {
    out: &'a mut Vec<u8>,
    max: usize,
}

impl Write for Bounded<'_> {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        if self.out.len() + b.len() > self.max {
            return Err(io::Error::other(format!(
                "printed more than the {} bytes expected",
                self.max
            )));
        }
        self.out.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

static SLOTS: Mutex<(usize, usize)> = Mutex::new((0, DEFAULT_MAX_CHILDREN));
static FREED: Condvar = Condvar::new();

/// Sets the most external commands this process runs at once (at least 1).
pub fn set_max_children(n: usize) {
    SLOTS.lock().expect("not poisoned").1 = n.max(1);
    FREED.notify_all();
}

/// The most external commands this process runs at once.
pub fn max_children() -> usize {
    SLOTS.lock().expect("not poisoned").1
}

/// One running child's place under [`max_children`].
struct Slot;

impl Slot {
    fn take() -> Self {
        let mut s = SLOTS.lock().expect("not poisoned");
        while s.0 >= s.1 {
            s = FREED.wait(s).expect("not poisoned");
        }
        s.0 += 1;
        Slot
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        SLOTS.lock().expect("not poisoned").0 -= 1;
        FREED.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_status_and_stderr_are_reported() {
        let out = Cmd::new("printf").arg("a b").output(100).unwrap();
        assert_eq!(out, b"a b");
        let e = Cmd::new("sh")
            .args(["-c", "echo oops >&2; exit 3"])
            .status()
            .unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("exit status: 3") && text.contains("oops"),
            "{text}"
        );
        let e = Cmd::new("/nonexistent/zfs").status().unwrap_err();
        assert!(matches!(e, CommandError::Spawn { .. }), "{e}");
        assert!(e.to_string().contains("/nonexistent/zfs"), "{e}");
    }

    #[test]
    fn too_much_output_is_an_error_not_a_buffer() {
        let e = Cmd::new("head")
            .args(["-c", "100000", "/dev/zero"])
            .output(1000)
            .unwrap_err();
        assert!(e.to_string().contains("more than the 1000 bytes"), "{e}");
    }

    #[test]
    fn streams_in_and_out() {
        let mut sink = Vec::new();
        let n = Cmd::new("head")
            .args(["-c", "3000000", "/dev/zero"])
            .stream_out(&mut sink)
            .unwrap();
        assert_eq!((n, sink.len()), (3_000_000, 3_000_000));
        let data = vec![7u8; 2_000_000];
        let n = Cmd::new("cmp")
            .args(["-n", "2000000", "-", "/dev/zero"])
            .stream_in(&mut &data[..]);
        // cmp finds a difference at once: exit 1, named.
        let e = n.unwrap_err();
        assert!(matches!(e, CommandError::Failed { .. }), "{e}");
        let n = Cmd::new("wc").arg("-c").stream_in(&mut &data[..]).unwrap();
        assert_eq!(n, 2_000_000);
    }

    #[test]
    fn a_failing_source_kills_the_command_and_names_the_source_error() {
        struct Fails(u32);
        impl Read for Fails {
            fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
                self.0 += 1;
                if self.0 > 3 {
                    return Err(io::Error::other("chunk 1234 is truncated"));
                }
                b.fill(1);
                Ok(b.len())
            }
        }
        let e = Cmd::new("cat").stream_in(&mut Fails(0)).unwrap_err();
        assert!(e.to_string().contains("chunk 1234"), "{e}");
    }

    #[test]
    fn a_stalled_command_is_killed() {
        let t = Instant::now();
        let mut sink = Vec::new();
        let e = Cmd::new("sleep")
            .arg("30")
            .stall(Duration::from_millis(300))
            .stream_out(&mut sink)
            .unwrap_err();
        assert!(matches!(e, CommandError::Stalled { .. }), "{e}");
        assert!(t.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn no_more_than_max_children_run_at_once() {
        // Each command marks itself running in a directory, records how
        // many are, and leaves; twelve callers, a bound of three.
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap().to_string();
        set_max_children(3);
        let script = format!(
            "mkdir {d}/run.$$ && ls -d {d}/run.* | wc -l >> {d}/counts && sleep 0.2 && rmdir {d}/run.$$"
        );
        std::thread::scope(|s| {
            for _ in 0..12 {
                s.spawn(|| {
                    Cmd::new("sh")
                        .args(["-c", script.as_str()])
                        .status()
                        .unwrap()
                });
            }
        });
        set_max_children(DEFAULT_MAX_CHILDREN);
        let counts: Vec<usize> = std::fs::read_to_string(dir.path().join("counts"))
            .unwrap()
            .lines()
            .map(|l| l.trim().parse().unwrap())
            .collect();
        assert_eq!(counts.len(), 12);
        let most = counts.iter().copied().max().unwrap();
        assert!(most <= 3, "{most} ran at once: {counts:?}");
        assert!(most >= 2, "they did run side by side: {counts:?}");
    }
}
