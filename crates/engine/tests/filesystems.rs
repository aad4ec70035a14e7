//! The file-system engines on real file systems (`scripts/filesystems
//! up`: zfs-fuse pools, btrfs on loop devices), each case once per engine:
//! hostile and broken streams, the wrong engine, a host without the
//! program, and 200 send/receive cycles that leave no descriptor or child
//! behind.

use std::io::Read;
use std::path::Path;

use strata_engine::btrfs::Btrfs;
use strata_engine::native::{self, ReceiveOptions};
use strata_engine::zfs::Zfs;
use strata_engine::{Engine, EngineError, Quiet, SendJob, StreamHeader};
use strata_testing::filesystems::{Fs, Kind, Scratch};

/// One test at a time: zfs-fuse serves one pool operation at a time
/// anyway, and the descriptor and child counts are the process's.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn engine(fs: &Fs, program: Option<&str>) -> Box<dyn Engine> {
    match fs.kind {
        Kind::Zfs => Box::new(Zfs {
            program: program.unwrap_or("zfs").into(),
            ..Zfs::default()
        }),
        Kind::Btrfs => Box::new(Btrfs {
            program: program.unwrap_or("btrfs").into(),
            ..Btrfs::default()
        }),
    }
}

/// Runs `case` on the file system, if `scripts/filesystems up` made it.
fn on(fs: Option<Fs>, case: fn(&Fs, &dyn Engine)) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(fs) = fs {
        case(&fs, &*engine(&fs, None));
    }
}

strata_testing::filesystem_cases!(
    a_damaged_or_cut_stream_is_refused_leaving_nothing_staged_and_the_previous_state_intact,
    streams_of_another_engine_and_hosts_without_the_file_system_are_clear_errors,
    two_hundred_send_receive_cycles_leak_no_descriptor_and_no_child,
    file_data_is_regrouped_and_version_1_streams_still_restore,
);

fn header(start: Option<&str>, end: &str) -> StreamHeader {
    StreamHeader {
        start: start.map(str::to_string),
        end: end.into(),
        created_ms: 0,
    }
}

/// Sends `project` from `start` to a new snapshot `end`: the stream.
fn send(e: &dyn Engine, project: &Scratch, start: Option<&str>, end: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let mut state = Vec::new();
    let mut base = &b""[..];
    let h = header(start, end);
    e.send(
        SendJob {
            source: &project.path,
            header: &h,
            base: start.map(|_| &mut base as &mut (dyn Read + Send)),
            out: &mut out,
            state: &mut state,
        },
        &Quiet,
    )
    .unwrap();
    out
}

fn opts(start: Option<&str>, end: &str) -> ReceiveOptions {
    ReceiveOptions {
        holds: start.map(str::to_string),
        expect_end: Some(end.to_string()),
        owners: native::Owners::for_this_process(),
    }
}

/// Restores `streams` (each with its start and end) into `target`; a
/// stream the file system was too busy to start receiving is received
/// again, as the repository's restore does.
fn restore(
    e: &dyn Engine,
    target: &Path,
    chain: &[String],
    streams: &[(&[u8], Option<&str>, &str)],
) -> Result<(), EngineError> {
    let mut dest = e.restore_into(target, chain, false)?;
    for (i, (s, start, end)) in streams.iter().enumerate().skip(dest.holds()) {
        let o = opts(*start, end);
        let mut tries = 0;
        loop {
            match dest.receive(&mut &s[..], &o, i + 1 < streams.len(), &Quiet) {
                Err(EngineError::Busy { .. }) if tries < 50 => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(200));
                }
                Err(err) => {
                    dest.abort();
                    return Err(err);
                }
                Ok(_) => break,
            }
        }
    }
    dest.finish().map(drop)
}

fn a_damaged_or_cut_stream_is_refused_leaving_nothing_staged_and_the_previous_state_intact(
    fs: &Fs,
    e: &dyn Engine,
) {
    let project = fs.project("hostile");
    std::fs::write(
        project.path.join("a"),
        strata_testing::tree::content(300_000, 1),
    )
    .unwrap();
    let full = send(e, &project, None, "s1");
    let second = strata_testing::tree::content(300_000, 2);
    std::fs::write(project.path.join("b"), &second).unwrap();
    let inc = send(e, &project, Some("s1"), "s2");
    let chain = vec!["s1".to_string(), "s2".to_string()];
    let parent = fs.restore_parent("hostile-parent");
    let target = parent.path.join("r");

    // Cut in half, and a byte flipped in the middle of the file system's
    // own bytes.
    let cut = &full[..full.len() / 2];
    let mut flipped = full.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x55;
    for bad in [cut, &flipped[..]] {
        let err = restore(e, &target, &chain[..1], &[(bad, None, "s1")]).unwrap_err();
        assert!(err.is_bad_input(), "{err}");
        assert!(!target.exists(), "nothing at the target");
        assert_eq!(fs.staging_left(&parent), Vec::<String>::new());
    }

    // A whole first stream, then a damaged incremental onto it: refused,
    // the project still at s1 with s1's content.
    restore(e, &target, &chain[..1], &[(&full, None, "s1")]).unwrap();
    let mut bad_inc = inc.clone();
    let at = bad_inc.len() / 2;
    bad_inc[at] ^= 0x55;
    let err = restore(
        e,
        &target,
        &chain,
        &[(&full, None, "s1"), (&bad_inc, Some("s1"), "s2")],
    )
    .unwrap_err();
    assert!(err.is_bad_input(), "{err}");
    assert_eq!(
        std::fs::read(target.join("a")).unwrap(),
        strata_testing::tree::content(300_000, 1)
    );
    assert!(!target.join("b").exists());
    assert_eq!(fs.snapshots(&target), ["s1"]);
    assert_eq!(fs.staging_left(&parent), Vec::<String>::new());
    // An incremental cut short: refused the same way.
    let err = restore(
        e,
        &target,
        &chain,
        &[
            (&full, None, "s1"),
            (&inc[..inc.len() - 20], Some("s1"), "s2"),
        ],
    )
    .unwrap_err();
    assert!(err.is_bad_input(), "{err}");
    assert!(!target.join("b").exists());
    // And the good one applies.
    restore(
        e,
        &target,
        &chain,
        &[(&full, None, "s1"), (&inc, Some("s1"), "s2")],
    )
    .unwrap();
    assert_eq!(std::fs::read(target.join("b")).unwrap(), second);
    assert_eq!(fs.snapshots(&target).last().map(String::as_str), Some("s2"));
    assert_eq!(fs.staging_left(&parent), Vec::<String>::new());
}

fn streams_of_another_engine_and_hosts_without_the_file_system_are_clear_errors(
    fs: &Fs,
    e: &dyn Engine,
) {
    let name = fs.engine_name();
    let project = fs.project("wrong");
    std::fs::write(project.path.join("a"), b"x").unwrap();
    let stream = send(e, &project, None, "s1");
    // This engine's stream applied by the native engine.
    let t = tempfile::tempdir().unwrap();
    let err =
        native::receive(t.path(), &stream[..], &ReceiveOptions::new(None), &Quiet).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains(&format!("\"{name}\"")) && text.contains("native engine"),
        "{text}"
    );
    // A native stream applied by this engine.
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("f"), b"y").unwrap();
    let mut nstream = Vec::new();
    native::send(
        src.path(),
        None::<strata_engine::index::IndexReader<&[u8]>>,
        &header(None, "n1"),
        &Default::default(),
        &mut nstream,
        Vec::new(),
        &Quiet,
    )
    .unwrap();
    let parent = fs.restore_parent("wrong-parent");
    let err = restore(
        e,
        &parent.path.join("r"),
        &["n1".into()],
        &[(&nstream, None, "n1")],
    )
    .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("\"native\"") && text.contains(&format!("{name} engine")),
        "{text}"
    );
    assert!(!parent.path.join("r").exists());
    assert_eq!(fs.staging_left(&parent), Vec::<String>::new());
    // Restoring where the file system is not: names the path and what it
    // needs.
    let err = restore(
        e,
        &t.path().join("r"),
        &["s1".into()],
        &[(&stream, None, "s1")],
    )
    .unwrap_err();
    assert!(matches!(err, EngineError::Target { .. }), "{err}");
    let want = match fs.kind {
        Kind::Zfs => "ZFS dataset",
        Kind::Btrfs => "btrfs",
    };
    assert!(err.to_string().contains(want), "{err}");
    assert!(!t.path().join("r").exists());
    // A host without the program: the program is named.
    let missing = format!("/nonexistent/{name}");
    let none = engine(fs, Some(&missing));
    let err = none
        .restore_into(&parent.path.join("r2"), &["s1".into()], false)
        .and_then(|mut d| {
            let r = d.receive(&mut &stream[..], &opts(None, "s1"), false, &Quiet);
            d.abort();
            r
        })
        .expect_err("fails");
    assert!(err.to_string().contains(&missing), "{err}");
    assert!(!parent.path.join("r2").exists());
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fn children() -> Vec<String> {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .filter(|c| !c.trim().is_empty())
        .collect()
}

fn has_children() -> bool {
    match rustix::process::waitpid(None, rustix::process::WaitOptions::NOHANG) {
        Err(e) => e != rustix::io::Errno::CHILD,
        Ok(_) => true,
    }
}

fn two_hundred_send_receive_cycles_leak_no_descriptor_and_no_child(fs: &Fs, e: &dyn Engine) {
    let project = fs.project("cycles");
    let parent = fs.restore_parent("cycles-parent");
    let target = parent.path.join("r");
    std::fs::write(project.path.join("n"), b"0").unwrap();
    let full = send(e, &project, None, "c0");
    restore(e, &target, &["c0".into()], &[(&full, None, "c0")]).unwrap();
    let (fds, kids) = (open_fds(), has_children());
    assert!(!kids, "children: {:?}", children());
    let mut chain = vec!["c0".to_string()];
    for i in 1..=200 {
        std::fs::write(project.path.join("n"), i.to_string()).unwrap();
        let (prev, end) = (format!("c{}", i - 1), format!("c{i}"));
        let s = send(e, &project, Some(&prev), &end);
        chain.push(end.clone());
        // Onto the project that holds the previous snapshot: one stream.
        let mut dest = e.restore_into(&target, &chain, false).unwrap();
        assert_eq!(dest.holds(), i, "the target holds all but the newest");
        dest.receive(&mut &s[..], &opts(Some(&prev), &end), false, &Quiet)
            .unwrap();
        dest.finish().unwrap();
        // Keep the file systems small: older snapshots go.
        if i >= 2 {
            fs.drop_snapshot(&project, &format!("c{}", i - 2));
        }
    }
    assert_eq!(std::fs::read_to_string(target.join("n")).unwrap(), "200");
    assert_eq!(open_fds(), fds, "descriptors leaked");
    assert!(!has_children(), "a child was left behind");
}

/// The data sections of a regrouped stream body (`docs/engines.md`),
/// concatenated.
fn data_sections(mut g: &[u8]) -> Vec<u8> {
    let mut data = Vec::new();
    while g.first() == Some(&b'G') {
        let s = u32::from_le_bytes(g[1..5].try_into().unwrap()) as usize;
        let d = u32::from_le_bytes(g[5..9].try_into().unwrap()) as usize;
        data.extend_from_slice(&g[9 + s..9 + s + d]);
        g = &g[9 + s + d..];
    }
    assert_eq!(g.first(), Some(&b'E'), "the body ends with its end");
    data
}

fn file_data_is_regrouped_and_version_1_streams_still_restore(fs: &Fs, e: &dyn Engine) {
    let project = fs.project("layout");
    let content = strata_testing::tree::content(700_000, 7);
    std::fs::write(project.path.join("big"), &content).unwrap();
    std::fs::write(project.path.join("small"), b"a few bytes").unwrap();
    let v2 = send(e, &project, None, "s1");
    let (r, h, version) = strata_engine::stream::read_header(&v2[..], e.kind(), 1..=2).unwrap();
    assert_eq!(version, 2);
    let body = r.into_inner();
    // The file's bytes are one run in the data sections: no record header
    // (with its per-snapshot fields) cuts them, so the same file sends the
    // same chunks from any snapshot or project.
    let data = data_sections(body);
    assert!(
        data.windows(content.len()).any(|w| w == &content[..]),
        "the file's content is contiguous in the data sections"
    );
    // The same stream as version 1 wrote it (the command's bytes as they
    // are) restores the same tree: repositories saved before version 2
    // stay readable.
    let mut raw = Vec::new();
    strata_engine::regroup::Ungrouped::new(body)
        .read_to_end(&mut raw)
        .unwrap();
    assert!(
        !raw.windows(content.len()).any(|w| w == &content[..]),
        "as the command wrote it, record headers cut the file's data"
    );
    let mut v1 = Vec::new();
    strata_engine::stream::write_header(&mut v1, &h, e.kind(), 1)
        .unwrap()
        .finish()
        .unwrap();
    v1.extend_from_slice(&raw);
    let parent = fs.restore_parent("layout-parent");
    let target = parent.path.join("r");
    restore(e, &target, &["s1".into()], &[(&v1, None, "s1")]).unwrap();
    assert_eq!(std::fs::read(target.join("big")).unwrap(), content);
    assert_eq!(std::fs::read(target.join("small")).unwrap(), b"a few bytes");
    assert_eq!(fs.staging_left(&parent), Vec::<String>::new());
}
