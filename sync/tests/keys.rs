//! Private key files: what `write_key_pair` writes loads back as the same
//! pair; a file others may read or write, or that another user owns, is
//! refused naming the file and the fix.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use dmvx_sync::{KeyError, PrivateKey, PublicKey};

struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let p = std::env::temp_dir().join(format!("dmvx-sync-keys-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Dir(p)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn a_written_key_pair_round_trips() {
    let d = Dir::new("round-trip");
    let path = d.0.join("v0.key");
    let key = PrivateKey::generate().unwrap();
    key.write_key_pair(&path, false).unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777, 0o600);
    let back = PrivateKey::load(&path).unwrap();
    assert_eq!(back, key);
    let public = std::fs::read_to_string(d.0.join("v0.key.pub")).unwrap();
    assert_eq!(PublicKey::parse_hex(&public, "v0.key.pub").unwrap(), key.public());
    // Not replaced unless asked to; replaced when asked.
    let other = PrivateKey::generate().unwrap();
    assert!(matches!(other.write_key_pair(&path, false), Err(KeyError::Exists(_))));
    assert_eq!(PrivateKey::load(&path).unwrap(), key);
    other.write_key_pair(&path, true).unwrap();
    assert_eq!(PrivateKey::load(&path).unwrap(), other);
    // Never through a symlink.
    let link = d.0.join("link.key");
    std::os::unix::fs::symlink(d.0.join("elsewhere"), &link).unwrap();
    assert!(key.write_key_pair(&link, false).is_err());
    assert!(!d.0.join("elsewhere").exists());
}

#[test]
fn loose_or_foreign_key_files_are_refused() {
    let d = Dir::new("loose");
    let path = d.0.join("v1.key");
    PrivateKey::generate().unwrap().write_key_pair(&path, false).unwrap();
    for mode in [0o640, 0o604, 0o620, 0o602, 0o644] {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        let e = PrivateKey::load(&path).unwrap_err();
        assert!(matches!(e, KeyError::Mode { .. }), "{mode:o}: {e}");
        let text = e.to_string();
        assert!(text.starts_with(path.to_str().unwrap()), "{text}");
        assert!(text.contains(&format!("mode {mode:04o}")) && text.contains("chmod 600"), "{text}");
    }
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
    assert!(PrivateKey::load(&path).is_ok(), "0400 is private too");
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if euid == 0 {
        std::os::unix::fs::chown(&path, Some(4242), None).unwrap();
        let e = PrivateKey::load(&path).unwrap_err();
        assert!(matches!(e, KeyError::Owner { owner: 4242, euid: 0, .. }), "{e}");
    }
    let e = PrivateKey::load(&d.0.join("missing.key")).unwrap_err().to_string();
    assert!(e.contains("missing.key") && e.contains("cannot read the private key"), "{e}");
}
