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
    pub stats: bool,
    pub trace: bool,
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
    /// Print the syscall table as markdown.
    SyscallTable,
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

pub const USAGE: &str = "\
usage: dmvx-vmm [OPTIONS] [--] PROGRAM [ARGS...]

Runs an unmodified Linux x86-64 program in a KVM microVM whose every system
call and fault is handled by this VMM.

options:
  --kernel PATH      guest kernel image (default: the embedded dmvx kernel)
  --memory SIZE      guest memory, e.g. 256M or 1G (default 256M)
  --rootfs DIR       the program's root directory, writable
                     (default: the host's /, read-only)
  --read-only        make --rootfs read-only
  --env K=V          add K=V to the program's environment (repeatable)
  --cwd DIR          working directory inside the root (default /)
  --variant ID       variant id: selects a disjoint address-space layout (0-15)
  --stats            print exit, system call and timing statistics at the end
  --trace            print every system call and its result (strace-like)
  --syscall-table    print what dmvx does with each system call (markdown)
  --bench-exit-loop N
                     time N exits of a guest that only exits (the floor of
                     the syscall path); --bench-cpl 0|3 picks its privilege
  -h, --help         this text
  -V, --version      the version

PROGRAM without a slash is looked up in /usr/local/sbin:/usr/local/bin:
/usr/sbin:/usr/bin:/sbin:/bin inside the root. The program's environment is
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin plus --env.

exit status: the program's, or 128+N if signal N killed it; 125 if the VMM
itself failed, 126 if the program cannot be executed, 127 if it is not found,
2 for a usage error.";

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
        stats: false,
        trace: false,
        command: Command::Help,
    };
    let mut rest: Vec<String> = Vec::new();
    let mut table = false;
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
                    v.parse().ok().filter(|&n: &u32| n < crate::process::layout::MAX_VARIANTS).ok_or_else(|| {
                        UsageError(format!(
                            "--variant must be 0-{}, got '{v}'",
                            crate::process::layout::MAX_VARIANTS - 1
                        ))
                    })?;
            }
            "--stats" => a.stats = true,
            "--trace" => a.trace = true,
            "--syscall-table" => table = true,
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
    } else if let Some((program, args)) = rest.split_first() {
        Command::Run { program: program.clone(), args: args.to_vec() }
    } else {
        return Err(UsageError("no program given (see --help)".into()));
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
    fn reports_usage_errors() {
        assert!(p(&["--memory", "lots", "x"]).unwrap_err().0.contains("invalid size"));
        assert!(p(&["--bogus"]).unwrap_err().0.contains("unknown option"));
        assert!(p(&["--env", "novalue", "x"]).unwrap_err().0.contains("K=V"));
        assert!(p(&["--variant", "99", "x"]).is_err());
        assert!(p(&[]).unwrap_err().0.contains("no program"));
        assert_eq!(parse_size("1G").unwrap(), 1 << 30);
    }
}
