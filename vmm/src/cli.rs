//! Command-line parsing for `dmvx-vmm`.

use std::path::PathBuf;

/// Parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Args {
    pub kernel: Option<PathBuf>,
    pub memory: u64,
    pub rootfs: Option<PathBuf>,
    pub read_only: bool,
    pub env: Vec<String>,
    pub cwd: String,
    pub variant: u32,
    /// Seed of the address-space layout (`--layout-seed`); `None`: from the host.
    pub layout_seed: Option<u64>,
    /// The variant's fixed layout, no randomisation (`--fixed-layout`).
    pub fixed_layout: bool,
    /// `--variant-program ID=PATH`: variant ID runs PATH instead of PROGRAM.
    pub variant_programs: Vec<(u32, String)>,
    /// Join the cluster described by this file as variant `variant`.
    pub cluster: Option<PathBuf>,
    /// Run this many variants here (the embedded local cluster).
    pub variants: u32,
    /// Policy of a local cluster: `strict`, `dmvx` or a TOML file.
    pub policy: Option<String>,
    /// Where divergence reports are written.
    pub report_dir: PathBuf,
    pub stats: bool,
    pub trace: bool,
    /// Linux mode: initrd, kernel command line, time limit.
    pub initrd: Option<PathBuf>,
    pub cmdline: Option<String>,
    pub timeout: Option<std::time::Duration>,
    pub command: Command,
}

/// What to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Run PROGRAM with ARGS (argv[0] = PROGRAM).
    Run {
        program: String,
        args: Vec<String>,
    },
    /// Linux mode: boot the Linux kernel given with --kernel.
    Linux,
    /// Print the syscall table as markdown.
    SyscallTable,
    /// Print the policy presets as markdown.
    PolicyTable,
    /// Time N bare exits of a guest at CPL 0 or 3.
    BenchExitLoop {
        n: u64,
        cpl: u8,
    },
    Help,
    Version,
}

/// A usage error.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct UsageError(pub String);

/// The kernel command line of Linux mode when `--cmdline` is not given.
/// The console must be the same in every variant of a boot: no timestamps,
/// and no kvm-clock, which prints the (timing-dependent) offset it starts at.
macro_rules! default_cmdline {
    () => {
        "console=ttyS0 earlyprintk=serial,ttyS0,115200 reboot=k panic=1 printk.time=0 pci=off no-kvmclock"
    };
}
pub const DEFAULT_CMDLINE: &str = default_cmdline!();

pub const USAGE: &str = concat!(
    "\
usage: dmvx-vmm [OPTIONS] [--] PROGRAM [ARGS...]          (process mode)
       dmvx-vmm --kernel LINUX [--initrd FILE] [--cmdline STR]
                [--memory SIZE] [--timeout SECONDS]        (Linux mode)

Process mode runs an unmodified Linux x86-64 program in a KVM microVM whose
every system call and fault is handled by this VMM. Linux mode (--kernel
without a PROGRAM) boots an unmodified Linux kernel, a bzImage (boot
protocol 2.12+) or an ELF vmlinux with a PVH entry, with its serial console
(COM1, ttyS0) on stdout.

options:
  --kernel PATH      process mode: the dmvx guest kernel (default: embedded);
                     Linux mode: a Linux bzImage or PVH vmlinux
  --memory SIZE      guest memory, e.g. 256M or 1G (default 256M)
  --rootfs DIR       the program's root directory, writable
                     (default: the host's /, read-only)
  --read-only        make --rootfs read-only
  --env K=V          add K=V to the program's environment (repeatable)
  --cwd DIR          working directory inside the root (default /)
  --variants N       run N variants of the program on this machine (N VMM
                     processes joined over loopback TCP, the same protocol
                     as across hosts); only the leader's outputs leave
  --policy P         policy of --variants: strict, dmvx (default) or a TOML
                     file with a [policy] table (see docs/policy.md)
  --cluster FILE     join the cluster described by FILE as variant --variant
  --variant ID       this variant's id in the cluster; also selects its
                     disjoint address-space layout (0-15)
  --layout-seed SEED draw the layout from SEED (decimal or 0x-hex) instead of
                     the host's random generator, to reproduce a run's
                     layout (reports record each variant's seed)
  --variant-program ID=PATH
                     variant ID runs the program file PATH instead of
                     PROGRAM (another build of it: N-version variants;
                     argv[0] stays PROGRAM); repeatable. With --variants N
                     the cluster file gets every variant's program digest
  --fixed-layout     no layout randomisation: every base at the bottom of
                     the variant's range (debugging; weaker, like setarch -R)
  --report-dir DIR   where divergence reports are written (default .)
  --stats            print exit, system call and timing statistics at the end
  --trace            print every system call and its result (strace-like)
  --syscall-table    print what dmvx does with each system call (markdown)
  --policy-table     print the call classes and the presets' rules (markdown)
  --bench-exit-loop N
                     time N exits of a guest that only exits (the floor of
                     the syscall path); --bench-cpl 0|3 picks its privilege
  --initrd FILE      Linux mode: the initial ramdisk
  --cmdline STR      Linux mode: the kernel command line (default:
                     \"",
    default_cmdline!(),
    "\")
  --timeout SECONDS  Linux mode: stop the guest after this long
  -h, --help         this text
  -V, --version      the version

PROGRAM without a slash is looked up in /usr/local/sbin:/usr/local/bin:
/usr/sbin:/usr/bin:/sbin:/bin inside the root. The program's environment is
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin plus --env.

exit status, process mode: the program's, or 128+N if signal N killed it;
121 if the variants diverged (a report is written to --report-dir);
125 if the VMM itself failed, 126 if the program cannot be executed, 127 if
it is not found, 2 for a usage error.
exit status, Linux mode: 0 the guest powered off (ACPI S5, e.g. poweroff -f),
10 it reset the machine (i8042 reset, e.g. reboot with reboot=k, or a panic
with panic=N), 11 it triple-faulted, 12 the --timeout passed, 13 the host's
KVM could not emulate a guest instruction and stopped it; 125 if the kernel
or initrd cannot be booted (with the reason) or the VMM failed, 2 for a
usage error."
);

/// Parses a size like 256M, 1G, 1048576, 64K.
pub fn parse_size(s: &str) -> Result<u64, UsageError> {
    let bad = || UsageError(format!("invalid size '{s}': use a number with an optional K, M or G suffix"));
    let (num, mult) = match s.as_bytes().last().map(|c| c.to_ascii_uppercase()) {
        Some(b'K') => (&s[..s.len() - 1], 1u64 << 10),
        Some(b'M') => (&s[..s.len() - 1], 1 << 20),
        Some(b'G') => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    num.parse::<u64>().ok().and_then(|n| n.checked_mul(mult)).ok_or_else(bad)
}

/// Parses `args` (without argv[0]).
pub fn parse<I: IntoIterator<Item = String>>(args: I) -> Result<Args, UsageError> {
    let mut it = args.into_iter();
    let mut a = Args {
        kernel: None,
        memory: 256 << 20,
        rootfs: None,
        read_only: false,
        env: Vec::new(),
        cwd: "/".into(),
        variant: 0,
        layout_seed: None,
        fixed_layout: false,
        variant_programs: Vec::new(),
        cluster: None,
        variants: 1,
        policy: None,
        report_dir: PathBuf::from("."),
        stats: false,
        trace: false,
        initrd: None,
        cmdline: None,
        timeout: None,
        command: Command::Help,
    };
    let mut rest: Vec<String> = Vec::new();
    let mut table = false;
    let mut policy_table = false;
    let mut bench: Option<u64> = None;
    let mut bench_cpl = 3u8;
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| UsageError(format!("{name} needs a value")));
        match arg.as_str() {
            "--" => {
                rest.extend(it.by_ref());
                break;
            }
            "-h" | "--help" => return Ok(Args { command: Command::Help, ..a }),
            "-V" | "--version" => return Ok(Args { command: Command::Version, ..a }),
            "--kernel" => a.kernel = Some(PathBuf::from(value("--kernel")?)),
            "--memory" => a.memory = parse_size(&value("--memory")?)?,
            "--rootfs" => a.rootfs = Some(PathBuf::from(value("--rootfs")?)),
            "--read-only" => a.read_only = true,
            "--env" => {
                let kv = value("--env")?;
                if !kv.contains('=') || kv.starts_with('=') {
                    return Err(UsageError(format!("--env expects K=V, got '{kv}'")));
                }
                a.env.push(kv);
            }
            "--cwd" => a.cwd = value("--cwd")?,
            "--variant" => {
                let v = value("--variant")?;
                a.variant =
                    v.parse().ok().filter(|&n: &u32| n < crate::kernel::layout::MAX_VARIANTS).ok_or_else(|| {
                        UsageError(format!(
                            "--variant must be 0-{}, got '{v}'",
                            crate::kernel::layout::MAX_VARIANTS - 1
                        ))
                    })?;
            }
            "--layout-seed" => {
                let v = value("--layout-seed")?;
                a.layout_seed = Some(crate::kernel::layout::parse_seed(&v).ok_or_else(|| {
                    UsageError(format!("--layout-seed needs a 64-bit number (decimal or 0x-hex), got '{v}'"))
                })?);
            }
            "--fixed-layout" => a.fixed_layout = true,
            "--variant-program" => {
                let v = value("--variant-program")?;
                let parsed = v.split_once('=').and_then(|(id, path)| {
                    let id = id.parse::<u32>().ok().filter(|&i| i < crate::kernel::layout::MAX_VARIANTS)?;
                    (!path.is_empty()).then(|| (id, path.to_string()))
                });
                let (id, path) = parsed
                    .ok_or_else(|| UsageError(format!("--variant-program expects ID=PATH with ID 0-15, got '{v}'")))?;
                a.variant_programs.retain(|(i, _)| *i != id);
                a.variant_programs.push((id, path));
            }
            "--cluster" => a.cluster = Some(PathBuf::from(value("--cluster")?)),
            "--variants" => {
                let v = value("--variants")?;
                a.variants = v
                    .parse()
                    .ok()
                    .filter(|n: &u32| (1..=crate::kernel::layout::MAX_VARIANTS).contains(n))
                    .ok_or_else(|| {
                        UsageError(format!("--variants must be 1-{}, got '{v}'", crate::kernel::layout::MAX_VARIANTS))
                    })?;
            }
            "--policy" => a.policy = Some(value("--policy")?),
            "--report-dir" => a.report_dir = PathBuf::from(value("--report-dir")?),
            "--initrd" => a.initrd = Some(PathBuf::from(value("--initrd")?)),
            "--cmdline" => a.cmdline = Some(value("--cmdline")?),
            "--timeout" => {
                let v = value("--timeout")?;
                let secs =
                    v.parse::<f64>().ok().filter(|s| s.is_finite() && *s > 0.0 && *s < 1e9).ok_or_else(|| {
                        UsageError(format!("--timeout needs a positive number of seconds, got '{v}'"))
                    })?;
                a.timeout = Some(std::time::Duration::from_secs_f64(secs));
            }
            "--stats" => a.stats = true,
            "--trace" => a.trace = true,
            "--syscall-table" => table = true,
            "--policy-table" => policy_table = true,
            "--bench-exit-loop" => {
                let v = value("--bench-exit-loop")?;
                bench = Some(
                    v.parse()
                        .ok()
                        .filter(|&n| n > 0)
                        .ok_or_else(|| UsageError(format!("--bench-exit-loop needs a positive count, got '{v}'")))?,
                );
            }
            "--bench-cpl" => {
                let v = value("--bench-cpl")?;
                bench_cpl = match v.as_str() {
                    "0" => 0,
                    "3" => 3,
                    _ => return Err(UsageError(format!("--bench-cpl must be 0 or 3, got '{v}'"))),
                };
            }
            s if s.starts_with('-') && rest.is_empty() => {
                return Err(UsageError(format!("unknown option '{s}' (see --help)")))
            }
            _ => {
                rest.push(arg);
                rest.extend(it.by_ref());
                break;
            }
        }
    }
    a.command = if let Some(n) = bench {
        Command::BenchExitLoop { n, cpl: bench_cpl }
    } else if table {
        Command::SyscallTable
    } else if policy_table {
        Command::PolicyTable
    } else if let Some((program, args)) = rest.split_first() {
        let linux_only =
            [("--initrd", a.initrd.is_some()), ("--cmdline", a.cmdline.is_some()), ("--timeout", a.timeout.is_some())];
        if let Some((name, _)) = linux_only.iter().find(|(_, given)| *given) {
            return Err(UsageError(format!(
                "{name} is a Linux-mode option, but a PROGRAM was given (process mode); Linux mode is --kernel without a PROGRAM"
            )));
        }
        Command::Run { program: program.clone(), args: args.to_vec() }
    } else if a.kernel.is_some() {
        Command::Linux
    } else {
        return Err(UsageError("no program given, and no --kernel to boot (see --help)".into()));
    };
    Ok(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &[&str]) -> Result<Args, UsageError> {
        parse(s.iter().map(|s| s.to_string()))
    }

    #[test]
    fn parses_options_and_program() {
        let a = p(&["--memory", "64M", "--env", "A=1", "--", "/bin/busybox", "echo", "--help"]).unwrap();
        assert_eq!(a.memory, 64 << 20);
        assert_eq!(a.env, vec!["A=1"]);
        assert_eq!(
            a.command,
            Command::Run { program: "/bin/busybox".into(), args: vec!["echo".into(), "--help".into()] }
        );
        let b = p(&["busybox", "ls", "-la"]).unwrap();
        assert_eq!(b.command, Command::Run { program: "busybox".into(), args: vec!["ls".into(), "-la".into()] });
    }

    #[test]
    fn help_states_the_linux_exit_statuses() {
        use crate::linux::status;
        for (code, what) in [
            (status::POWER_OFF, "powered off"),
            (status::RESET, "reset the machine"),
            (status::TRIPLE_FAULT, "triple-faulted"),
            (status::TIMEOUT, "the --timeout passed"),
            (status::KVM_STOPPED, "KVM could not emulate"),
        ] {
            let text = USAGE.replace('\n', " ");
            let at = text.find(what).unwrap_or_else(|| panic!("{what}"));
            let before = &text[..at];
            assert!(before.contains(&format!("{code} ")), "--help does not give {code} for '{what}'");
        }
        assert!(USAGE.contains(DEFAULT_CMDLINE));
    }

    #[test]
    fn kernel_without_program_is_linux_mode() {
        let a =
            p(&["--kernel", "bzImage", "--initrd", "i.gz", "--cmdline", "console=ttyS0", "--timeout", "2.5"]).unwrap();
        assert_eq!(a.command, Command::Linux);
        assert_eq!(a.initrd, Some(PathBuf::from("i.gz")));
        assert_eq!(a.cmdline.as_deref(), Some("console=ttyS0"));
        assert_eq!(a.timeout, Some(std::time::Duration::from_millis(2500)));
        let b = p(&["--kernel", "k", "--", "/bin/true"]).unwrap();
        assert!(matches!(b.command, Command::Run { .. }));
    }

    #[test]
    fn reports_usage_errors() {
        assert!(p(&["--memory", "lots", "x"]).unwrap_err().0.contains("invalid size"));
        assert!(p(&["--bogus"]).unwrap_err().0.contains("unknown option"));
        assert!(p(&["--env", "novalue", "x"]).unwrap_err().0.contains("K=V"));
        assert!(p(&["--variant", "99", "x"]).is_err());
        assert!(p(&[]).unwrap_err().0.contains("no program"));
        assert!(p(&["--timeout", "-1", "--kernel", "k"]).is_err());
        assert!(p(&["--initrd", "i", "/bin/true"]).unwrap_err().0.contains("Linux-mode option"));
        assert_eq!(parse_size("1G").unwrap(), 1 << 30);
        assert!(p(&["--layout-seed", "x1", "/bin/true"]).unwrap_err().0.contains("--layout-seed"));
        let a = p(&["--layout-seed", "0x10", "--fixed-layout", "/bin/true"]).unwrap();
        assert_eq!((a.layout_seed, a.fixed_layout), (Some(16), true));
        let a = p(&["--variant-program", "1=/b", "--variant-program", "1=/c", "/a"]).unwrap();
        assert_eq!(a.variant_programs, vec![(1, "/c".to_string())]);
        for bad in ["1", "16=/x", "x=/y", "1="] {
            assert!(p(&["--variant-program", bad, "/a"]).unwrap_err().0.contains("ID=PATH"), "{bad}");
        }
    }
}
