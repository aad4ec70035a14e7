//! External commands run many times leave nothing behind: no open
//! descriptor, no child process (zombie or running). The seed's system
//! fell over with EMFILE when spawning under load.

use std::io::Read;
use std::time::Duration;

use strata_engine::command::{Cmd, CommandError};

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// True when this process has a child, running or not yet reaped.
fn has_children() -> bool {
    match rustix::process::waitpid(None, rustix::process::WaitOptions::NOHANG) {
        Err(e) => e != rustix::io::Errno::CHILD,
        // A child that exited was reaped by this very call: it was there.
        Ok(_) => true,
    }
}

struct FailsAfter(u32);
impl Read for FailsAfter {
    fn read(&mut self, b: &mut [u8]) -> std::io::Result<usize> {
        self.0 = self.0.saturating_sub(1);
        if self.0 == 0 {
            return Err(std::io::Error::other("the source broke"));
        }
        b.fill(b'x');
        Ok(b.len().min(4096))
    }
}

#[test]
fn two_hundred_cycles_of_every_outcome_leak_no_descriptor_and_no_child() {
    assert!(!has_children());
    let before = open_fds();
    for i in 0..200 {
        match i % 5 {
            0 => {
                let mut sink = Vec::new();
                Cmd::new("head")
                    .args(["-c", "100000", "/dev/urandom"])
                    .stream_out(&mut sink)
                    .unwrap();
                assert_eq!(sink.len(), 100_000);
            }
            1 => {
                let data = vec![1u8; 300_000];
                assert_eq!(Cmd::new("cat").stream_in(&mut &data[..]).unwrap(), 300_000);
            }
            2 => {
                let e = Cmd::new("cat").stream_in(&mut FailsAfter(5)).unwrap_err();
                assert!(matches!(e, CommandError::Data { .. }), "{e}");
            }
            3 => {
                let e = Cmd::new("sh")
                    .args(["-c", "head -c 1000 >/dev/null; echo refused >&2; exit 2"])
                    .stream_in(&mut &vec![0u8; 1 << 20][..])
                    .unwrap_err();
                assert!(e.to_string().contains("refused"), "{e}");
            }
            _ => {
                let e = Cmd::new("sleep")
                    .arg("5")
                    .stall(Duration::from_millis(50))
                    .status()
                    .unwrap_err();
                assert!(matches!(e, CommandError::Stalled { .. }), "{e}");
            }
        }
    }
    assert_eq!(open_fds(), before, "descriptors leaked");
    assert!(!has_children(), "a child was left behind");
}
