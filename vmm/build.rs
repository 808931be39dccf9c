//! Builds the guest kernel (guest/kernel, a freestanding no_std ELF with its
//! own profile and rustflags) and hands its path to the VMM, which embeds it.
use std::path::PathBuf;
use std::process::Command;

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let guest = manifest.join("../guest/kernel");
    let abi = manifest.join("../guest/abi");
    for p in [
        guest.join("src"),
        guest.join("link.ld"),
        guest.join("build.rs"),
        guest.join("Cargo.toml"),
        guest.join(".cargo/config.toml"),
        abi.join("src"),
    ] {
        println!("cargo:rerun-if-changed={}", p.display());
    }
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("set by cargo"));
    let target_dir = out.join("guest-target");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    // The outer build's flags are for the host VMM, not the guest: drop them so
    // guest/kernel/.cargo/config.toml decides.
    for (key, _) in std::env::vars() {
        if key.starts_with("CARGO_") && key != "CARGO_HOME"
            || key == "RUSTFLAGS"
            || key == "RUSTC_WRAPPER"
            || key == "RUSTC_WORKSPACE_WRAPPER"
        {
            cmd.env_remove(key);
        }
    }
    let status = cmd
        .current_dir(&guest)
        .args(["build", "--release", "--locked", "--target-dir"])
        .arg(&target_dir)
        .status()
        .expect("failed to run cargo for the guest kernel");
    assert!(status.success(), "building the guest kernel (guest/kernel) failed");
    let image = target_dir.join("x86_64-unknown-linux-gnu/release/dmvx-guest");
    assert!(image.exists(), "guest kernel image missing at {}", image.display());
    println!("cargo:rustc-env=DMVX_GUEST_KERNEL={}", image.display());
}
