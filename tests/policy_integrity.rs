//! `[[integrity]]` tables of policy files: RFC 2747 keys, their secrets (inline or in a
//! private file next to the policy), and refusals with their positions. Secrets never show
//! in `Debug` output or in errors.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use qtoq::integrity::{Algorithm, KeyId};
use qtoq::policy::{Policy, PolicyError};

/// A directory removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "qtoq-policy-integrity-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    /// Writes `contents` to `name` (under the directory) with `mode`.
    fn file(&self, name: &str, contents: &[u8], mode: u32) -> PathBuf {
        let path = self.0.join(name);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).unwrap();
        }
        fs::write(&path, contents).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    /// Writes `text` as `policy.toml` and loads it.
    fn load(&self, text: &str) -> Result<Policy, PolicyError> {
        Policy::load(self.file("policy.toml", text.as_bytes(), 0o644))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// 1-based line and column of the first `needle` in `text`.
fn position_of(text: &str, needle: &str) -> (usize, usize) {
    let offset = text
        .find(needle)
        .unwrap_or_else(|| panic!("{needle} in {text}"));
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before[before.rfind('\n').map_or(0, |i| i + 1)..]
        .chars()
        .count()
        + 1;
    (line, column)
}

/// The (line, column, message) of a refused policy, checked to name `file` and not to show
/// `secret` in any form of the error.
fn refusal(
    result: Result<Policy, PolicyError>,
    file: &str,
    secret: &str,
) -> (usize, usize, String) {
    let err = match result {
        Err(e) => e,
        Ok(policy) => panic!("accepted: {policy:?}"),
    };
    for shown in [err.to_string(), format!("{err:?}")] {
        assert!(!shown.contains(secret), "the secret shows in {shown}");
    }
    match err {
        PolicyError::Invalid {
            file: named,
            line,
            column,
            message,
        } => {
            assert!(named.ends_with(file), "{named}");
            (line, column, message)
        }
        other => panic!("not a positioned error: {other}"),
    }
}

const SECRET: &str = "correct horse battery staple";

fn inline(text: &str) -> (usize, usize, String) {
    refusal(
        Policy::from_toml_str(text, "keys.toml"),
        "keys.toml",
        SECRET,
    )
}

#[test]
fn valid_tables_become_the_key_chain_in_file_order() {
    let text = format!(
        r#"
        [[integrity]]
        peer = "10.77.0.2/32"
        key_id = 1
        algorithm = "hmac-md5"
        secret = "{SECRET}"

        [[integrity]]
        peer = "10.77.0.0/16"
        key_id = 281474976710655
        algorithm = "hmac-sha256"
        secret = "another"

        [[integrity]]
        peer = "10.78.0.9"
        key_id = 0
        algorithm = "hmac-sha256"
        secret = "a third"

        [[integrity]]
        peer = "fd00:77::/64"
        key_id = 1
        algorithm = "hmac-md5"
        secret = "six"

        [[integrity]]
        peer = "fd00:78::1"
        key_id = 1
        algorithm = "hmac-md5"
        secret = "seven"
        "#
    );
    let policy = Policy::from_toml_str(&text, "keys.toml").unwrap();
    let keys = policy.integrity().keys();
    assert_eq!(keys.len(), 5);
    assert_eq!(keys[0].peer.to_string(), "10.77.0.2/32");
    assert_eq!(keys[0].key_id, KeyId::new(1).unwrap());
    assert_eq!(keys[0].algorithm, Algorithm::HmacMd5);
    assert_eq!(keys[0].secret.expose(), SECRET.as_bytes());
    assert_eq!(keys[1].key_id.get(), KeyId::MAX);
    assert_eq!(keys[1].algorithm, Algorithm::HmacSha256);
    // An address without a length is a host prefix.
    assert_eq!(keys[2].peer.to_string(), "10.78.0.9/32");
    assert_eq!(keys[2].key_id.get(), 0);
    assert_eq!(keys[3].peer.to_string(), "fd00:77::/64");
    assert_eq!(keys[4].peer.len(), 128);
    // The last key covering a neighbor sends: the /16 after the /32.
    let chain = policy.integrity();
    let sending = chain.sending_key("10.77.0.2".parse().unwrap()).unwrap();
    assert_eq!(sending.key_id.get(), KeyId::MAX);
    assert!(chain.covers("fd00:77::5".parse().unwrap()));
    assert!(!chain.covers("10.79.0.1".parse().unwrap()));

    // None without [[integrity]].
    assert!(Policy::from_toml_str("", "empty.toml")
        .unwrap()
        .integrity()
        .is_empty());
    assert!(Policy::default().integrity().is_empty());
}

#[test]
fn secret_files_are_read_next_to_the_policy_file_without_one_trailing_newline() {
    let dir = Scratch::new();
    dir.file("keys/peer.key", format!("{SECRET}\n").as_bytes(), 0o600);
    dir.file("crlf.key", b"crlf\r\n", 0o400);
    dir.file("two-newlines.key", b"kept\n\n", 0o600);
    let binary = [0u8, 0xff, b'\n', 7];
    dir.file("binary.key", &binary, 0o600);
    let absolute = dir.file("absolute.key", b"absolute", 0o600);
    let policy = dir
        .load(&format!(
            r#"
            [[integrity]]
            peer = "10.0.0.1"
            key_id = 1
            algorithm = "hmac-md5"
            secret_file = "keys/peer.key"

            [[integrity]]
            peer = "10.0.0.2"
            key_id = 2
            algorithm = "hmac-md5"
            secret_file = "./crlf.key"

            [[integrity]]
            peer = "10.0.0.3"
            key_id = 3
            algorithm = "hmac-sha256"
            secret_file = "two-newlines.key"

            [[integrity]]
            peer = "10.0.0.4"
            key_id = 4
            algorithm = "hmac-sha256"
            secret_file = "binary.key"

            [[integrity]]
            peer = "10.0.0.5"
            key_id = 5
            algorithm = "hmac-sha256"
            secret_file = "{}"
            "#,
            absolute.display()
        ))
        .unwrap();
    let secrets: Vec<&[u8]> = policy
        .integrity()
        .keys()
        .iter()
        .map(|k| k.secret.expose())
        .collect();
    assert_eq!(
        secrets,
        [
            SECRET.as_bytes(),
            b"crlf",
            b"kept\n",
            &binary[..],
            b"absolute"
        ]
    );
    // The policy's Debug output names the keys but never a secret.
    let debug = format!("{policy:?}");
    assert!(debug.contains("10.0.0.1"), "{debug}");
    assert!(!debug.contains(SECRET), "{debug}");
    assert!(!debug.contains("absolute\""), "{debug}");
    assert!(!debug.contains("crlf\""), "{debug}");
}

#[test]
fn policy_debug_output_never_shows_an_inline_secret() {
    let text = format!(
        "[[integrity]]\npeer = \"10.0.0.1\"\nkey_id = 9\nalgorithm = \"hmac-sha256\"\nsecret = \"{SECRET}\"\n"
    );
    let policy = Policy::from_toml_str(&text, "keys.toml").unwrap();
    for shown in [
        format!("{policy:?}"),
        format!("{policy:#?}"),
        format!("{:?}", policy.integrity()),
        format!("{:?}", policy.integrity().keys()[0]),
    ] {
        assert!(!shown.contains(SECRET), "{shown}");
        assert!(!shown.contains("horse"), "{shown}");
    }
    assert!(format!("{policy:?}").contains("28 bytes"));
}

fn table(body: &str) -> String {
    format!("[host]\nmax_flows = 10\n\n[[integrity]]\n{body}")
}

#[test]
fn bad_values_are_refused_at_their_position() {
    let secret = format!("secret = \"{SECRET}\"\n");
    let cases: [(&str, &str, &str); 7] = [
        (
            "peer = \"10.0.0.1\"\nkey_id = 1\nalgorithm = \"hmac-sha1\"\n",
            "\"hmac-sha1\"",
            "unknown integrity algorithm \"hmac-sha1\"",
        ),
        (
            "peer = \"10.0.0.1\"\nkey_id = 281474976710656\nalgorithm = \"hmac-md5\"\n",
            "281474976710656",
            "281474976710656 is not a 48-bit Key Identifier",
        ),
        (
            "peer = \"10.0.0.1\"\nkey_id = -1\nalgorithm = \"hmac-md5\"\n",
            "-1",
            "between 0 and 281474976710655",
        ),
        (
            "peer = \"10.0.0.300/32\"\nkey_id = 1\nalgorithm = \"hmac-md5\"\n",
            "\"10.0.0.300/32\"",
            "bad integrity peer",
        ),
        (
            "peer = \"10.0.0.1/33\"\nkey_id = 1\nalgorithm = \"hmac-md5\"\n",
            "\"10.0.0.1/33\"",
            "exceeds 32",
        ),
        (
            "peer = \"fd00::/129\"\nkey_id = 1\nalgorithm = \"hmac-md5\"\n",
            "\"fd00::/129\"",
            "exceeds 128",
        ),
        (
            "peer = \"\"\nkey_id = 1\nalgorithm = \"hmac-md5\"\n",
            "\"\"",
            "is not an address",
        ),
    ];
    for (body, at, says) in cases {
        let text = table(&format!("{body}{secret}"));
        let (line, column, message) = inline(&text);
        assert_eq!((line, column), position_of(&text, at), "{body}: {message}");
        assert!(message.contains(says), "{body}: {message}");
    }
}

#[test]
fn exactly_one_of_secret_and_secret_file() {
    let both = table(&format!(
        "peer = \"10.0.0.1\"\nkey_id = 1\nalgorithm = \"hmac-md5\"\nsecret = \"{SECRET}\"\n\
         secret_file = \"peer.key\"\n"
    ));
    let (line, column, message) = inline(&both);
    assert_eq!((line, column), position_of(&both, "\"peer.key\""));
    assert!(message.contains("not both"), "{message}");

    let neither = table("peer = \"10.0.0.1\"\nkey_id = 1\nalgorithm = \"hmac-md5\"\n");
    let (line, column, message) = inline(&neither);
    assert_eq!((line, column), position_of(&neither, "\"10.0.0.1\""));
    assert!(message.contains("no secret"), "{message}");

    let empty = table("peer = \"10.0.0.1\"\nkey_id = 1\nalgorithm = \"hmac-md5\"\nsecret = \"\"\n");
    let (line, column, message) = inline(&empty);
    assert_eq!((line, column), position_of(&empty, "\"\"\n"));
    assert!(message.contains("empty"), "{message}");
}

#[test]
fn a_secret_of_another_type_is_refused_without_showing_it() {
    let text =
        table("peer = \"10.0.0.1\"\nkey_id = 1\nalgorithm = \"hmac-md5\"\nsecret = 86753090\n");
    let (line, column, message) = refusal(
        Policy::from_toml_str(&text, "keys.toml"),
        "keys.toml",
        "86753090",
    );
    assert_eq!((line, column), position_of(&text, "86753090"));
    assert!(message.contains("must be a string"), "{message}");

    let text = table(
        "peer = \"10.0.0.1\"\nkey_id = 1\nalgorithm = \"hmac-md5\"\nsecret = [\"hidden-in-a-list\"]\n",
    );
    let (_, _, message) = refusal(
        Policy::from_toml_str(&text, "keys.toml"),
        "keys.toml",
        "hidden-in-a-list",
    );
    assert!(message.contains("must be a string"), "{message}");
}

#[test]
fn unknown_and_missing_fields_are_refused() {
    let text = table(&format!(
        "peer = \"10.0.0.1\"\nkey_id = 1\nalgorithm = \"hmac-md5\"\nsecret = \"{SECRET}\"\n\
         lifetime = 3600\n"
    ));
    let (line, _, message) = inline(&text);
    assert_eq!(line, position_of(&text, "lifetime").0, "{message}");
    assert!(message.contains("lifetime"), "{message}");

    let text = table(&format!(
        "peer = \"10.0.0.1\"\nalgorithm = \"hmac-md5\"\nsecret = \"{SECRET}\"\n"
    ));
    let (line, _, message) = inline(&text);
    assert!(line >= 4, "{line}: {message}");
    assert!(message.contains("key_id"), "{message}");
}

#[test]
fn a_key_id_given_twice_for_overlapping_peers_is_refused_at_the_second() {
    let text = format!(
        "[[integrity]]\npeer = \"10.0.0.0/24\"\nkey_id = 5\nalgorithm = \"hmac-md5\"\n\
         secret = \"{SECRET}\"\n\n\
         [[integrity]]\npeer = \"10.1.0.0/24\"\nkey_id = 5\nalgorithm = \"hmac-md5\"\n\
         secret = \"{SECRET}\"\n\n\
         [[integrity]]\npeer = \"10.0.0.7\"\nkey_id = 5\nalgorithm = \"hmac-sha256\"\n\
         secret = \"other\"\n"
    );
    let (line, column, message) = inline(&text);
    // The third table's key_id: the second (another /24) does not overlap the first.
    assert_eq!((line, column), (15, 10), "{message}");
    assert!(message.contains("key_id 5 is given twice"), "{message}");
    assert!(message.contains("10.0.0.0/24"), "{message}");
    assert!(message.contains("10.0.0.7/32"), "{message}");
}

#[test]
fn unusable_secret_files_are_refused_with_their_path() {
    let dir = Scratch::new();
    let policy = |file: &str| {
        format!(
            "[[integrity]]\npeer = \"10.0.0.1\"\nkey_id = 1\nalgorithm = \"hmac-md5\"\n\
             secret_file = \"{file}\"\n"
        )
    };
    let at = |file: &str| position_of(&policy(file), &format!("\"{file}\""));

    // Missing: the error names the path it looked at, next to the policy file.
    let (line, column, message) = refusal(dir.load(&policy("nope.key")), "policy.toml", SECRET);
    assert_eq!((line, column), at("nope.key"));
    let expected = dir.0.join("nope.key");
    assert!(
        message.contains(&expected.display().to_string()),
        "{message}"
    );
    assert!(message.contains("cannot read"), "{message}");

    // Empty, and a lone newline.
    for contents in [&b""[..], b"\n", b"\r\n"] {
        dir.file("empty.key", contents, 0o600);
        let (line, column, message) =
            refusal(dir.load(&policy("empty.key")), "policy.toml", SECRET);
        assert_eq!((line, column), at("empty.key"));
        assert!(message.contains("is empty"), "{message}");
        assert!(message.contains("empty.key"), "{message}");
    }

    // Readable (or writable) by the group or others: refused, as ssh refuses such keys.
    for mode in [0o640, 0o604, 0o620, 0o644, 0o660] {
        let path = dir.file("shared.key", SECRET.as_bytes(), mode);
        let (line, column, message) =
            refusal(dir.load(&policy("shared.key")), "policy.toml", SECRET);
        assert_eq!((line, column), at("shared.key"), "{mode:o}");
        assert!(message.contains(&path.display().to_string()), "{message}");
        assert!(message.contains("chmod 600"), "{message}");
        assert!(message.contains(&format!("{mode:04o}")), "{message}");
    }

    // Not a regular file.
    fs::create_dir_all(dir.0.join("a-directory")).unwrap();
    let (_, _, message) = refusal(dir.load(&policy("a-directory")), "policy.toml", SECRET);
    assert!(message.contains("a-directory"), "{message}");

    // Unreadable (root reads it anyway).
    let is_root = fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false);
    if !is_root {
        dir.file("locked.key", SECRET.as_bytes(), 0o000);
        let (_, _, message) = refusal(dir.load(&policy("locked.key")), "policy.toml", SECRET);
        assert!(message.contains("locked.key"), "{message}");
        assert!(message.contains("ermission denied"), "{message}");
    }

    // Too large to be a key.
    dir.file("huge.key", &vec![b'x'; 64 * 1024 + 1], 0o600);
    let (_, _, message) = refusal(dir.load(&policy("huge.key")), "policy.toml", SECRET);
    assert!(message.contains("huge.key"), "{message}");
    assert!(message.contains("65537 bytes"), "{message}");

    // A private one loads.
    dir.file("ok.key", SECRET.as_bytes(), 0o600);
    assert_eq!(
        dir.load(&policy("ok.key")).unwrap().integrity().keys()[0]
            .secret
            .expose(),
        SECRET.as_bytes()
    );
}

#[test]
fn a_broken_file_with_a_secret_does_not_echo_it() {
    // TOML syntax errors on the secret's line.
    for broken in [
        format!("secret = \"{SECRET}\n"),
        format!("secret = {SECRET}\n"),
        format!("secret = \"{SECRET}\" trailing\n"),
    ] {
        let text = table(&format!(
            "peer = \"10.0.0.1\"\nkey_id = 1\nalgorithm = \"hmac-md5\"\n{broken}"
        ));
        let (line, _, message) = inline(&text);
        assert_eq!(line, 8, "{message}");
    }
}

/// The example policy's `[[integrity]]` block is commented out (the example peers have no
/// key); uncommented, it is valid.
#[test]
fn the_example_policys_integrity_block_is_valid_once_uncommented() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/policy.toml");
    let text = fs::read_to_string(&path).unwrap();
    assert!(Policy::load(&path).unwrap().integrity().is_empty());
    // Commented-out TOML lines start with `#` then the key or table: uncomment those.
    let uncommented: String = text
        .lines()
        .map(|line| match line.strip_prefix('#') {
            Some(rest) if rest.starts_with(|c: char| c.is_ascii_alphabetic() || c == '[') => rest,
            _ => line,
        })
        .map(|line| format!("{line}\n"))
        .collect();
    assert!(
        uncommented.contains("[[integrity]]"),
        "no [[integrity]] block"
    );
    let policy = Policy::from_toml_str(&uncommented, "policy.toml (uncommented)").unwrap();
    let keys = policy.integrity().keys();
    assert!(!keys.is_empty());
    assert_eq!(keys[0].peer.to_string(), "10.77.0.2/32");
    assert_eq!(keys[0].algorithm, Algorithm::HmacMd5);
    // The rest of the file is unchanged by uncommenting.
    assert_eq!(
        policy.rules().len(),
        Policy::load(&path).unwrap().rules().len()
    );
}
