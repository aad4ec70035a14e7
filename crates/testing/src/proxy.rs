//! A bad network link for tests: a TCP proxy between strata and a server
//! that delays every byte (with jitter), limits the rate, stalls now and
//! then for as long as a lost segment costs TCP (a retransmission
//! timeout), and resets some connections part-way through.
//!
//! This machine's kernel has no `netem` queueing discipline, so the link is
//! made in user space, as toxiproxy does. TCP hides a lost packet from both
//! ends except as a stall of the stream behind it, so a stall of the whole
//! direction is what loss looks like to strata; resets are real (`SO_LINGER`
//! 0, then close: the peer reads `ECONNRESET`).
//!
//! Each direction of a connection is a delay line: a reader stamps every
//! piece it reads and hands it, through a bounded channel, to a writer that
//! sends it when its time has come, so latency does not cut throughput
//! (pieces are in flight together) and memory stays bounded.

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What the link does to the traffic.
#[derive(Clone, Debug)]
pub struct Faults {
    /// Latency added to every piece, each direction.
    pub delay: Duration,
    /// Up to this much more, at random, per piece (never reordering).
    pub jitter: Duration,
    /// Bytes per second in each direction of each connection; 0 for no
    /// limit.
    pub rate: u64,
    /// Chance per piece that the direction stalls for [`Faults::stall_for`].
    pub stall: f64,
    /// How long a stall lasts.
    pub stall_for: Duration,
    /// Chance per connection that it is reset after a random number of
    /// bytes below [`Faults::reset_within`].
    pub reset: f64,
    /// See [`Faults::reset`].
    pub reset_within: u64,
    /// Seed of the link's random choices (the same seed, the same faults
    /// for the same traffic).
    pub seed: u64,
}

impl Default for Faults {
    /// A slow, lossy, unreliable link: 20 ms ± 10 ms, 8 MB/s, a 300 ms
    /// stall per 200 pieces, a quarter of the connections reset within
    /// their first 512 KiB.
    fn default() -> Self {
        Self {
            delay: Duration::from_millis(20),
            jitter: Duration::from_millis(10),
            rate: 8_000_000,
            stall: 0.005,
            stall_for: Duration::from_millis(300),
            reset: 0.25,
            reset_within: 512 * 1024,
            seed: 0x5eed,
        }
    }
}

impl Faults {
    /// A perfect link: a plain TCP relay.
    pub fn none() -> Self {
        Self {
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            rate: 0,
            stall: 0.0,
            reset: 0.0,
            ..Self::default()
        }
    }
}

/// What the link has done so far.
#[derive(Debug, Default)]
pub struct Counters {
    /// Connections accepted.
    pub connections: AtomicU64,
    /// Connections reset part-way.
    pub resets: AtomicU64,
    /// Stalls.
    pub stalls: AtomicU64,
    /// Bytes forwarded, both directions.
    pub bytes: AtomicU64,
}

/// A running proxy; stops (and resets what is still open) when dropped.
pub struct Proxy {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    counters: Arc<Counters>,
    accept: Option<JoinHandle<()>>,
}

impl Proxy {
    /// Listens on `ip` (an ephemeral port) and forwards every connection
    /// to `target` through a link with `faults`.
    ///
    /// # Errors
    /// When it cannot listen there.
    pub fn start(ip: IpAddr, target: SocketAddr, faults: Faults) -> std::io::Result<Self> {
        let listener = TcpListener::bind((ip, 0))?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(Counters::default());
        let accept = {
            let (stop, counters) = (Arc::clone(&stop), Arc::clone(&counters));
            std::thread::spawn(move || {
                let mut rng = Rng(faults.seed | 1);
                for client in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(client) = client else { continue };
                    let n = counters.connections.fetch_add(1, Ordering::SeqCst);
                    let conn = Connection {
                        faults: faults.clone(),
                        reset_after: (rng.unit() < faults.reset)
                            .then(|| rng.below(faults.reset_within.max(1))),
                        seed: rng.next() ^ n,
                        stop: Arc::clone(&stop),
                        counters: Arc::clone(&counters),
                    };
                    std::thread::spawn(move || conn.run(client, target));
                }
            })
        };
        Ok(Self {
            addr,
            stop,
            counters,
            accept: Some(accept),
        })
    }

    /// Where to connect instead of the target.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// What the link has done so far.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop.
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

/// One proxied connection.
struct Connection {
    faults: Faults,
    /// Reset once this many bytes went through (both directions).
    reset_after: Option<u64>,
    seed: u64,
    stop: Arc<AtomicBool>,
    counters: Arc<Counters>,
}

/// How long a blocked read waits before it looks at the flags again.
const POLL: Duration = Duration::from_millis(50);
/// Pieces in flight per direction: the delay line's memory bound.
const IN_FLIGHT: usize = 64;
const PIECE: usize = 16 * 1024;

impl Connection {
    fn run(self, client: TcpStream, target: SocketAddr) {
        let Ok(server) = TcpStream::connect_timeout(&target, Duration::from_secs(5)) else {
            return;
        };
        let dead = Arc::new(AtomicBool::new(false));
        let moved = Arc::new(AtomicU64::new(0));
        let me = Arc::new(self);
        let mut threads = Vec::new();
        for (i, (from, to)) in [(&client, &server), (&server, &client)]
            .into_iter()
            .enumerate()
        {
            let (Ok(from), Ok(to)) = (from.try_clone(), to.try_clone()) else {
                return;
            };
            let _ = from.set_read_timeout(Some(POLL));
            let (tx, rx) = sync_channel::<(Instant, Vec<u8>)>(IN_FLIGHT);
            let (me2, dead2, moved2) = (Arc::clone(&me), Arc::clone(&dead), Arc::clone(&moved));
            threads.push(std::thread::spawn(move || {
                me2.read_side(from, &tx, &dead2, &moved2);
            }));
            let (me2, dead2) = (Arc::clone(&me), Arc::clone(&dead));
            let seed = me.seed.wrapping_add(i as u64 * 0x9e37_79b9);
            threads.push(std::thread::spawn(move || {
                me2.write_side(to, &rx, &dead2, seed);
            }));
        }
        for t in threads {
            let _ = t.join();
        }
        if dead.load(Ordering::SeqCst) {
            // Reset: no FIN, the peers read ECONNRESET once the last
            // descriptor of each socket is closed.
            for s in [&client, &server] {
                let _ = rustix::net::sockopt::set_socket_linger(s, Some(Duration::ZERO));
            }
        } else {
            let _ = client.shutdown(Shutdown::Both);
            let _ = server.shutdown(Shutdown::Both);
        }
    }

    /// Reads pieces from `from` and stamps them, until end of stream, an
    /// error, a reset or the proxy's stop; end of stream is passed on as an
    /// empty piece.
    fn read_side(
        &self,
        mut from: TcpStream,
        tx: &SyncSender<(Instant, Vec<u8>)>,
        dead: &AtomicBool,
        moved: &AtomicU64,
    ) {
        let mut buf = vec![0u8; PIECE];
        loop {
            if dead.load(Ordering::SeqCst) || self.stop.load(Ordering::SeqCst) {
                dead.store(true, Ordering::SeqCst);
                return;
            }
            match from.read(&mut buf) {
                Ok(0) => {
                    let _ = tx.send((Instant::now(), Vec::new()));
                    return;
                }
                Ok(n) => {
                    let total = moved.fetch_add(n as u64, Ordering::SeqCst) + n as u64;
                    if self.reset_after.is_some_and(|at| total >= at) {
                        self.counters.resets.fetch_add(1, Ordering::SeqCst);
                        dead.store(true, Ordering::SeqCst);
                        return;
                    }
                    if tx.send((Instant::now(), buf[..n].to_vec())).is_err() {
                        return;
                    }
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => {
                    dead.store(true, Ordering::SeqCst);
                    return;
                }
            }
        }
    }

    /// Sends each piece once its delay (and any stall) has passed, at no
    /// more than the rate.
    fn write_side(
        &self,
        mut to: TcpStream,
        rx: &Receiver<(Instant, Vec<u8>)>,
        dead: &AtomicBool,
        seed: u64,
    ) {
        let mut rng = Rng(seed | 1);
        let started = Instant::now();
        let mut sent = 0u64;
        let mut not_before = Instant::now();
        loop {
            let (stamped, piece) = match rx.recv_timeout(POLL) {
                Ok(p) => p,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    if dead.load(Ordering::SeqCst) {
                        return;
                    }
                    continue;
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
            };
            if piece.is_empty() {
                let _ = to.shutdown(Shutdown::Write);
                return;
            }
            let f = &self.faults;
            let jitter = f.jitter.mul_f64(rng.unit());
            // Never before the piece in front of it: no reordering.
            let mut due = (stamped + f.delay + jitter).max(not_before);
            if rng.unit() < f.stall {
                self.counters.stalls.fetch_add(1, Ordering::SeqCst);
                due += f.stall_for;
            }
            if f.rate > 0 {
                sent += piece.len() as u64;
                due = due.max(started + Duration::from_secs_f64(sent as f64 / f.rate as f64));
            }
            not_before = due;
            sleep_until(due, dead);
            if dead.load(Ordering::SeqCst) || to.write_all(&piece).is_err() {
                dead.store(true, Ordering::SeqCst);
                return;
            }
            self.counters
                .bytes
                .fetch_add(piece.len() as u64, Ordering::SeqCst);
        }
    }
}

fn sleep_until(due: Instant, dead: &AtomicBool) {
    loop {
        let now = Instant::now();
        if now >= due || dead.load(Ordering::SeqCst) {
            return;
        }
        std::thread::sleep((due - now).min(POLL));
    }
}

/// xorshift64: enough randomness for faults, reproducible from a seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server behind the proxy: bytes arrive intact and in order,
    /// late by at least the delay; a connection chosen for a reset is
    /// reset, not closed.
    #[test]
    fn bytes_arrive_late_but_intact_and_resets_are_resets() {
        let echo = TcpListener::bind("127.0.0.1:0").unwrap();
        let target = echo.local_addr().unwrap();
        std::thread::spawn(move || {
            for s in echo.incoming() {
                let mut s = s.unwrap();
                std::thread::spawn(move || {
                    let mut r = s.try_clone().unwrap();
                    let _ = std::io::copy(&mut r, &mut s);
                });
            }
        });
        let ip = "127.0.0.1".parse().unwrap();
        let faults = Faults {
            delay: Duration::from_millis(30),
            reset: 0.0,
            ..Faults::default()
        };
        let p = Proxy::start(ip, target, faults.clone()).unwrap();
        let mut c = TcpStream::connect(p.addr()).unwrap();
        let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let started = Instant::now();
        let mut w = c.try_clone().unwrap();
        let sent = data.clone();
        let writer = std::thread::spawn(move || w.write_all(&sent).unwrap());
        let mut got = vec![0u8; data.len()];
        c.read_exact(&mut got).unwrap();
        writer.join().unwrap();
        assert_eq!(got, data);
        // There and back: two delays at least.
        assert!(started.elapsed() >= Duration::from_millis(60));

        let p = Proxy::start(
            ip,
            target,
            Faults {
                reset: 1.0,
                reset_within: 1000,
                ..faults
            },
        )
        .unwrap();
        let mut c = TcpStream::connect(p.addr()).unwrap();
        let _ = c.write_all(&[1u8; 5000]);
        let mut buf = vec![0u8; 5000];
        let e = loop {
            match c.read(&mut buf) {
                Ok(0) => panic!("closed, not reset"),
                Ok(_) => {}
                Err(e) => break e,
            }
        };
        assert_eq!(e.kind(), ErrorKind::ConnectionReset, "{e}");
        assert_eq!(p.counters().resets.load(Ordering::SeqCst), 1);
    }
}
