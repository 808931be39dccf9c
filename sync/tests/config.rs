//! The cluster file: what parses, and what is refused with which message.

use std::path::Path;

use dmvx_sync::config::{ConfigError, DEFAULT_TIMEOUT_MS};
use dmvx_sync::{ClusterConfig, ClusterKey, Digest, Role};

const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
const IMAGE: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";

fn file(cluster_extra: &str, rest: &str) -> String {
    format!(
        r#"
[cluster]
name = "demo"
{cluster_extra}
[[variant]]
id = 0
address = "127.0.0.1:7700"
role = "leader"
[[variant]]
id = 1
address = "127.0.0.1:7701"
role = "follower"
{rest}
"#
    )
}

fn parse(text: &str) -> Result<ClusterConfig, ConfigError> {
    ClusterConfig::parse(text, Path::new("/nonexistent"))
}

fn err(text: &str) -> String {
    parse(text).unwrap_err().to_string()
}

#[test]
fn the_example_file_parses() {
    let text = format!(
        r#"
[cluster]
name = "demo"
key = "{KEY}"
timeout_ms = 2500
batch_bytes = 4096
max_lag = 77
[digests]
image = "{IMAGE}"
program = "sha256:2222222222222222222222222222222222222222222222222222222222222222"
[policy]
preset = "dmvx"
[policy.calls]
write = "lockstep"
[[variant]]
id = 2
address = "10.0.0.2:7700"
role = "follower"
[[variant]]
id = 0
address = "leader.example:7700"
role = "leader"
"#
    );
    let cfg = parse(&text).unwrap();
    assert_eq!(cfg.name, "demo");
    assert_eq!(cfg.key.to_hex(), KEY);
    assert_eq!(cfg.timeout.as_millis(), 2500);
    assert_eq!(cfg.batch_bytes, 4096);
    assert_eq!(cfg.max_lag, 77);
    assert_eq!(cfg.digests.image, Some(Digest([0x11; 32])));
    assert_eq!(cfg.digests.program, Some(Digest([0x22; 32])));
    assert_eq!(cfg.policy["preset"].as_str(), Some("dmvx"));
    assert_eq!(cfg.leader().id, 0);
    assert_eq!(cfg.leader().address, "leader.example:7700");
    let followers: Vec<u8> = cfg.followers().map(|v| v.id).collect();
    assert_eq!(followers, [2]);
    // Sorted by id.
    assert_eq!(cfg.variants[0].id, 0);
    assert_eq!(cfg.variant(2).unwrap().role, Role::Follower);
    assert!(matches!(cfg.variant(3), Err(ConfigError::UnknownVariant(3))));
    // The key never shows in debug output.
    assert!(!format!("{cfg:?}").contains(&KEY[..16]));
}

#[test]
fn defaults_apply() {
    let cfg = parse(&file(&format!("key = \"{KEY}\""), "")).unwrap();
    assert_eq!(cfg.timeout.as_millis() as u64, DEFAULT_TIMEOUT_MS);
    assert_eq!(cfg.batch_bytes, 8192);
    assert_eq!(cfg.max_lag, 4096);
    assert_eq!(cfg.digests.image, None);
    assert!(cfg.policy.is_empty());
}

#[test]
fn key_file_is_read_relative_to_the_cluster_file() {
    let dir = std::env::temp_dir().join(format!("dmvx-sync-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("cluster.key"), format!("{KEY}\n")).unwrap();
    std::fs::write(dir.join("cluster.toml"), file("key_file = \"cluster.key\"", "")).unwrap();
    let cfg = ClusterConfig::load(&dir.join("cluster.toml")).unwrap();
    assert_eq!(cfg.key.to_hex(), KEY);
    std::fs::write(dir.join("short.toml"), file("key_file = \"missing.key\"", "")).unwrap();
    let e = ClusterConfig::load(&dir.join("short.toml")).unwrap_err().to_string();
    assert!(e.starts_with("cannot read key file"), "{e}");
    assert!(e.contains("missing.key"), "{e}");
    let e = ClusterConfig::load(&dir.join("absent.toml")).unwrap_err().to_string();
    assert!(e.starts_with("cannot read cluster file"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn key_errors() {
    assert_eq!(
        err(&file(&format!("key = \"{KEY}\"\nkey_file = \"k\""), "")),
        "[cluster] must give exactly one of `key` and `key_file`, not both"
    );
    assert!(err(&file("", "")).contains("gives neither `key` nor `key_file`"));
    let e = err(&file("key = \"abcd\"", ""));
    assert!(e.contains("not 64 hexadecimal characters") && e.contains("it has 4 characters"), "{e}");
    let bad = "zz".repeat(32);
    assert!(err(&file(&format!("key = \"{bad}\""), "")).contains("not 64 hexadecimal"));
}

#[test]
fn variant_errors() {
    let k = format!("key = \"{KEY}\"");
    let extra = |id: u32, role: &str| format!("[[variant]]\nid = {id}\naddress = \"127.0.0.1:1\"\nrole = \"{role}\"\n");
    assert_eq!(err(&file(&k, &extra(1, "follower"))), "variant id 1 is listed more than once");
    assert_eq!(err(&file(&k, &extra(16, "follower"))), "variant id 16 is out of range: ids must be below 16");
    assert_eq!(
        err(&file(&k, &extra(2, "leader"))),
        "the cluster has 2 leaders (variants [0, 2]): exactly one is allowed"
    );
    let no_leader =
        format!("[cluster]\nname = \"x\"\n{k}\n[[variant]]\nid = 1\naddress = \"h:1\"\nrole = \"follower\"\n");
    assert!(err(&no_leader).contains("the cluster has no leader"));
    let none = format!("[cluster]\nname = \"x\"\n{k}\n");
    assert_eq!(err(&none), "the cluster file lists no [[variant]]");
    let e = err(&file(&k, &extra(3, "observer")));
    assert!(e.contains("unknown variant") && e.contains("observer"), "{e}");
    let bad_addr = file(&k, "").replace("127.0.0.1:7701", "no-port");
    assert!(err(&bad_addr).contains("variant 1: address \"no-port\" is not of the form host:port"));
}

#[test]
fn unknown_fields_are_refused() {
    let k = format!("key = \"{KEY}\"");
    let e = err(&file(&format!("{k}\ntimeout = 5"), ""));
    assert!(e.contains("unknown field `timeout`"), "{e}");
    let e = err(&file(&k, "[digests]\nkernel = \"sha256:00\""));
    assert!(e.contains("unknown field `kernel`"), "{e}");
    let e = err(&(file(&k, "") + "[extras]\nx = 1\n"));
    assert!(e.contains("unknown field `extras`"), "{e}");
    let e = err(&file(&k, "").replace("role = \"leader\"", "role = \"leader\"\nport = 3"));
    assert!(e.contains("unknown field `port`"), "{e}");
    // Not TOML at all.
    assert!(err("[cluster").starts_with("cluster file is not valid"));
}

#[test]
fn value_errors() {
    let k = format!("key = \"{KEY}\"");
    assert_eq!(err(&file(&format!("{k}\ntimeout_ms = 0"), "")), "timeout_ms must be at least 1");
    assert!(err(&file(&format!("{k}\nbatch_bytes = 1"), "")).contains("batch_bytes must be between"));
    assert_eq!(err(&file(&format!("{k}\nmax_lag = 0"), "")), "max_lag must be at least 1");
    let e = err(&file(&k, "[digests]\nimage = \"md5:abc\""));
    assert!(e.contains("digest `image` = \"md5:abc\" is not of the form"), "{e}");
    let long = "n".repeat(200);
    let e = err(&file(&k, "").replace("name = \"demo\"", &format!("name = \"{long}\"")));
    assert!(e.contains("cluster name must be 1 to 128 bytes"), "{e}");
    let e = err(&file(&format!("{k}\ntimeout_ms = -1"), ""));
    assert!(e.starts_with("cluster file is not valid"), "{e}");
}

#[test]
fn local_default_cluster() {
    let key = ClusterKey::generate().unwrap();
    let cfg = ClusterConfig::local(3, 7700, key.clone()).unwrap();
    assert_eq!(cfg.key, key);
    assert_eq!(cfg.variants.len(), 3);
    assert_eq!(cfg.leader().address, "127.0.0.1:7700");
    assert_eq!(cfg.variant(2).unwrap().address, "127.0.0.1:7702");
    assert!(matches!(ClusterConfig::local(0, 7700, key.clone()), Err(ConfigError::BadLocal { .. })));
    assert!(ClusterConfig::local(17, 7700, key.clone()).is_err());
    assert!(ClusterConfig::local(2, u16::MAX, key).is_err());
}

#[test]
fn generated_keys_are_random_and_round_trip() {
    let a = ClusterKey::generate().unwrap();
    let b = ClusterKey::generate().unwrap();
    assert_ne!(a, b);
    assert_eq!(ClusterKey::from_hex(&a.to_hex()).unwrap(), a);
    assert_eq!(format!("{a:?}"), "ClusterKey(<redacted>)");
}

#[test]
fn policy_digest_ignores_order_and_formatting() {
    let k = format!("key = \"{KEY}\"");
    let a = parse(&file(
        &k,
        "[policy]\npreset = \"dmvx\"\nlag = 3\n[policy.calls]\nwrite = \"lockstep\"\nread = \"relaxed\"",
    ))
    .unwrap();
    let b = parse(&file(
        &k,
        "[policy]\nlag   =   3\npreset = 'dmvx'\ncalls = { read = \"relaxed\", write = \"lockstep\" }",
    ))
    .unwrap();
    let c = parse(&file(&k, "[policy]\npreset = \"strict\"\nlag = 3")).unwrap();
    assert_eq!(a.policy_digest(), b.policy_digest());
    assert_ne!(a.policy_digest(), c.policy_digest());
    assert!(a.policy_digest().to_string().starts_with("sha256:"));
}

#[test]
fn variants_may_name_their_own_program_builds() {
    let k = format!("key = \"{KEY}\"");
    let (a, b) = ("sha256:".to_string() + &"aa".repeat(32), "sha256:".to_string() + &"bb".repeat(32));
    let own = |text: &str, id: u32, d: &str| {
        text.replace(&format!("id = {id}\n"), &format!("id = {id}\nprogram = \"{d}\"\n"))
    };
    // Without per-variant programs: nothing changes.
    let plain = parse(&file(&k, "")).unwrap();
    assert_eq!(plain.programs_digest(), None);
    assert_eq!(plain.program_for(1), None);
    // Each variant its own build.
    let both = parse(&own(&own(&file(&k, ""), 0, &a), 1, &b)).unwrap();
    assert_eq!(both.program_for(0), Some(Digest::parse("x", &a).unwrap()));
    assert_eq!(both.program_for(1), Some(Digest::parse("x", &b).unwrap()));
    let table = both.programs_digest().expect("a table digest");
    // Every variant computes the same table digest; another table differs.
    assert_eq!(parse(&own(&own(&file(&k, ""), 0, &a), 1, &b)).unwrap().programs_digest(), Some(table));
    assert_ne!(parse(&own(&own(&file(&k, ""), 0, &b), 1, &a)).unwrap().programs_digest(), Some(table));
    // One variant's own build, the others the cluster-wide program.
    let mixed = parse(&own(&file(&k, &format!("[digests]\nprogram = \"{a}\"\n")), 1, &b)).unwrap();
    assert_eq!(mixed.program_for(0), Some(Digest::parse("x", &a).unwrap()));
    assert_eq!(mixed.program_for(1), Some(Digest::parse("x", &b).unwrap()));
    // A variant left unchecked while others are checked: refused.
    assert_eq!(
        err(&own(&file(&k, ""), 1, &b)),
        "variant 0 has no program digest, but other variants name their own (give it `program` or set [digests] program)"
    );
    assert!(err(&own(&file(&k, ""), 1, "sha256:12")).contains("digest `variant program`"));
}
