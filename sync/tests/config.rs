//! The cluster file: what parses, and what is refused with which message.

use std::path::Path;

use dmvx_sync::config::{ConfigError, DEFAULT_TIMEOUT_MS};
use dmvx_sync::{ClusterConfig, Digest, PrivateKey, PublicKey, Role};

const IMAGE: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";

/// Variant `id`'s public key, as hex.
fn pk(id: u8) -> String {
    PrivateKey::from_bytes([0x30 + id; 32]).public().to_hex()
}

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
public_key = "{}"
[[variant]]
id = 1
address = "127.0.0.1:7701"
role = "follower"
public_key = "{}"
{rest}
"#,
        pk(0),
        pk(1)
    )
}

fn parse(text: &str) -> Result<ClusterConfig, ConfigError> {
    ClusterConfig::parse(text, Path::new("/nonexistent"))
}

fn err(text: &str) -> String {
    parse(text).unwrap_err().to_string()
}

/// One more `[[variant]]` entry.
fn extra(id: u32, role: &str) -> String {
    format!("[[variant]]\nid = {id}\naddress = \"127.0.0.1:1\"\nrole = \"{role}\"\npublic_key = \"{}\"\n", pk(id as u8))
}

#[test]
fn the_example_file_parses() {
    let text = format!(
        r#"
[cluster]
name = "demo"
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
public_key = "{}"
[[variant]]
id = 0
address = "leader.example:7700"
role = "leader"
public_key = "{}"
private_key_file = "keys/demo-0.key"
"#,
        pk(2),
        pk(0)
    );
    let cfg = ClusterConfig::parse(&text, Path::new("/etc/dmvx")).unwrap();
    assert_eq!(cfg.name, "demo");
    assert_eq!(cfg.variant(0).unwrap().public_key.to_hex(), pk(0));
    assert_eq!(cfg.variant(2).unwrap().public_key.to_hex(), pk(2));
    // Relative to the cluster file's directory.
    assert_eq!(cfg.variant(0).unwrap().private_key_file.as_deref(), Some(Path::new("/etc/dmvx/keys/demo-0.key")));
    assert_eq!(cfg.variant(2).unwrap().private_key_file, None);
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
}

#[test]
fn defaults_apply() {
    let cfg = parse(&file("", "")).unwrap();
    assert_eq!(cfg.timeout.as_millis() as u64, DEFAULT_TIMEOUT_MS);
    assert_eq!(cfg.batch_bytes, 8192);
    assert_eq!(cfg.max_lag, 4096);
    assert_eq!(cfg.digests.image, None);
    assert!(cfg.policy.is_empty());
}

#[test]
fn a_shared_cluster_key_is_refused_saying_what_replaced_it() {
    for line in ["key = \"00\"", "key_file = \"cluster.key\""] {
        let e = err(&file(line, ""));
        assert!(e.contains("no longer share a key"), "{e}");
        assert!(e.contains("public_key") && e.contains("dmvx-vmm keygen"), "{e}");
    }
    let e = ClusterConfig::load(Path::new("/nonexistent/absent.toml")).unwrap_err().to_string();
    assert!(e.starts_with("cannot read cluster file"), "{e}");
}

#[test]
fn public_key_errors() {
    let e = err(&file("", "").replacen(&pk(1), "abcd", 1));
    assert!(e.starts_with("variant 1: `public_key`: the public key is not 64 hexadecimal"), "{e}");
    assert!(e.contains("it has 4 characters"), "{e}");
    let e = err(&file("", "").replacen(&pk(1), &"zz".repeat(32), 1));
    assert!(e.contains("not 64 hexadecimal"), "{e}");
    let e = err(&file("", "").replacen(&pk(1), &"00".repeat(32), 1));
    assert!(e.contains("low order"), "{e}");
    let e = err(&file("", "").replacen(&pk(1), &pk(0), 1));
    assert_eq!(e, "variants 0 and 1 list the same public key: every variant needs a key pair of its own");
    let e = err(&file("", "").replacen(&format!("public_key = \"{}\"", pk(1)), "", 1));
    assert!(e.contains("missing field `public_key`"), "{e}");
}

#[test]
fn variant_errors() {
    let k = "";
    assert_eq!(err(&file(k, &extra(1, "follower"))), "variant id 1 is listed more than once");
    assert_eq!(err(&file(k, &extra(16, "follower"))), "variant id 16 is out of range: ids must be below 16");
    assert_eq!(
        err(&file(k, &extra(2, "leader"))),
        "the cluster has 2 leaders (variants [0, 2]): exactly one is allowed"
    );
    let no_leader = format!("[cluster]\nname = \"x\"\n{}", extra(1, "follower"));
    assert!(err(&no_leader).contains("the cluster has no leader"));
    let none = "[cluster]\nname = \"x\"\n".to_string();
    assert_eq!(err(&none), "the cluster file lists no [[variant]]");
    let e = err(&file(k, &extra(3, "observer")));
    assert!(e.contains("unknown variant") && e.contains("observer"), "{e}");
    let bad_addr = file(k, "").replace("127.0.0.1:7701", "no-port");
    assert!(err(&bad_addr).contains("variant 1: address \"no-port\" is not of the form host:port"));
}

#[test]
fn variants_may_be_named() {
    let k = "";
    let named = |a: &str, b: &str| {
        file(k, "")
            .replace("id = 0\n", &format!("id = 0\nname = \"{a}\"\n"))
            .replace("id = 1\n", &format!("id = 1\nname = \"{b}\"\n"))
    };
    let cfg = parse(&named("eu-west.a", "b_2")).unwrap();
    assert_eq!(cfg.variant_named("eu-west.a").unwrap().id, 0);
    assert_eq!(cfg.variant_named("b_2").unwrap().id, 1);
    assert_eq!(cfg.variant(1).unwrap().name.as_deref(), Some("b_2"));
    assert_eq!(cfg.variant_named("c").unwrap_err().to_string(), "no variant is named \"c\" in the cluster file");
    // Unnamed variants stay unnamed.
    assert_eq!(parse(&file(k, "")).unwrap().variant(0).unwrap().name, None);
    assert_eq!(err(&named("a", "a")), "variant name \"a\" is given to more than one variant");
    let e = err(&named("a", "12"));
    assert!(e.contains("variant 1: name \"12\" is not valid") && e.contains("not all digits"), "{e}");
    assert!(err(&named("a b", "c")).contains("only letters, digits"));
    assert!(err(&named("", "c")).contains("1 to 64 characters"));
    assert!(err(&named(&"x".repeat(65), "c")).contains("1 to 64 characters"));
}

#[test]
fn unknown_fields_are_refused() {
    let k = "";
    let e = err(&file(&format!("{k}\ntimeout = 5"), ""));
    assert!(e.contains("unknown field `timeout`"), "{e}");
    let e = err(&file(k, "[digests]\nkernel = \"sha256:00\""));
    assert!(e.contains("unknown field `kernel`"), "{e}");
    let e = err(&(file(k, "") + "[extras]\nx = 1\n"));
    assert!(e.contains("unknown field `extras`"), "{e}");
    let e = err(&file(k, "").replace("role = \"leader\"", "role = \"leader\"\nport = 3"));
    assert!(e.contains("unknown field `port`"), "{e}");
    // Not TOML at all.
    assert!(err("[cluster").starts_with("cluster file is not valid"));
}

#[test]
fn value_errors() {
    let k = "";
    assert_eq!(err(&file(&format!("{k}\ntimeout_ms = 0"), "")), "timeout_ms must be at least 1");
    assert!(err(&file(&format!("{k}\nbatch_bytes = 1"), "")).contains("batch_bytes must be between"));
    assert_eq!(err(&file(&format!("{k}\nmax_lag = 0"), "")), "max_lag must be at least 1");
    let e = err(&file(k, "[digests]\nimage = \"md5:abc\""));
    assert!(e.contains("digest `image` = \"md5:abc\" is not of the form"), "{e}");
    let long = "n".repeat(200);
    let e = err(&file(k, "").replace("name = \"demo\"", &format!("name = \"{long}\"")));
    assert!(e.contains("cluster name must be 1 to 128 bytes"), "{e}");
    let e = err(&file(&format!("{k}\ntimeout_ms = -1"), ""));
    assert!(e.starts_with("cluster file is not valid"), "{e}");
}

#[test]
fn local_default_cluster() {
    let keys: Vec<PublicKey> = (0..3).map(|_| PrivateKey::generate().unwrap().public()).collect();
    let cfg = ClusterConfig::local(7700, &keys).unwrap();
    assert_eq!(cfg.variants.len(), 3);
    assert_eq!(cfg.leader().address, "127.0.0.1:7700");
    assert_eq!(cfg.variant(2).unwrap().address, "127.0.0.1:7702");
    assert_eq!(cfg.variant(2).unwrap().public_key, keys[2]);
    assert!(matches!(ClusterConfig::local(7700, &[]), Err(ConfigError::BadLocal { .. })));
    assert!(ClusterConfig::local(7700, &vec![keys[0]; 17]).is_err());
    assert!(ClusterConfig::local(u16::MAX, &keys[..2]).is_err());
    assert!(matches!(ClusterConfig::local(7700, &[keys[0], keys[0]]), Err(ConfigError::DuplicateKey(0, 1))));
}

#[test]
fn generated_keys_are_random_and_redacted() {
    let a = PrivateKey::generate().unwrap();
    let b = PrivateKey::generate().unwrap();
    assert_ne!(a, b);
    assert_ne!(a.public(), b.public());
    assert_eq!(PublicKey::parse_hex(&a.public().to_hex(), "x").unwrap(), a.public());
    assert_eq!(format!("{a:?}"), "PrivateKey(<redacted>)");
}

#[test]
fn policy_digest_ignores_order_and_formatting() {
    let k = "";
    let a = parse(&file(
        k,
        "[policy]\npreset = \"dmvx\"\nlag = 3\n[policy.calls]\nwrite = \"lockstep\"\nread = \"relaxed\"",
    ))
    .unwrap();
    let b =
        parse(&file(k, "[policy]\nlag   =   3\npreset = 'dmvx'\ncalls = { read = \"relaxed\", write = \"lockstep\" }"))
            .unwrap();
    let c = parse(&file(k, "[policy]\npreset = \"strict\"\nlag = 3")).unwrap();
    assert_eq!(a.policy_digest(), b.policy_digest());
    assert_ne!(a.policy_digest(), c.policy_digest());
    assert!(a.policy_digest().to_string().starts_with("sha256:"));
}

#[test]
fn variants_may_name_their_own_program_builds() {
    let k = String::new();
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
