//! images/build-rootfs.sh on stale and partial package lists: the reported
//! failure, a package whose candidate is the installed version, which the
//! lists no longer carry (apt-cache show gave only its status record, and the
//! builder died with `KeyError: 'Filename'`); and a listed version that the
//! mirror no longer has, in a list whose Release file is lost. A private apt
//! configuration (its own lists, status file and cache; the host's sources)
//! sets the scene without touching the host's apt.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use dmvx::*;

/// Installed here only, in a version no list carries.
const INSTALLED_ONLY: &str = "libpcre2-8-0";
const INSTALLED_VERSION: &str = "99:1.0-dmvx.installed.only";
/// Listed in a version the mirror does not have.
const GONE: &str = "libxxhash0";
const GONE_SUFFIX: &str = "+dmvx.gone";

fn apt(conf: &Path, args: &[&str]) -> Output {
    let o = Command::new(args[0]).args(&args[1..]).env("APT_CONFIG", conf).output().expect("run apt");
    assert!(o.status.success(), "{args:?}: {}{}", stdout(&o), stderr(&o));
    o
}

/// The record of `pkg` in an uncompressed Packages list, with its version
/// (and file name) given `suffix`: a version the mirror does not have.
fn age_record(list: &str, pkg: &str, suffix: &str) -> Option<String> {
    let mut found = false;
    let paras: Vec<String> = list
        .split("\n\n")
        .map(|p| {
            if !p.starts_with(&format!("Package: {pkg}\n")) {
                return p.to_string();
            }
            found = true;
            let version = p.lines().find_map(|l| l.strip_prefix("Version: ")).expect("Version").to_string();
            let file_version = version.split_once(':').map_or(version.as_str(), |(_, v)| v).to_string();
            p.replace(&format!("Version: {version}\n"), &format!("Version: {version}{suffix}\n"))
                .replace(&format!("_{file_version}_"), &format!("_{file_version}{suffix}_"))
        })
        .collect();
    found.then(|| paras.join("\n\n"))
}

/// A private apt configuration in `dir` whose lists are the host's (after an
/// update if the host has none) with GONE's record aged, and whose status
/// file says INSTALLED_ONLY is installed in a version no list carries.
fn stale_apt(dir: &Path) -> PathBuf {
    let lists = dir.join("lists");
    std::fs::create_dir_all(lists.join("partial")).unwrap();
    std::fs::create_dir_all(dir.join("cache/archives/partial")).unwrap();
    let status = dir.join("status");
    std::fs::write(
        &status,
        format!(
            "Package: {INSTALLED_ONLY}\nStatus: install ok installed\nPriority: optional\nSection: libs\n\
             Maintainer: nobody\nArchitecture: amd64\nMulti-Arch: same\nVersion: {INSTALLED_VERSION}\n\
             Description: a copy installed here that no package list carries\n\n"
        ),
    )
    .unwrap();
    let conf = dir.join("apt.conf");
    std::fs::write(
        &conf,
        format!(
            "Dir::State::Lists \"{}/\";\nDir::State::status \"{}\";\nDir::Cache \"{}/\";\nAPT::Sandbox::User \"root\";\n",
            lists.display(),
            status.display(),
            dir.join("cache").display()
        ),
    )
    .unwrap();
    let host = Path::new("/var/lib/apt/lists");
    let mut copied = 0;
    for e in std::fs::read_dir(host).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if e.file_type().is_ok_and(|t| t.is_file()) && name.contains("_dists_") {
            std::fs::copy(e.path(), lists.join(&name)).unwrap();
            copied += 1;
        }
    }
    if copied == 0 {
        apt(&conf, &["apt-get", "update", "-q"]);
    }
    // Uncompress the list that has GONE and age its record.
    let helper = "/usr/lib/apt/apt-helper";
    let mut aged = false;
    for e in std::fs::read_dir(&lists).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.contains("_Packages") {
            continue;
        }
        let text = stdout(&apt(&conf, &[helper, "cat-file", e.path().to_str().unwrap()]));
        if let Some(new) = age_record(&text, GONE, GONE_SUFFIX) {
            std::fs::remove_file(e.path()).unwrap();
            let plain = name.rsplit_once("_Packages").map(|(base, _)| format!("{base}_Packages")).unwrap();
            std::fs::write(lists.join(plain), new).unwrap();
            // And the suite's Release file is lost (partial lists), so that
            // an update fetches the list again.
            let (site, rest) = name.split_once("_dists_").unwrap();
            let suite = rest.split('_').next().unwrap();
            for release in ["InRelease", "Release", "Release.gpg"] {
                let _ = std::fs::remove_file(lists.join(format!("{site}_dists_{suite}_{release}")));
            }
            aged = true;
        }
    }
    assert!(aged, "no package list carries {GONE}");
    conf
}

fn version_in(packages: &str, pkg: &str) -> String {
    packages
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{pkg} ")))
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or_else(|| panic!("{pkg} is not in:\n{packages}"))
        .to_string()
}

#[test]
fn an_image_builds_from_stale_package_lists() {
    require_root!();
    let base = target_dir().join("rootfs-scratch");
    std::fs::create_dir_all(&base).unwrap();
    let dir = TempDir::new_in(&base, "stale-lists");
    let conf = stale_apt(&dir.join("apt"));
    // The scene: apt's candidate is the installed-only copy, which has no
    // .deb (its record has no Filename); and GONE's listed version.
    let policy = stdout(&apt(&conf, &["apt-cache", "policy", INSTALLED_ONLY, GONE]));
    assert!(policy.contains(&format!("Candidate: {INSTALLED_VERSION}")), "{policy}");
    assert!(policy.contains(GONE_SUFFIX), "{policy}");
    let show = stdout(&apt(&conf, &["apt-cache", "show", "--no-all-versions", INSTALLED_ONLY]));
    assert!(!show.contains("Filename:"), "{show}");

    let out = dir.join("rootfs-lighttpd");
    let o = Command::new("/bin/bash")
        .arg(workspace().join("images/build-rootfs.sh"))
        .args(["lighttpd", "--out", out.to_str().unwrap()])
        .env("APT_CONFIG", &conf)
        .output()
        .expect("run images/build-rootfs.sh");
    let log = format!("{}{}", stdout(&o), stderr(&o));
    assert_eq!(status(&o), 0, "{log}");
    assert!(!log.contains("Traceback"), "{log}");
    // GONE could not be downloaded: the lists were updated, and every
    // package gathered again from the updated lists.
    assert!(log.contains("build-rootfs: apt-get update"), "{log}");
    assert!(log.contains("gathering the packages again"), "{log}");
    let packages = std::fs::read_to_string(format!("{}.packages", out.display())).unwrap();
    let pcre = version_in(&packages, INSTALLED_ONLY);
    assert_ne!(pcre, INSTALLED_VERSION, "{packages}");
    assert!(!version_in(&packages, GONE).contains(GONE_SUFFIX), "{packages}");
    let manifest = format!("{}.manifest", out.display());
    let o = run(
        "/bin/bash",
        &[workspace().join("images/verify-rootfs.sh").to_str().unwrap(), out.to_str().unwrap(), &manifest],
        b"",
    );
    assert_eq!(status(&o), 0, "{}{}", stdout(&o), stderr(&o));
    // Built from the same versions as the image the host's lists give, it is
    // that image, byte for byte.
    let host = rootfs("lighttpd");
    let host_packages = std::fs::read_to_string(format!("{}.packages", host.display())).unwrap();
    if host_packages == packages {
        let digest = |t: &Path| std::fs::read_to_string(format!("{}.manifest.sha256", t.display())).unwrap();
        assert_eq!(digest(&out).split(' ').next(), digest(&host).split(' ').next());
    } else {
        shout("an_image_builds_from_stale_package_lists: the host's lists are older than the updated private ones; digests not compared");
    }
}
