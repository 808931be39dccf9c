//! Image verification: a variant reads image files locally instead of
//! receiving them from the leader, which is only sound if every variant's
//! image is identical. A root filesystem built by `images/build-rootfs.sh`
//! comes with `DIR.manifest` (one line per path: type, mode, owner, mtime,
//! size, content hash); its SHA-256 is the image digest a cluster file
//! names. Before joining, the VMM recomputes the manifest of its own tree
//! (the format of `images/rootfs.py`) and checks both against the digest.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::fs::File;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use dmvx_sync::Digest;
use sha2::{Digest as _, Sha256};

const HEADER: &str = "# dmvx-rootfs-manifest v1: path type mode uid:gid mtime size data";

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("the cluster file names an image digest, but no --rootfs was given to check it against")]
    NoRootfs,
    #[error("cannot read the image manifest {path}: {source}")]
    Manifest { path: PathBuf, source: std::io::Error },
    #[error("{path} is not a dmvx rootfs manifest (v1)")]
    NotManifest { path: PathBuf },
    #[error("the image manifest {path} has digest {got}, the cluster file says {want}")]
    Digest { path: PathBuf, got: Digest, want: Digest },
    #[error("cannot read {path} to verify the image: {source}")]
    Tree { path: PathBuf, source: std::io::Error },
    #[error("the image {root} does not match its manifest: {detail}")]
    Mismatch { root: PathBuf, detail: String },
}

/// The manifest of `root`: the manifest of `DIR` is `DIR.manifest`.
pub fn manifest_path(root: &Path) -> PathBuf {
    let mut p = root.as_os_str().to_owned();
    p.push(".manifest");
    PathBuf::from(p)
}

/// Checks that `root` is the image with digest `want`.
pub fn verify(root: &Path, want: Digest) -> Result<(), ImageError> {
    let path = manifest_path(root);
    let text = std::fs::read(&path).map_err(|source| ImageError::Manifest { path: path.clone(), source })?;
    let got = Digest::of(&text);
    if got != want {
        return Err(ImageError::Digest { path, got, want });
    }
    let text = String::from_utf8(text).map_err(|_| ImageError::NotManifest { path: path.clone() })?;
    if text.lines().next() != Some(HEADER) {
        return Err(ImageError::NotManifest { path });
    }
    let volatile: HashSet<String> = text
        .lines()
        .skip(1)
        .filter(|l| l.split(' ').nth(4) == Some("*"))
        .filter_map(|l| l.split(' ').next().map(str::to_string))
        .collect();
    let have = manifest(root, &volatile)?;
    if have == text {
        return Ok(());
    }
    let detail = first_difference(&text, &have);
    Err(ImageError::Mismatch { root: root.into(), detail })
}

fn first_difference(want: &str, have: &str) -> String {
    let by_path = |t: &str| -> Vec<(String, String)> {
        t.lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| (l.split(' ').next().unwrap_or("").to_string(), l.to_string()))
            .collect()
    };
    let (w, h) = (by_path(want), by_path(have));
    let hs: std::collections::HashMap<_, _> = h.iter().cloned().collect();
    let ws: std::collections::HashMap<_, _> = w.iter().cloned().collect();
    for (p, line) in &w {
        match hs.get(p) {
            None => return format!("{p} is missing"),
            Some(l) if l != line => return format!("{p} changed (want `{line}`, have `{l}`)"),
            _ => {}
        }
    }
    for (p, _) in &h {
        if !ws.contains_key(p) {
            return format!("{p} is not in the manifest");
        }
    }
    "the manifest text differs".into()
}

/// The manifest text of the tree at `root`; entries whose (escaped,
/// absolute) path is in `volatile` get mtime `*`.
pub fn manifest(root: &Path, volatile: &HashSet<String>) -> Result<String, ImageError> {
    let mut rels: Vec<Vec<u8>> = vec![Vec::new()];
    walk(root, &[], &mut rels)?;
    rels.sort();
    let mut out = String::with_capacity(rels.len() * 120);
    out.push_str(HEADER);
    out.push('\n');
    for rel in &rels {
        entry(root, rel, volatile, &mut out)?;
        out.push('\n');
    }
    Ok(out)
}

fn tree_err(path: &Path) -> impl FnOnce(std::io::Error) -> ImageError + '_ {
    move |source| ImageError::Tree { path: path.into(), source }
}

/// Collects every path below `root/prefix`, relative to `root`, without
/// following symbolic links.
fn walk(root: &Path, prefix: &[u8], out: &mut Vec<Vec<u8>>) -> Result<(), ImageError> {
    let dir = join(root, prefix);
    for e in std::fs::read_dir(&dir).map_err(tree_err(&dir))? {
        let e = e.map_err(tree_err(&dir))?;
        let mut rel = prefix.to_vec();
        if !rel.is_empty() {
            rel.push(b'/');
        }
        rel.extend_from_slice(e.file_name().as_bytes());
        let is_dir = e.file_type().map_err(tree_err(&dir))?.is_dir();
        out.push(rel.clone());
        if is_dir {
            walk(root, &rel, out)?;
        }
    }
    Ok(())
}

fn join(root: &Path, rel: &[u8]) -> PathBuf {
    if rel.is_empty() {
        root.into()
    } else {
        root.join(std::ffi::OsStr::from_bytes(rel))
    }
}

fn esc(out: &mut String, bytes: &[u8]) {
    for &b in bytes {
        if b.is_ascii_alphanumeric() || b"._+,@:=~/-".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
}

fn entry(root: &Path, rel: &[u8], volatile: &HashSet<String>, out: &mut String) -> Result<(), ImageError> {
    let path = join(root, rel);
    let st = std::fs::symlink_metadata(&path).map_err(tree_err(&path))?;
    let ft = st.file_type();
    let mut abs = vec![b'/'];
    abs.extend_from_slice(rel);
    let start = out.len();
    esc(out, &abs);
    let name = out[start..].to_string();
    let (kind, size, data) = if ft.is_file() {
        ("f", st.size().to_string(), file_hash(&path)?)
    } else if ft.is_dir() {
        ("d", "-".into(), "-".into())
    } else if ft.is_symlink() {
        let target = std::fs::read_link(&path).map_err(tree_err(&path))?;
        let mut t = String::new();
        esc(&mut t, target.as_os_str().as_bytes());
        ("l", "-".into(), t)
    } else if ft.is_char_device() || ft.is_block_device() {
        let rdev = st.rdev();
        let dev = format!("{}:{}", libc::major(rdev), libc::minor(rdev));
        (if ft.is_char_device() { "c" } else { "b" }, "-".into(), dev)
    } else if ft.is_fifo() {
        ("p", "-".into(), "-".into())
    } else {
        ("s", "-".into(), "-".into())
    };
    let mtime = if volatile.contains(&name) { "*".to_string() } else { st.mtime().to_string() };
    let _ = write!(out, " {kind} {:04o} {}:{} {mtime} {size} {data}", st.mode() & 0o7777, st.uid(), st.gid());
    Ok(())
}

fn file_hash(path: &Path) -> Result<String, ImageError> {
    let mut f = File::open(path).map_err(tree_err(path))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(tree_err(path))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    let mut s = String::with_capacity(64);
    for b in h.finalize() {
        let _ = write!(s, "{b:02x}");
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("dmvx-image-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("etc")).unwrap();
        std::fs::write(d.join("etc/a b"), b"hello").unwrap();
        std::os::unix::fs::symlink("etc", d.join("link")).unwrap();
        d
    }

    #[test]
    fn manifest_lines_and_escaping() {
        let d = tmp("lines");
        let m = manifest(&d, &HashSet::from(["/etc".to_string()])).unwrap();
        let lines: Vec<&str> = m.lines().collect();
        assert_eq!(lines[0], HEADER);
        assert!(lines[1].starts_with("/ d "), "{m}");
        assert!(lines[2].starts_with("/etc d ") && lines[2].contains(" * "), "{m}");
        assert!(lines[3].starts_with("/etc/a%20b f ") && lines[3].contains(" 5 2cf24dba5fb0a30e"), "{m}");
        assert!(lines[4].starts_with("/link l 0777 ") && lines[4].ends_with(" - etc"), "{m}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn verify_detects_changes() {
        let d = tmp("verify");
        let text = manifest(&d, &HashSet::new()).unwrap();
        std::fs::write(manifest_path(&d), &text).unwrap();
        let digest = Digest::of(text.as_bytes());
        verify(&d, digest).unwrap();
        assert!(matches!(verify(&d, Digest::of(b"other")), Err(ImageError::Digest { .. })));
        std::fs::write(d.join("etc/a b"), b"hellO").unwrap();
        let e = verify(&d, digest).unwrap_err().to_string();
        assert!(e.contains("/etc/a%20b changed"), "{e}");
        std::fs::remove_file(d.join("etc/a b")).unwrap();
        let e = verify(&d, digest).unwrap_err().to_string();
        assert!(e.contains("/etc/a%20b is missing"), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
        let _ = std::fs::remove_file(manifest_path(&d));
    }
}
