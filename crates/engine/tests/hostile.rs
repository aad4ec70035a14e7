//! Hostile and corrupted streams: each is refused with an error that names
//! the entry or offset, and nothing outside the target is touched.

mod common;

use std::fs;
use std::path::Path;

use proptest::prelude::*;
use strata_engine::format::{Enc, Meta, RecordWriter, STREAM_MAGIC, tag};
use strata_engine::native::{self, ReceiveOptions};
use strata_engine::{EngineError, Quiet};

/// Builds a stream record by record.
struct B {
    w: RecordWriter<Vec<u8>>,
    entries: u64,
    data: u64,
}

fn meta() -> Meta {
    Meta {
        mode: 0o644,
        mtime_sec: 1_600_000_000,
        ..Meta::default()
    }
}

impl B {
    fn new() -> Self {
        Self::with_header(1, "", "s1")
    }
    fn with_header(version: u32, start: &str, end: &str) -> Self {
        Self::made_by(b"native", version, start, end)
    }
    fn made_by(engine: &[u8], version: u32, start: &str, end: &str) -> Self {
        let mut w = RecordWriter::new(Vec::new(), STREAM_MAGIC).unwrap();
        let mut h = Enc::default();
        h.u32(version)
            .bytes(start.as_bytes())
            .bytes(end.as_bytes())
            .i64(0)
            .bytes(engine);
        w.record(tag::HEADER, &h.0).unwrap();
        Self {
            w,
            entries: 0,
            data: 0,
        }
    }
    fn entry(mut self, t: u8, path: &[u8], extra: Option<&[u8]>) -> Self {
        let mut e = Enc::default();
        e.bytes(path);
        if t != tag::DELETE && t != tag::HARDLINK {
            e.meta(&if t == tag::DIR {
                Meta {
                    mode: 0o755,
                    ..meta()
                }
            } else {
                meta()
            });
        }
        if let Some(x) = extra {
            e.bytes(x);
        }
        self.w.record(t, &e.0).unwrap();
        self.entries += 1;
        self
    }
    fn dir(self, p: &str) -> Self {
        self.entry(tag::DIR, p.as_bytes(), None)
    }
    fn file(mut self, p: &[u8], content: &[u8]) -> Self {
        self = self.entry(tag::FILE, p, None);
        self.w.record(tag::DATA, content).unwrap();
        self.data += content.len() as u64;
        self.w
            .record(tag::FILE_END, &Enc::default().u64(content.len() as u64).0)
            .unwrap();
        self
    }
    fn raw(mut self, t: u8, payload: &[u8]) -> Self {
        self.w.record(t, payload).unwrap();
        self
    }
    fn finish(mut self) -> Vec<u8> {
        let records = self.w.records();
        let mut t = Enc::default();
        t.u64(self.entries).u64(records).u64(self.data);
        self.w.record(tag::TRAILER, &t.0).unwrap();
        self.w.finish().unwrap()
    }
}

/// Applies `stream` into `<sandbox>/target` next to a sentinel tree and
/// returns the error; asserts the sentinel is untouched and nothing else
/// appeared in the sandbox.
fn refuse(stream: &[u8]) -> EngineError {
    let sandbox = tempfile::tempdir().unwrap();
    let outside = sandbox.path().join("outside");
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("secret"), b"keep me").unwrap();
    let before = strata_testing::tree::capture(sandbox.path().join("outside").as_path());
    let target = sandbox.path().join("target");
    fs::create_dir(&target).unwrap();
    let err = native::receive(&target, stream, &ReceiveOptions::new(None), &Quiet)
        .expect_err("stream must be refused");
    assert_eq!(
        before,
        strata_testing::tree::capture(&outside),
        "outside changed"
    );
    let names: Vec<_> = fs::read_dir(sandbox.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        names.len(),
        2,
        "something appeared next to the target: {names:?}"
    );
    assert!(!Path::new("/tmp/strata-pwned").exists());
    err
}

fn refused_naming(stream: &[u8], needle: &str) {
    let err = refuse(stream);
    assert!(err.is_bad_input(), "{err}");
    let text = err.to_string();
    assert!(
        text.contains(needle),
        "error {text:?} should name {needle:?}"
    );
}

#[test]
fn absolute_path() {
    refused_naming(
        &B::new().dir("").file(b"/tmp/strata-pwned", b"x").finish(),
        "/tmp/strata-pwned",
    );
}

#[test]
fn dot_dot() {
    refused_naming(
        &B::new().dir("").file(b"../outside/secret", b"x").finish(),
        "'..'",
    );
    refused_naming(
        &B::new().dir("").dir("a").file(b"a/../../x", b"x").finish(),
        "a/../../x",
    );
}

#[test]
fn through_a_symlink() {
    let s = B::new()
        .dir("")
        .entry(tag::SYMLINK, b"l", Some(b"../outside"))
        .file(b"l/secret", b"overwritten")
        .finish();
    refused_naming(&s, "symlink");
    let s = B::new()
        .dir("")
        .entry(tag::SYMLINK, b"l", Some(b"../outside"))
        .entry(tag::DELETE, b"l/secret", None)
        .finish();
    refused_naming(&s, "l/secret");
}

#[test]
fn nul_and_slashes_in_names() {
    refused_naming(&B::new().dir("").file(b"a\0b", b"x").finish(), "NUL");
    refused_naming(
        &B::new().dir("").dir("a").file(b"a//b", b"x").finish(),
        "a//b",
    );
}

#[test]
fn duplicate_and_out_of_order() {
    refused_naming(
        &B::new().dir("").file(b"a", b"1").file(b"a", b"2").finish(),
        "duplicate",
    );
    refused_naming(
        &B::new().dir("").file(b"b", b"1").file(b"a", b"2").finish(),
        "out of order",
    );
}

#[test]
fn hard_link_out_of_the_target() {
    let mut e = Enc::default();
    e.bytes(b"h").bytes(b"../outside/secret");
    refused_naming(&B::new().dir("").raw(tag::HARDLINK, &e.0).finish(), "'..'");
    let mut e = Enc::default();
    e.bytes(b"m").bytes(b"l/secret");
    let s = B::new()
        .dir("")
        .entry(tag::SYMLINK, b"l", Some(b"../outside"))
        .raw(tag::HARDLINK, &e.0)
        .finish();
    refused_naming(&s, "l/secret");
}

#[test]
fn lengths_past_the_end() {
    let s = B::new().dir("").file(b"f", b"hello").finish();
    // Truncated anywhere: refused.
    for cut in [9, 20, s.len() / 2, s.len() - 1] {
        let err = refuse(&s[..cut]);
        assert!(
            err.to_string().contains("truncat") || err.to_string().contains("magic"),
            "{err}"
        );
    }
    // A record whose length field runs past the end.
    let mut bad = s.clone();
    let header_len = 8 + 9 + u32::from_le_bytes(s[9..13].try_into().unwrap()) as usize;
    bad[header_len + 1..header_len + 5].copy_from_slice(&(1u32 << 20).to_le_bytes());
    refused_naming(&bad, "truncated");
    // A length over the limit.
    bad[header_len + 1..header_len + 5].copy_from_slice(&u32::MAX.to_le_bytes());
    refused_naming(&bad, "exceeds");
    // A file that declares more than it carries.
    let s = B::new()
        .dir("")
        .entry(tag::FILE, b"f", None)
        .raw(tag::DATA, b"abc")
        .raw(tag::FILE_END, &Enc::default().u64(10).0)
        .finish();
    refused_naming(&s, "\"f\"");
}

#[test]
fn unknown_version_and_bad_magic() {
    refused_naming(&B::with_header(99, "", "s").dir("").finish(), "version 99");
    let mut s = B::new().dir("").finish();
    s[1] = b'X';
    refused_naming(&s, "magic");
}

#[test]
fn another_engines_stream_is_refused_naming_both_engines() {
    let t = tempfile::tempdir().unwrap();
    let target = t.path().join("t");
    fs::create_dir(&target).unwrap();
    let s = B::made_by(b"zfs", 1, "", "s1").dir("").finish();
    let err = native::receive(&target, &s[..], &ReceiveOptions::new(None), &Quiet).unwrap_err();
    assert!(err.is_bad_input(), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("\"zfs\"") && text.contains("native engine"),
        "{text}"
    );
    assert_eq!(fs::read_dir(&target).unwrap().count(), 0, "nothing applied");
}

#[test]
fn wrong_base() {
    refused_naming(
        &B::with_header(1, "other-snapshot", "s2").dir("").finish(),
        "other-snapshot",
    );
}

#[test]
fn trailer_mismatch_and_trailing_bytes() {
    let mut s = B::new().dir("").file(b"f", b"x").finish();
    s.extend_from_slice(b"junk");
    refused_naming(&s, "after the trailer");
    let mut b = B::new().dir("").file(b"f", b"x");
    b.entries += 5;
    refused_naming(&b.finish(), "trailer counts");
}

#[test]
fn data_outside_a_file_and_root_not_a_dir() {
    refused_naming(
        &B::new().dir("").raw(tag::DATA, b"x").finish(),
        "outside a file",
    );
    refused_naming(&B::new().file(b"", b"x").finish(), "root");
}

#[test]
fn a_valid_stream_is_accepted() {
    // The builder itself makes acceptable streams: the refusals above are
    // about what they change, not about the builder.
    let s = B::new().dir("").dir("d").file(b"d/f", b"hi").finish();
    let dir = tempfile::tempdir().unwrap();
    native::receive(dir.path(), &s[..], &ReceiveOptions::new(None), &Quiet).unwrap();
    assert_eq!(fs::read(dir.path().join("d/f")).unwrap(), b"hi");
}

/// A patch record for `path` declaring `size` bytes.
fn patch(b: B, path: &[u8], size: u64) -> B {
    let mut e = Enc::default();
    e.bytes(path).meta(&meta()).u64(size);
    let mut b = b.raw(tag::FILE_PATCH, &e.0);
    b.entries += 1;
    b
}

fn patch_data(mut b: B, offset: u64, data: &[u8]) -> B {
    let mut e = Enc::default();
    e.u64(offset);
    e.0.extend_from_slice(data);
    b = b.raw(tag::PATCH_DATA, &e.0);
    b.data += data.len() as u64;
    b
}

#[test]
fn patches_of_what_is_not_there_or_out_of_range() {
    refused_naming(
        &patch(B::new().dir(""), b"nothing", 5).finish(),
        "not a regular file",
    );
    let s = patch(
        B::new()
            .dir("")
            .entry(tag::SYMLINK, b"l", Some(b"../outside/secret")),
        b"m",
        1,
    )
    .finish();
    refused_naming(&s, "\"m\"");
    // Ranges are checked against a target that holds the base file.
    let on_base = |stream: Vec<u8>| {
        let sandbox = tempfile::tempdir().unwrap();
        let t = sandbox.path().join("t");
        fs::create_dir(&t).unwrap();
        native::receive(
            &t,
            &B::new().dir("").file(b"f", b"hello").finish()[..],
            &ReceiveOptions::new(None),
            &Quiet,
        )
        .unwrap();
        native::receive(&t, &stream[..], &ReceiveOptions::new(Some("s1")), &Quiet)
            .unwrap_err()
            .to_string()
    };
    let b = patch(B::with_header(2, "s1", "s2"), b"f", 4);
    let err = on_base(patch_data(b, 2, b"xyz").finish());
    assert!(
        err.contains("past the size") && err.contains("\"f\""),
        "{err}"
    );
    let b = patch(B::with_header(2, "s1", "s2"), b"f", 10);
    let err = on_base(patch_data(patch_data(b, 4, b"ab"), 1, b"c").finish());
    assert!(err.contains("out of order"), "{err}");
}

#[test]
fn a_patch_that_does_not_produce_its_hash_is_refused() {
    // Applies to "f" but claims a content hash of something else.
    let sandbox = tempfile::tempdir().unwrap();
    let t = sandbox.path().join("t");
    fs::create_dir(&t).unwrap();
    native::receive(
        &t,
        &B::new().dir("").file(b"f", b"hello world").finish()[..],
        &ReceiveOptions::new(None),
        &Quiet,
    )
    .unwrap();
    let b = patch_data(patch(B::with_header(2, "s1", "s2"), b"f", 11), 0, b"J");
    let mut end = Enc::default();
    end.u64(11);
    end.0
        .extend_from_slice(blake3::hash(b"Xello world").as_bytes());
    let s = b.raw(tag::PATCH_END, &end.0).finish();
    let err = native::receive(&t, &s[..], &ReceiveOptions::new(Some("s1")), &Quiet).unwrap_err();
    assert!(
        err.to_string().contains("does not match its content hash"),
        "{err}"
    );
    assert!(err.to_string().contains("\"f\""), "{err}");
    // The right hash is accepted.
    let b = patch_data(patch(B::with_header(2, "s1", "s2"), b"f", 11), 0, b"J");
    let mut end = Enc::default();
    end.u64(11);
    end.0
        .extend_from_slice(blake3::hash(b"Jello world").as_bytes());
    let s = b.raw(tag::PATCH_END, &end.0).finish();
    let t2 = sandbox.path().join("t2");
    fs::create_dir(&t2).unwrap();
    native::receive(
        &t2,
        &B::new().dir("").file(b"f", b"hello world").finish()[..],
        &ReceiveOptions::new(None),
        &Quiet,
    )
    .unwrap();
    native::receive(&t2, &s[..], &ReceiveOptions::new(Some("s1")), &Quiet).unwrap();
    assert_eq!(fs::read(t2.join("f")).unwrap(), b"Jello world");
}

/// Within one chain, a patch without data of a file the session wrote is
/// checked against the hash the session recorded instead of reading the
/// file back: a hash that is not the file's is still refused, naming it,
/// and the right one is accepted without a read (shown by changing the
/// file behind the session's back: read back, it would be refused; that
/// is why a session is only for a tree nobody else writes). A plain
/// receive of the same patch reads the file back and refuses it.
#[test]
fn a_data_less_patch_in_a_session_is_checked_against_what_was_written() {
    let end = |hash: &[u8; 32]| {
        let mut e = Enc::default();
        e.u64(11);
        e.0.extend_from_slice(hash);
        e.0
    };
    for (claimed, ok) in [
        (*blake3::hash(b"hello world").as_bytes(), true),
        (*blake3::hash(b"Hello world").as_bytes(), false),
    ] {
        let sandbox = tempfile::tempdir().unwrap();
        let t = sandbox.path().join("t");
        fs::create_dir(&t).unwrap();
        let mut session = native::ReceiveSession::default();
        session.set_more_follow(true);
        native::receive_in(
            &t,
            &B::new().dir("").file(b"f", b"hello world").finish()[..],
            &ReceiveOptions::new(None),
            &Quiet,
            &mut session,
        )
        .unwrap();
        session.set_more_follow(false);
        // Same size, other bytes: only a read-back can notice.
        fs::write(t.join("f"), b"HELLO WORLD").unwrap();
        let s = patch(B::with_header(2, "s1", "s2"), b"f", 11)
            .raw(tag::PATCH_END, &end(&claimed))
            .finish();
        if ok {
            let plain = t.with_file_name("plain");
            fs::create_dir(&plain).unwrap();
            native::receive(
                &plain,
                &B::new().dir("").file(b"f", b"hello world").finish()[..],
                &ReceiveOptions::new(None),
                &Quiet,
            )
            .unwrap();
            fs::write(plain.join("f"), b"HELLO WORLD").unwrap();
            let err = native::receive(&plain, &s[..], &ReceiveOptions::new(Some("s1")), &Quiet)
                .unwrap_err()
                .to_string();
            assert!(err.contains("does not match its content hash"), "{err}");
        }
        let r = native::receive_in(
            &t,
            &s[..],
            &ReceiveOptions::new(Some("s1")),
            &Quiet,
            &mut session,
        );
        if ok {
            r.unwrap();
            assert_eq!(fs::read(t.join("f")).unwrap(), b"HELLO WORLD");
        } else {
            let err = r.unwrap_err().to_string();
            assert!(err.contains("does not match its content hash"), "{err}");
            assert!(err.contains("\"f\""), "{err}");
        }
    }
}

fn real_stream() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir(&src).unwrap();
    strata_testing::tree::sample_tree(&src);
    common::save(&src, None, 1).stream
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    /// Any single flipped byte of a real stream is detected.
    #[test]
    fn any_flipped_byte_is_detected(pos in any::<prop::sample::Index>(), bit in 0u8..8) {
        let mut s = real_stream();
        let i = pos.index(s.len());
        s[i] ^= 1 << bit;
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path().join("t");
        fs::create_dir(&t).unwrap();
        prop_assert!(native::receive(&t, &s[..], &ReceiveOptions::new(None), &Quiet).is_err());
    }

    /// Any truncation of a real stream is detected.
    #[test]
    fn any_truncation_is_detected(pos in any::<prop::sample::Index>()) {
        let s = real_stream();
        let cut = pos.index(s.len());
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path().join("t");
        fs::create_dir(&t).unwrap();
        prop_assert!(native::receive(&t, &s[..cut], &ReceiveOptions::new(None), &Quiet).is_err());
    }
}

/// Applies `chain` (streams s1, s2, ...) into a new directory `t` with one
/// session, as a restore does.
fn apply_chain(t: &Path, chain: &[Vec<u8>]) {
    let streams: Vec<&[u8]> = chain.iter().map(Vec::as_slice).collect();
    common::apply_streams(&streams, t, native::ReceiveSession::default())
        .unwrap_or_else(|e| panic!("applying the chain: {e}"));
}

/// Metadata a session holds back (a patch without data, more streams to
/// come) is not lost when the file gets a second name and the first name
/// is deleted by later streams: once linked, it is applied at once.
#[test]
fn held_metadata_survives_a_new_link_and_the_loss_of_the_first_name() {
    use std::os::unix::fs::MetadataExt;
    let held = Meta {
        mode: 0o640,
        mtime_sec: 1_700_000_000,
        ..meta()
    };
    let mut e = Enc::default();
    e.bytes(b"a").meta(&held).u64(4);
    let mut s2 = B::with_header(2, "s1", "s2").raw(tag::FILE_PATCH, &e.0);
    s2.entries += 1;
    let mut end = Enc::default();
    end.u64(4);
    end.0.extend_from_slice(blake3::hash(b"held").as_bytes());
    let chain = [
        B::new().dir("").file(b"a", b"held").finish(),
        s2.raw(tag::PATCH_END, &end.0).finish(),
        B::with_header(2, "s2", "s3")
            .entry(tag::HARDLINK, b"b", Some(b"a"))
            .finish(),
        B::with_header(2, "s3", "s4")
            .entry(tag::DELETE, b"a", None)
            .finish(),
    ];
    let sandbox = tempfile::tempdir().unwrap();
    let t = sandbox.path().join("t");
    apply_chain(&t, &chain);
    assert!(!t.join("a").exists());
    let md = fs::symlink_metadata(t.join("b")).unwrap();
    assert_eq!(fs::read(t.join("b")).unwrap(), b"held");
    assert_eq!((md.mode() & 0o7777, md.mtime()), (0o640, 1_700_000_000));
}

/// A directory whose recorded mode takes its owner's search permission
/// away (0600), applied at the end of a chain while a file inside it is
/// still held: the file's metadata is set before the directory closes,
/// so the restore succeeds for its owner too (as nobody, who has no
/// root's bypass of permission bits).
#[test]
fn held_metadata_inside_a_directory_that_closes_is_set_first() {
    strata_testing::privilege::also_unprivileged(
        "held_metadata_inside_a_directory_that_closes_is_set_first",
        || {
            use std::os::unix::fs::{MetadataExt, PermissionsExt};
            let dir = |b: B, p: &[u8], mode: u32| {
                let mut e = Enc::default();
                e.bytes(p).meta(&Meta { mode, ..meta() });
                let mut b = b.raw(tag::DIR, &e.0);
                b.entries += 1;
                b
            };
            let touched = Meta {
                mtime_sec: 1_700_000_000,
                ..meta()
            };
            let mut e = Enc::default();
            e.bytes(b"d/f").meta(&touched).u64(4);
            let mut s2 = dir(dir(B::with_header(2, "s1", "s2"), b"", 0o755), b"d", 0o755)
                .raw(tag::FILE_PATCH, &e.0);
            s2.entries += 1;
            let mut end = Enc::default();
            end.u64(4);
            end.0.extend_from_slice(blake3::hash(b"kept").as_bytes());
            let chain = [
                dir(B::new().dir(""), b"d", 0o755)
                    .file(b"d/f", b"kept")
                    .finish(),
                s2.raw(tag::PATCH_END, &end.0).finish(),
                dir(dir(B::with_header(2, "s2", "s3"), b"", 0o755), b"d", 0o600).finish(),
            ];
            let sandbox = tempfile::tempdir().unwrap();
            let t = sandbox.path().join("t");
            apply_chain(&t, &chain);
            let d = fs::symlink_metadata(t.join("d")).unwrap();
            assert_eq!(d.mode() & 0o7777, 0o600);
            fs::set_permissions(t.join("d"), fs::Permissions::from_mode(0o700)).unwrap();
            let f = fs::symlink_metadata(t.join("d/f")).unwrap();
            assert_eq!(f.mtime(), 1_700_000_000);
            assert_eq!(fs::read(t.join("d/f")).unwrap(), b"kept");
        },
    );
}
