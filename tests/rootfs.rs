//! Root filesystems built from Debian packages by images/build-rootfs.sh:
//! reproducible, self-contained (every DT_NEEDED resolves inside the tree),
//! checked by images/verify-rootfs.sh, and with server configurations that
//! work natively (in a chroot) before any VM is involved.

use dmvx::*;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

const TRIPLET_DIRS: &[&str] = &["/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib", "/usr/lib"];

fn manifest_of(tree: &Path) -> PathBuf {
    PathBuf::from(format!("{}.manifest", tree.display()))
}

fn verify(tree: &Path, manifest: &Path) -> std::process::Output {
    let script = workspace().join("images/verify-rootfs.sh");
    run("/bin/bash", &[script.to_str().unwrap(), tree.to_str().unwrap(), manifest.to_str().unwrap()], b"")
}

/// A scratch copy of an image (cp -a keeps device nodes, owners, mtimes),
/// on the workspace's file system: /tmp may be mounted nodev.
fn copy_of(tree: &Path, name: &str) -> (TempDir, PathBuf) {
    let base = target_dir().join("rootfs-scratch");
    std::fs::create_dir_all(&base).unwrap();
    let dir = TempDir::new_in(&base, name);
    let copy = dir.join("root");
    let o = run("cp", &["-a", tree.to_str().unwrap(), copy.to_str().unwrap()], b"");
    assert_eq!(status(&o), 0, "cp -a: {}", stderr(&o));
    (dir, copy)
}

/// Follows `path` inside `root` the way a chroot would: absolute symlink
/// targets restart at `root`, never at the host's /.
fn resolve_in(root: &Path, path: &str) -> Option<PathBuf> {
    let mut todo: Vec<String> = path.split('/').rev().map(String::from).collect();
    let mut cur: Vec<String> = Vec::new();
    let mut hops = 0;
    while let Some(c) = todo.pop() {
        match c.as_str() {
            "" | "." => continue,
            ".." => {
                cur.pop();
                continue;
            }
            _ => {}
        }
        let mut next = cur.clone();
        next.push(c);
        let host = root.join(next.join("/"));
        let meta = std::fs::symlink_metadata(&host).ok()?;
        if meta.file_type().is_symlink() {
            hops += 1;
            if hops > 40 {
                return None;
            }
            let target = std::fs::read_link(&host).ok()?;
            let target = target.to_str()?;
            if target.starts_with('/') {
                cur.clear();
            }
            todo.extend(target.split('/').rev().map(String::from));
        } else {
            cur = next;
        }
    }
    Some(root.join(cur.join("/")))
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let t = e.file_type().unwrap();
        if t.is_dir() {
            walk(&e.path(), out);
        } else if t.is_file() {
            out.push(e.path());
        }
    }
}

fn is_elf(p: &Path) -> bool {
    let mut magic = [0u8; 4];
    std::fs::File::open(p).and_then(|mut f| f.read_exact(&mut magic)).is_ok() && magic == *b"\x7fELF"
}

/// Every ELF in the tree: its interpreter and every DT_NEEDED resolve to a
/// regular file inside the tree (readelf plus an in-root resolver), and the
/// tree's own dynamic loader, run in a chroot, finds them all.
fn check_closure(pkg: &str, main_binary: &str) {
    let tree = rootfs(pkg);
    let mut files = Vec::new();
    walk(&tree, &mut files);
    let elves: Vec<PathBuf> = files.into_iter().filter(|p| is_elf(p)).collect();
    let inside: Vec<String> = elves.iter().map(|p| format!("/{}", p.strip_prefix(&tree).unwrap().display())).collect();
    assert!(inside.iter().any(|p| p == main_binary), "{main_binary} is not an ELF file in {}", tree.display());
    let mut problems = Vec::new();
    let mut needed_count = 0;
    for (host, path) in elves.iter().zip(&inside) {
        let o = run("readelf", &["-dlW", host.to_str().unwrap()], b"");
        assert_eq!(status(&o), 0, "readelf {path}: {}", stderr(&o));
        let text = stdout(&o);
        let mut wants: Vec<(String, Vec<String>)> = Vec::new();
        for line in text.lines() {
            if let Some(i) = line.split("Requesting program interpreter: ").nth(1) {
                let i = i.trim_end_matches(']').to_string();
                wants.push((i.clone(), vec![i]));
            } else if line.contains("(NEEDED)") {
                let lib = line.split('[').nth(1).unwrap().trim_end_matches(']');
                needed_count += 1;
                let dirs = TRIPLET_DIRS.iter().map(|d| format!("{d}/{lib}")).collect();
                wants.push((lib.to_string(), dirs));
            } else if line.contains("(RUNPATH)") || line.contains("(RPATH)") {
                problems.push(format!("{path} has a RUNPATH/RPATH: {line}"));
            }
        }
        for (name, candidates) in wants {
            let found = candidates.iter().any(|c| {
                resolve_in(&tree, c)
                    .is_some_and(|p| std::fs::symlink_metadata(&p).is_ok_and(|m| m.file_type().is_file()))
            });
            if !found {
                problems.push(format!("{path}: {name} does not resolve inside the tree"));
            }
        }
        // The real loader, with the image's ld.so.cache.
        let o = run("chroot", &[tree.to_str().unwrap(), "/lib64/ld-linux-x86-64.so.2", "--list", path], b"");
        if status(&o) != 0 || stdout(&o).contains("not found") {
            problems.push(format!("{path}: ld.so --list in the chroot: {}{}", stdout(&o), stderr(&o)));
        }
    }
    assert!(needed_count >= 3, "only {needed_count} DT_NEEDED entries?");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn lighttpd_needed_libraries_resolve_inside_the_tree() {
    require_root!();
    check_closure("lighttpd", "/usr/sbin/lighttpd");
}

#[test]
fn nginx_needed_libraries_resolve_inside_the_tree() {
    require_root!();
    check_closure("nginx", "/usr/sbin/nginx");
}

#[test]
fn lighttpd_rootfs_builds_reproducibly() {
    require_root!();
    let tree = rootfs("lighttpd");
    let manifest = std::fs::read_to_string(manifest_of(&tree)).unwrap();
    // A second build from scratch, elsewhere, from the same packages.
    let base = target_dir().join("rootfs-scratch");
    std::fs::create_dir_all(&base).unwrap();
    let dir = TempDir::new_in(&base, "rebuild");
    let again = dir.join("rootfs-lighttpd");
    let script = workspace().join("images/build-rootfs.sh");
    let o = run("/bin/bash", &[script.to_str().unwrap(), "lighttpd", "--out", again.to_str().unwrap()], b"");
    assert_eq!(status(&o), 0, "{}{}", stdout(&o), stderr(&o));
    assert!(stderr(&o).contains("built "), "not built from scratch: {}", stderr(&o));
    let manifest2 = std::fs::read_to_string(manifest_of(&again)).unwrap();
    assert!(manifest == manifest2, "the two builds differ");
    // The digest is the sha256 of the manifest, printed and recorded.
    let digest = |t: &Path| {
        std::fs::read_to_string(format!("{}.manifest.sha256", t.display()))
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .to_string()
    };
    assert_eq!(digest(&tree), digest(&again));
    let o = run("sha256sum", &[manifest_of(&tree).to_str().unwrap()], b"");
    assert!(stdout(&o).starts_with(&digest(&tree)), "{}", stdout(&o));
    let o = verify(&again, &manifest_of(&tree));
    assert_eq!(status(&o), 0, "{}{}", stdout(&o), stderr(&o));

    // What the manifest says about the tree.
    let line = |path: &str| {
        manifest
            .lines()
            .find(|l| l.split(' ').next() == Some(path))
            .unwrap_or_else(|| panic!("{path} is not in the manifest"))
            .to_string()
    };
    assert!(line("/srv/www/4k.bin").contains(" f 0644 0:0 1704067200 4096 "));
    assert!(line("/srv/www/1m.bin").contains(" 1048576 "));
    assert!(line("/dev/null").ends_with(" c 0666 0:0 1704067200 - 1:3"));
    assert!(line("/dev/urandom").ends_with(" 1:9"));
    assert!(line("/tmp").contains(" d 1777 0:0 * "));
    assert!(line("/lib64").ends_with(" l 0777 0:0 1704067200 - usr/lib64"));
    line("/etc/ld.so.cache");
    line("/etc/localtime");
    line("/usr/sbin/lighttpd");
    line("/var/log/lighttpd");
    let mut paths: Vec<&str> = manifest.lines().skip(1).map(|l| l.split(' ').next().unwrap()).collect();
    assert!(
        !paths.iter().any(|p| p.starts_with("/usr/share/doc") || p.starts_with("/usr/share/man")),
        "docs or man pages in the image"
    );
    let before = paths.clone();
    paths.sort();
    assert_eq!(paths, before, "manifest not in sorted path order");
}

#[test]
fn verify_rootfs_detects_a_changed_byte() {
    require_root!();
    let tree = rootfs("lighttpd");
    let (_dir, copy) = copy_of(&tree, "verify");
    let o = verify(&copy, &manifest_of(&tree));
    assert_eq!(status(&o), 0, "an untouched copy must verify: {}", stderr(&o));
    assert!(stdout(&o).contains("OK"), "{}", stdout(&o));

    // One byte of the server binary, same size, same mtime: only the
    // content digest can tell.
    let victim = copy.join("usr/sbin/lighttpd");
    let mut bytes = std::fs::read(&victim).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    let mtime = std::fs::metadata(&victim).unwrap().modified().unwrap();
    let rewrite = |bytes: &[u8]| {
        std::fs::write(&victim, bytes).unwrap();
        std::fs::File::options().write(true).open(&victim).unwrap().set_modified(mtime).unwrap();
    };
    rewrite(&bytes);
    let o = verify(&copy, &manifest_of(&tree));
    assert_eq!(status(&o), 1, "{}{}", stdout(&o), stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("changed  /usr/sbin/lighttpd"), "{err}");
    assert_eq!(err.matches("changed ").count(), 1, "{err}");

    // Restored, it verifies again; a file that should not be there does not.
    bytes[mid] ^= 0x01;
    rewrite(&bytes);
    let o = verify(&copy, &manifest_of(&tree));
    assert_eq!(status(&o), 0, "{}", stderr(&o));
    std::fs::write(copy.join("srv/www/extra.html"), "x").unwrap();
    let o = verify(&copy, &manifest_of(&tree));
    assert_eq!(status(&o), 1, "{}{}", stdout(&o), stderr(&o));
    assert!(stderr(&o).contains("extra    /srv/www/extra.html"), "{}", stderr(&o));
}

/// A server started in a chroot.
fn chroot_server(root: &Path, argv: &[&str], env: &[(&str, String)], port: u16) -> Server {
    let mut cmd = Command::new("chroot");
    cmd.arg(root).args(argv).env_clear().env("PATH", GUEST_PATH);
    for (k, v) in env {
        cmd.env(k, v);
    }
    Server::start(cmd, port)
}

/// Fetches the static files with curl and compares them with the image's.
fn fetch_and_compare(port: u16, image: &Path, scratch: &Path) {
    for name in ["4k.bin", "1m.bin", "index.html"] {
        let got = scratch.join(format!("got-{name}"));
        let url = format!("http://127.0.0.1:{port}/{name}");
        let o = run("curl", &["-sSf", "--max-time", "20", "-o", got.to_str().unwrap(), &url], b"");
        assert_eq!(status(&o), 0, "curl {url}: {}", stderr(&o));
        let want = std::fs::read(image.join("srv/www").join(name)).unwrap();
        let have = std::fs::read(&got).unwrap();
        assert!(want == have, "{url}: {} bytes differ from the image's {} bytes", have.len(), want.len());
    }
    assert_eq!(std::fs::metadata(image.join("srv/www/4k.bin")).unwrap().len(), 4096);
    let o =
        run("curl", &["-s", "-o", "/dev/null", "-w", "%{http_code}", &format!("http://127.0.0.1:{port}/missing")], b"");
    assert_eq!(stdout(&o), "404");
}

#[test]
fn lighttpd_serves_the_image_in_a_chroot() {
    require_root!();
    let tree = rootfs("lighttpd");
    let (dir, copy) = copy_of(&tree, "lighttpd");
    let root = copy.to_str().unwrap();
    // The default configuration: 127.0.0.1:8080 (checked, not bound: the
    // port may be taken on this machine).
    let o = run("chroot", &[root, "/usr/sbin/lighttpd", "-p", "-f", "/etc/lighttpd/lighttpd.conf"], b"");
    assert_eq!(status(&o), 0, "{}", stderr(&o));
    let parsed = stdout(&o);
    let setting = |key: &str, value: &str| parsed.lines().any(|l| l.contains(key) && l.ends_with(value));
    assert!(setting("server.port", " 8080"), "{parsed}");
    assert!(setting("server.bind", "\"127.0.0.1\""), "{parsed}");
    // Address and port from the environment, on a free port.
    let port = free_port();
    let server = chroot_server(
        &copy,
        &["/usr/sbin/lighttpd", "-D", "-f", "/etc/lighttpd/lighttpd-env.conf"],
        &[("DMVX_HTTP_ADDR", "127.0.0.1".to_string()), ("DMVX_HTTP_PORT", port.to_string())],
        port,
    );
    fetch_and_compare(port, &tree, dir.path());
    let (_, _, err) = server.stop();
    assert!(err.contains("server started"), "{err}");
    // Running it changed nothing that the manifest checks.
    let o = verify(&copy, &manifest_of(&tree));
    assert_eq!(status(&o), 0, "{}", stderr(&o));
}

#[test]
fn nginx_serves_the_image_in_a_chroot() {
    require_root!();
    let tree = rootfs("nginx");
    let (dir, copy) = copy_of(&tree, "nginx");
    let root = copy.to_str().unwrap();
    let single = "daemon off; master_process off;";
    // The default configuration parses (and listens on 127.0.0.1:8080).
    let o = run("chroot", &[root, "/usr/sbin/nginx", "-t", "-g", single], b"");
    assert_eq!(status(&o), 0, "{}", stderr(&o));
    assert!(stderr(&o).contains("test is successful"), "{}", stderr(&o));
    let conf = std::fs::read_to_string(copy.join("etc/nginx/nginx.conf")).unwrap();
    assert!(conf.contains("listen 127.0.0.1:8080;"), "{conf}");
    // Another port: the documented override, a copy of nginx.conf with
    // another `listen`, in the writable /run.
    let port = free_port();
    let mine = conf.replace("listen 127.0.0.1:8080;", &format!("listen 127.0.0.1:{port};"));
    std::fs::write(copy.join("run/nginx-test.conf"), mine).unwrap();
    let server = chroot_server(&copy, &["/usr/sbin/nginx", "-c", "/run/nginx-test.conf", "-g", single], &[], port);
    assert!(copy.join("run/nginx.pid").exists());
    fetch_and_compare(port, &tree, dir.path());
    let (_, _, err) = server.stop();
    assert!(!err.contains("[emerg]") && !err.contains("[alert]"), "{err}");
    // nginx removed its pid file and left its temp dirs as they were.
    std::fs::remove_file(copy.join("run/nginx-test.conf")).unwrap();
    let o = verify(&copy, &manifest_of(&tree));
    assert_eq!(status(&o), 0, "{}", stderr(&o));
}
