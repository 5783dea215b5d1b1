use super::*;
use proptest::prelude::*;

/// Serialises raw strings, valid or not, the way the format frames them.
fn strs(tokens: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for t in tokens {
        write_str(&mut out, t).unwrap();
    }
    out
}

/// Offset of string number `index` of `tokens`.
fn offset_of(tokens: &[&[u8]], index: usize) -> u64 {
    strs(&tokens[..index]).len() as u64
}

fn parse(bytes: &[u8]) -> Result<u64, NarError> {
    NarReader::new(bytes).validate()
}

#[track_caller]
fn assert_malformed(bytes: &[u8], offset: u64, kind: Malformed) {
    match parse(bytes) {
        Err(NarError::Malformed { offset: o, kind: k }) => {
            assert_eq!(
                (o, k),
                (offset, kind),
                "{:?}",
                String::from_utf8_lossy(bytes)
            );
        }
        other => panic!("expected {kind:?} at {offset}, got {other:?}"),
    }
}

const FILE_X: &[&[u8]] = &[
    b"nix-archive-1",
    b"(",
    b"type",
    b"regular",
    b"contents",
    b"x",
    b")",
];

/// A directory with the given entry names, each an empty file.
fn dir_tokens<'a>(names: &[&'a [u8]]) -> Vec<&'a [u8]> {
    let mut t: Vec<&[u8]> = vec![b"nix-archive-1", b"(", b"type", b"directory"];
    for name in names {
        t.extend_from_slice(&[b"entry", b"(", b"name", name, b"node"]);
        t.extend_from_slice(&[b"(", b"type", b"regular", b"contents", b"", b")", b")"]);
    }
    t.push(b")");
    t
}

#[test]
fn writes_what_nix_writes_for_a_file() {
    // trees.json "file-plain.txt": nix-store --dump of a file containing "plain file\n".
    let nar = NarNode::file("plain file\n").to_nar();
    assert_eq!(nar.len(), 128);
    assert_eq!(
        super::super::hash::sha256(&nar).to_base16(),
        "a84b628ab5f138f46aab22160faa8610a28d1c149172004bbca83b9bfd19ce96"
    );
    assert_eq!(
        nar,
        strs(&[
            FILE_X[0],
            b"(",
            b"type",
            b"regular",
            b"contents",
            b"plain file\n",
            b")"
        ])
    );
}

#[test]
fn accepts_the_canonical_forms() {
    let exec = strs(&[
        b"nix-archive-1",
        b"(",
        b"type",
        b"regular",
        b"executable",
        b"",
        b"contents",
        b"#!",
        b")",
    ]);
    assert_eq!(
        NarNode::from_nar(&exec[..]).unwrap(),
        NarNode::executable("#!")
    );
    let link = strs(&[
        b"nix-archive-1",
        b"(",
        b"type",
        b"symlink",
        b"target",
        b"../a",
        b")",
    ]);
    assert_eq!(
        NarNode::from_nar(&link[..]).unwrap(),
        NarNode::symlink("../a")
    );
    let dir = strs(&dir_tokens(&[b"a", b"b\xff", b"\xfe"]));
    assert_eq!(parse(&dir).unwrap(), dir.len() as u64);
}

// ------------------------------------------------------------------------- one test per rule

#[test]
fn rejects_bad_magic() {
    assert_malformed(&strs(&[b"nix-archive-2", b"("]), 0, Malformed::BadMagic);
    assert_malformed(&strs(&[b"nix-archive-10"]), 0, Malformed::BadMagic);
    assert_malformed(&[0xff; 64], 0, Malformed::BadMagic);
    assert_malformed(b"", 0, Malformed::Truncated);
}

#[test]
fn rejects_bad_tokens() {
    let mut t = FILE_X.to_vec();
    t[1] = b"[";
    assert_malformed(
        &strs(&t),
        24,
        Malformed::BadToken {
            expected: "\"(\"",
            found: "\"[\"".into(),
        },
    );
    // An unknown file type, a missing type, a non-empty executable marker.
    let cases: [(&[&[u8]], usize, &str); 4] = [
        (
            &[b"nix-archive-1", b"(", b"type", b"fifo"],
            3,
            "a file type",
        ),
        (&[b"nix-archive-1", b"(", b"regular"], 2, "\"type\""),
        (
            &[
                b"nix-archive-1",
                b"(",
                b"type",
                b"regular",
                b"executable",
                b"1",
            ],
            5,
            "the empty executable marker",
        ),
        (
            &[b"nix-archive-1", b"(", b"type", b"directory", b"node"],
            4,
            "\"entry\" or \")\"",
        ),
    ];
    for (tokens, at, expected) in cases {
        match parse(&strs(tokens)) {
            Err(NarError::Malformed {
                offset,
                kind: Malformed::BadToken { expected: e, .. },
            }) => assert_eq!((offset, e), (offset_of(tokens, at), expected)),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn rejects_non_canonical_orders_that_nix_would_parse() {
    // Nix's parser takes "executable" after "contents" and a second "contents"; Nix never
    // writes them, so a canonical archive has neither.
    let late_exec: &[&[u8]] = &[
        b"nix-archive-1",
        b"(",
        b"type",
        b"regular",
        b"contents",
        b"x",
        b"executable",
        b"",
    ];
    let at = offset_of(late_exec, 6);
    assert_malformed(
        &strs(late_exec),
        at,
        Malformed::BadToken {
            expected: "\")\" closing the node",
            found: "\"executable\"".into(),
        },
    );
    // A token longer than any token is rejected without reading it.
    let mut long = strs(&[b"nix-archive-1", b"("]);
    long.extend_from_slice(&u64::MAX.to_le_bytes());
    assert_malformed(
        &long,
        40,
        Malformed::BadToken {
            expected: "\"type\"",
            found: format!("a string of {} bytes", u64::MAX),
        },
    );
}

#[test]
fn rejects_non_zero_padding() {
    let mut nar = strs(FILE_X);
    // "x" is at 96 + 8; its seven padding bytes follow.
    let x_at = offset_of(FILE_X, 5) as usize + 8;
    assert_eq!(nar[x_at], b'x');
    nar[x_at + 3] = 1;
    assert_malformed(&nar, x_at as u64 + 3, Malformed::NonZeroPadding);
    // In a token and in the magic.
    let mut nar = strs(FILE_X);
    nar[24 + 9] = b'(';
    assert_malformed(&nar, 24 + 9, Malformed::NonZeroPadding);
    let mut nar = strs(FILE_X);
    nar[23] = 0x80;
    assert_malformed(&nar, 23, Malformed::NonZeroPadding);
}

#[test]
fn rejects_unsorted_and_duplicate_names() {
    let t = dir_tokens(&[b"b", b"a"]);
    let at = offset_of(&t, 4 + 12 + 3);
    assert_malformed(
        &strs(&t),
        at,
        Malformed::Unsorted {
            prev: b"b".to_vec(),
            name: b"a".to_vec(),
        },
    );
    let t = dir_tokens(&[b"a", b"a"]);
    assert_malformed(&strs(&t), at, Malformed::DuplicateName(b"a".to_vec()));
    // Byte order, not locale order: "B" < "a" < "\xc3".
    let t = dir_tokens(&[b"a", b"B"]);
    assert!(matches!(
        parse(&strs(&t)),
        Err(NarError::Malformed {
            kind: Malformed::Unsorted { .. },
            ..
        })
    ));
    assert!(parse(&strs(&dir_tokens(&[b"B", b"a", b"\xc3"]))).is_ok());
}

#[test]
fn rejects_dangerous_names() {
    for name in [&b""[..], b".", b"..", b"a/b", b"/", b"../etc", b"a\0b"] {
        let t = dir_tokens(&[b"ok", name]);
        let at = offset_of(&t, 4 + 12 + 3);
        assert_malformed(&strs(&t), at, Malformed::InvalidName(name.to_vec()));
    }
    // "..." and names with dots inside are fine.
    assert!(parse(&strs(&dir_tokens(&[b"...", b".a", b"a..b"]))).is_ok());
}

#[test]
fn rejects_truncation_at_every_length() {
    let nar = NarNode::directory([
        ("a", NarNode::executable("exec")),
        ("b", NarNode::symlink("a")),
        ("c", NarNode::directory([("d", NarNode::file("12345678"))])),
    ])
    .to_nar();
    assert_eq!(parse(&nar).unwrap(), nar.len() as u64);
    for len in 0..nar.len() {
        assert_malformed(&nar[..len], len as u64, Malformed::Truncated);
        match NarReader::new(&nar[..len]).embedded().validate() {
            Err(NarError::Malformed { offset, kind }) => {
                assert_eq!((offset, kind), (len as u64, Malformed::Truncated));
            }
            other => panic!("embedded, {len} bytes: {other:?}"),
        }
    }
}

#[test]
fn rejects_trailing_data() {
    let mut nar = strs(FILE_X);
    let len = nar.len() as u64;
    nar.push(0);
    assert_malformed(&nar, len, Malformed::TrailingData);
    let mut twice = strs(FILE_X);
    twice.extend_from_slice(&strs(FILE_X));
    assert_malformed(&twice, len, Malformed::TrailingData);
}

#[test]
fn rejects_absurd_lengths_without_allocating() {
    // Contents claiming 2^64-1 bytes: streamed, so only the truncation is noticed.
    let mut nar = strs(&FILE_X[..5]);
    let at = nar.len() as u64;
    nar.extend_from_slice(&u64::MAX.to_le_bytes());
    nar.extend_from_slice(b"some bytes");
    assert_malformed(&nar, at + 18, Malformed::Truncated);
    // A name of 2^40 bytes.
    let mut nar = strs(&[
        b"nix-archive-1",
        b"(",
        b"type",
        b"directory",
        b"entry",
        b"(",
        b"name",
    ]);
    let at = nar.len() as u64;
    nar.extend_from_slice(&(1u64 << 40).to_le_bytes());
    assert_malformed(
        &nar,
        at,
        Malformed::TooLong {
            what: "file name",
            len: 1 << 40,
            max: MAX_NAME_LEN,
        },
    );
    // A symlink target longer than PATH_MAX.
    let target = vec![b'a'; MAX_TARGET_LEN + 1];
    let t: &[&[u8]] = &[
        b"nix-archive-1",
        b"(",
        b"type",
        b"symlink",
        b"target",
        &target,
        b")",
    ];
    assert_malformed(
        &strs(t),
        offset_of(t, 5),
        Malformed::TooLong {
            what: "symlink target",
            len: MAX_TARGET_LEN as u64 + 1,
            max: MAX_TARGET_LEN,
        },
    );
}

#[test]
fn rejects_invalid_symlink_targets() {
    for target in [&b""[..], b"a\0b"] {
        let t: &[&[u8]] = &[
            b"nix-archive-1",
            b"(",
            b"type",
            b"symlink",
            b"target",
            target,
            b")",
        ];
        assert_malformed(
            &strs(t),
            offset_of(t, 5),
            Malformed::InvalidTarget(target.to_vec()),
        );
    }
}

#[test]
fn rejects_too_deep_nesting() {
    let mut node = NarNode::file("leaf");
    for _ in 0..4 {
        node = NarNode::directory([("d", node)]);
    }
    let nar = node.to_nar();
    assert!(NarReader::new(&nar[..]).max_depth(4).validate().is_ok());
    // The fourth directory's "(" follows three directory openings and three entry headers.
    let header = strs(&[
        b"(",
        b"type",
        b"directory",
        b"entry",
        b"(",
        b"name",
        b"d",
        b"node",
    ]);
    let at = 24 + 3 * header.len() as u64;
    match NarReader::new(&nar[..]).max_depth(3).validate() {
        Err(NarError::Malformed { offset, kind }) => {
            assert_eq!((offset, kind), (at, Malformed::TooDeep(3)));
        }
        other => panic!("{other:?}"),
    }
    // Deeper than the default limit, built as bytes: no recursion anywhere.
    let mut deep = strs(&[b"nix-archive-1"]);
    let level = strs(&[
        b"(",
        b"type",
        b"directory",
        b"entry",
        b"(",
        b"name",
        b"d",
        b"node",
    ]);
    for _ in 0..MAX_DEPTH + 1 {
        deep.extend_from_slice(&level);
    }
    assert!(matches!(
        parse(&deep),
        Err(NarError::Malformed {
            kind: Malformed::TooDeep(MAX_DEPTH),
            ..
        })
    ));
}

// ------------------------------------------------------------------------------ the reader

/// Returns at most `step` bytes per read.
struct Trickle<'a> {
    data: &'a [u8],
    step: usize,
}

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.step.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

#[test]
fn tokens_straddling_the_buffer_boundary() {
    // A file whose size moves the following tokens across the end of the read buffer.
    for size in BUF_SIZE - 200..BUF_SIZE + 16 {
        let node = NarNode::directory([
            ("a", NarNode::file(vec![7u8; size])),
            ("b-with-a-longer-name", NarNode::symlink("target")),
        ]);
        let nar = node.to_nar();
        let mut hasher = Hasher::new(HashAlgo::Sha256);
        let mut reader = NarReader::new(Trickle {
            data: &nar,
            step: 4099,
        })
        .with_tee(&mut hasher);
        let mut builder = TreeBuilder::default();
        assert_eq!(reader.parse(&mut builder).unwrap(), nar.len() as u64);
        drop(reader);
        assert_eq!(builder.finish(), node);
        assert_eq!(hasher.finish(), super::super::hash::sha256(&nar));
    }
}

#[test]
fn embedded_archives_leave_the_rest_of_the_stream() {
    let nar = NarNode::directory([("x", NarNode::file(vec![1u8; 300_000]))]).to_nar();
    let mut stream = nar.clone();
    stream.extend_from_slice(b"next message");
    let mut cursor = io::Cursor::new(&stream[..]);
    let mut copy = Vec::new();
    let size = NarReader::new(&mut cursor)
        .embedded()
        .with_tee(&mut copy)
        .validate()
        .unwrap();
    assert_eq!(size, nar.len() as u64);
    assert_eq!(cursor.position(), nar.len() as u64);
    assert_eq!(copy, nar);
}

#[test]
fn read_errors_name_the_offset() {
    struct Failing(usize);
    impl Read for Failing {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.0 == 0 {
                return Err(io::Error::other("disk on fire"));
            }
            let n = self.0.min(buf.len());
            let nar = strs(FILE_X);
            buf[..n].copy_from_slice(&nar[..n]);
            self.0 -= n;
            Ok(n)
        }
    }
    match NarReader::new(Failing(40)).validate() {
        Err(NarError::Read { offset: 40, .. }) => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn validate_hashes_and_measures() {
    let nar = strs(FILE_X);
    let (hash, size) = validate(&nar[..], HashAlgo::Sha1).unwrap();
    assert_eq!(size, nar.len() as u64);
    assert_eq!(hash, super::super::hash::hash_bytes(HashAlgo::Sha1, &nar));
}

// --------------------------------------------------------------------------- file system

#[test]
fn dump_and_restore_a_tree() {
    let dir = tempfile::tempdir().unwrap();
    let tree = NarNode::directory([
        (
            &b"bin"[..],
            NarNode::directory([("run", NarNode::executable("#!/bin/sh\n"))]),
        ),
        (b"empty", NarNode::directory::<Vec<u8>>([])),
        (b"link", NarNode::symlink("bin/run")),
        (b"dangling", NarNode::symlink("/does/not/exist")),
        (b"\xff\xfe non-utf8", NarNode::file(vec![0u8; 1000])),
        (b"big", NarNode::file(vec![42u8; 3 * BUF_SIZE + 5])),
    ]);
    let root = dir.path().join("root");
    assert_eq!(tree.restore_to(&root).unwrap(), tree.to_nar().len() as u64);
    let mut dumped = Vec::new();
    let size = dump_path(&root, &mut dumped).unwrap();
    assert_eq!(size, dumped.len() as u64);
    assert_eq!(dumped, tree.to_nar());
    assert_eq!(
        hash_path(&root, HashAlgo::Sha256).unwrap(),
        tree.nar_hash(HashAlgo::Sha256)
    );
    // Modes: executables gain +x for everyone, other files stay without.
    let run = fs::metadata(root.join("bin/run")).unwrap().mode();
    assert_eq!(run & 0o111, 0o111);
    let big = fs::metadata(root.join("big")).unwrap().mode();
    assert_eq!(big & 0o111, 0);
    // Only the user's x bit makes a file executable in the NAR.
    fs::set_permissions(root.join("big"), fs::Permissions::from_mode(0o644 | 0o011)).unwrap();
    assert_eq!(
        hash_path(&root, HashAlgo::Sha256).unwrap(),
        tree.nar_hash(HashAlgo::Sha256)
    );
}

#[test]
fn restore_refuses_an_existing_destination() {
    let dir = tempfile::tempdir().unwrap();
    let nar = strs(FILE_X);
    match restore(&nar[..], dir.path()) {
        Err(NarError::Io { path, .. }) => assert_eq!(path, dir.path()),
        other => panic!("{other:?}"),
    }
}

#[test]
fn restore_stops_at_the_first_fault() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("r");
    let t = dir_tokens(&[b"a", b".."]);
    assert!(restore(&strs(&t)[..], &root).is_err());
    assert!(root.join("a").exists());
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn dump_errors_name_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    match dump_path(&missing, &mut io::sink()) {
        Err(NarError::Io { path, .. }) => assert_eq!(path, missing),
        other => panic!("{other:?}"),
    }
    let tree = dir.path().join("t");
    fs::create_dir(&tree).unwrap();
    let socket = tree.join("sock");
    let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    match dump_path(&tree, &mut io::sink()) {
        Err(NarError::UnsupportedType(path)) => assert_eq!(path, socket),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        NarError::UnsupportedType(socket.clone()).to_string(),
        format!("file '{}' has an unsupported type", socket.display())
    );
}

/// A tree several times larger than the buffers between the dumping and the writing thread:
/// big files, then a stretch of small ones, so each side has to wait for the other.
fn large_tree() -> NarNode {
    let big = (0..12u8).map(|i| {
        let contents: Vec<u8> = (0..PIPE_BUF_SIZE + 1000 * usize::from(i))
            .map(|n| (n % 251) as u8 ^ i)
            .collect();
        (format!("big{i:02}").into_bytes(), NarNode::file(contents))
    });
    let small = (0..400u32).map(|i| {
        let node = if i % 7 == 0 {
            NarNode::executable(vec![i as u8; (i as usize * 37) % 5000])
        } else {
            NarNode::file(vec![(i % 256) as u8; (i as usize * 131) % 9000])
        };
        (format!("small{i:03}").into_bytes(), node)
    });
    NarNode::directory(big.chain(small))
}

/// A writer that takes a few bytes per call and pauses now and then, so the dumper runs ahead
/// and has to wait for emptied buffers.
struct SlowWriter {
    out: Vec<u8>,
    calls: u64,
}

impl Write for SlowWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.calls += 1;
        if self.calls.is_multiple_of(64) {
            thread::yield_now();
        }
        let n = buf.len().min(4096);
        self.out.extend_from_slice(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A writer that fails after `left` bytes.
struct FailingWriter {
    left: usize,
}

impl Write for FailingWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Err(io::Error::other("disk full"));
        }
        let n = buf.len().min(self.left);
        self.left -= n;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn the_parallel_dump_writes_the_same_bytes_with_fast_and_slow_writers() {
    let dir = tempfile::tempdir().unwrap();
    let tree = large_tree();
    let root = dir.path().join("root");
    tree.restore_to(&root).unwrap();
    let expected = tree.to_nar();
    assert!(expected.len() > 3 * IN_FLIGHT * PIPE_BUF_SIZE / 2);
    let mut fast = Vec::new();
    assert_eq!(
        dump_path_parallel(&root, &mut fast).unwrap(),
        expected.len() as u64
    );
    assert!(fast == expected, "the fast writer's NAR differs");
    let mut slow = SlowWriter {
        out: Vec::new(),
        calls: 0,
    };
    assert_eq!(
        dump_path_parallel(&root, &mut slow).unwrap(),
        expected.len() as u64
    );
    assert!(slow.out == expected, "the slow writer's NAR differs");
    assert_eq!(
        hash_path(&root, HashAlgo::Sha256).unwrap(),
        tree.nar_hash(HashAlgo::Sha256)
    );
}

#[test]
fn the_parallel_dump_stops_at_a_failing_writer_or_a_failing_walk() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    large_tree().restore_to(&root).unwrap();
    for left in [0, 1, PIPE_BUF_SIZE, 5 * PIPE_BUF_SIZE + 3] {
        match dump_path_parallel(&root, &mut FailingWriter { left }) {
            Err(NarError::Write(e)) => assert_eq!(e.to_string(), "disk full"),
            other => panic!("{other:?}"),
        }
    }
    // A socket sorts after the big files: the walk fails once the writer is busy.
    let socket = root.join("sock");
    let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    match dump_path_parallel(&root, &mut io::sink()) {
        Err(NarError::UnsupportedType(path)) => assert_eq!(path, socket),
        other => panic!("{other:?}"),
    }
}

#[test]
fn hash_flat_hashes_contents() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("f");
    fs::write(&file, "plain file\n").unwrap();
    let (hash, size) = hash_flat(&file, HashAlgo::Sha256).unwrap();
    assert_eq!(size, 11);
    assert_eq!(
        hash.to_base32(),
        "02bavd8zw6rfxkzmv7n4z6inp3l53k0pl29gqq7jwhhnbj0b8c8f"
    );
}

// ------------------------------------------------------------------------------ round trips

fn name() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(
        any::<u8>().prop_filter("no / or NUL", |b| *b != b'/' && *b != 0),
        1..12,
    )
    .prop_filter("not . or ..", |n| n != b"." && n != b"..")
}

fn leaf() -> impl Strategy<Value = NarNode> {
    prop_oneof![
        (any::<bool>(), proptest::collection::vec(any::<u8>(), 0..40)).prop_map(
            |(executable, contents)| NarNode::Regular {
                executable,
                contents
            }
        ),
        proptest::collection::vec(1u8..=255, 1..30).prop_map(|target| NarNode::Symlink { target }),
    ]
}

fn tree() -> impl Strategy<Value = NarNode> {
    leaf().prop_recursive(4, 40, 6, |inner| {
        proptest::collection::btree_map(name(), inner, 0..6).prop_map(NarNode::Directory)
    })
}

proptest! {
    #[test]
    fn write_then_read_gives_the_same_tree(node in tree(), step in 1usize..64) {
        let nar = node.to_nar();
        let mut builder = TreeBuilder::default();
        let size = NarReader::new(Trickle { data: &nar, step }).parse(&mut builder).unwrap();
        prop_assert_eq!(size, nar.len() as u64);
        prop_assert_eq!(builder.finish(), node);
    }

    #[test]
    fn restore_then_dump_gives_the_same_bytes(node in tree()) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("r");
        let nar = node.to_nar();
        restore(&nar[..], &root).unwrap();
        let mut dumped = Vec::new();
        dump_path(&root, &mut dumped).unwrap();
        prop_assert_eq!(dumped, nar);
    }

    #[test]
    fn any_corruption_is_an_error_or_the_same_archive(node in tree(), at in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let mut nar = node.to_nar();
        let i = at.index(nar.len());
        nar[i] = byte;
        // Either the byte was not significant to the structure (contents, names, targets) or
        // the reader rejects the archive; it never panics.
        if let Ok(size) = parse(&nar) {
            prop_assert_eq!(size, nar.len() as u64);
        }
    }
}

#[test]
fn restore_never_writes_through_a_symlink_it_made() {
    let dir = tempfile::tempdir().unwrap();
    let outside = dir.path().join("outside");
    fs::create_dir(&outside).unwrap();
    let target = outside.to_str().unwrap().as_bytes();
    // "link" -> outside, then a directory "link" holding "pwned": a duplicate entry.
    let t: &[&[u8]] = &[
        b"nix-archive-1",
        b"(",
        b"type",
        b"directory",
        b"entry",
        b"(",
        b"name",
        b"link",
        b"node",
        b"(",
        b"type",
        b"symlink",
        b"target",
        target,
        b")",
        b")",
        b"entry",
        b"(",
        b"name",
        b"link",
        b"node",
        b"(",
        b"type",
        b"directory",
        b"entry",
        b"(",
        b"name",
        b"pwned",
        b"node",
        b"(",
        b"type",
        b"regular",
        b"contents",
        b"gotcha",
        b")",
        b")",
        b")",
        b")",
        b")",
    ];
    let root = dir.path().join("root");
    match restore(&strs(t)[..], &root) {
        Err(NarError::Malformed { offset, kind }) => {
            assert_eq!(offset, offset_of(t, 19));
            assert_eq!(kind, Malformed::DuplicateName(b"link".to_vec()));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);
    // A symlink as the root is created, not followed.
    let link_nar = strs(&[
        b"nix-archive-1",
        b"(",
        b"type",
        b"symlink",
        b"target",
        target,
        b")",
    ]);
    restore(&link_nar[..], &dir.path().join("top")).unwrap();
    assert!(
        fs::symlink_metadata(dir.path().join("top"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    match restore(&strs(FILE_X)[..], &dir.path().join("top")) {
        Err(NarError::Io { action, .. }) => assert_eq!(action, "creating file"),
        other => panic!("{other:?}"),
    }
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);
}
