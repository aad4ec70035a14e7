//! A bounded pipe between two threads: the writer fills 1 MiB buffers and
//! hands them over a channel of fixed capacity; the reader reads them.
//! Memory in flight is at most `(capacity + 2) × 1 MiB`.

use std::io::{self, Read, Write};

use crossbeam_channel::{Receiver, Sender, bounded};

const BUF: usize = 1 << 20;

/// The writing end.
pub struct PipeWriter {
    tx: Option<Sender<Vec<u8>>>,
    buf: Vec<u8>,
}

/// The reading end.
pub struct PipeReader {
    rx: Receiver<Vec<u8>>,
    buf: Vec<u8>,
    pos: usize,
}

/// A pipe holding at most `capacity` full buffers in flight.
pub fn pipe(capacity: usize) -> (PipeWriter, PipeReader) {
    let (tx, rx) = bounded(capacity);
    (
        PipeWriter {
            tx: Some(tx),
            buf: Vec::with_capacity(BUF),
        },
        PipeReader {
            rx,
            buf: Vec::new(),
            pos: 0,
        },
    )
}

impl PipeWriter {
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let full = std::mem::replace(&mut self.buf, Vec::with_capacity(BUF));
        match &self.tx {
            Some(tx) => tx.send(full).map_err(|_| {
                io::Error::new(io::ErrorKind::BrokenPipe, "the stream's reader has stopped")
            }),
            None => Err(io::Error::new(io::ErrorKind::BrokenPipe, "pipe closed")),
        }
    }
}

impl Write for PipeWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(BUF - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == BUF {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

impl Drop for PipeWriter {
    fn drop(&mut self) {
        let _ = self.send();
        self.tx = None;
    }
}

impl Read for PipeReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.buf.len() {
            match self.rx.recv() {
                Ok(b) => {
                    self.buf = b;
                    self.pos = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}
