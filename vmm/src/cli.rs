//! Command-line parsing for `dmvx-vmm` (clap, derive). Usage errors are
//! clap's: a message, the usage line, and exit status 2.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::error::ErrorKind;
use clap::{CommandFactory, Parser, Subcommand};

use crate::kernel::layout::MAX_VARIANTS;
use crate::kernel::net_policy::NetPolicy;
use crate::kernel::proc_table::DEFAULT_MAX_PROCS;

/// The kernel command line of Linux mode when `--cmdline` is not given.
/// The console must be the same in every variant of a boot: no timestamps,
/// and no kvm-clock, which prints the (timing-dependent) offset it starts at.
macro_rules! default_cmdline {
    () => {
        "console=ttyS0 earlyprintk=serial,ttyS0,115200 reboot=k panic=1 printk.time=0 pci=off no-kvmclock"
    };
}
pub const DEFAULT_CMDLINE: &str = default_cmdline!();

const ABOUT: &str = "Runs an unmodified Linux program, or boots a Linux kernel, in a KVM microVM";

const LONG_ABOUT: &str = "\
Runs an unmodified Linux program, or boots a Linux kernel, in a KVM microVM.

Process mode runs an unmodified Linux x86-64 program in a KVM microVM whose
every system call and fault is handled by this VMM. Linux mode (--kernel
without a PROGRAM) boots an unmodified Linux kernel, a bzImage (boot
protocol 2.12+) or an ELF vmlinux with a PVH entry, with its serial console
(COM1, ttyS0) on stdout. --variants N runs N variants of either here, joined
over loopback TCP by the same protocol as variants on different hosts
(--cluster FILE --variant ID); only the leader's outputs leave.

keygen writes a fresh X25519 key pair for one variant: FILE, the private
key (mode 0600; an existing FILE is replaced only with --force), and
FILE.pub; it prints the public_key line for the variant's entry in the
cluster file. A program named keygen runs as `dmvx-vmm -- keygen`.

PROGRAM without a slash is looked up in /usr/local/sbin:/usr/local/bin:
/usr/sbin:/usr/bin:/sbin:/bin inside the root. The program's environment is
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin plus --env.

Diagnostics go to stderr through RUST_LOG's levels (default: info; e.g.
RUST_LOG=debug, or RUST_LOG=dmvx_vmm::monitor=debug); --trace is the program's
trace, not a log level.";

/// The examples that `-h` and `--help` end with.
macro_rules! examples {
    () => {
        "\
Examples:
  dmvx-vmm -- /bin/busybox ls -la /etc
  dmvx-vmm --rootfs /tmp/root --env HOME=/ -- /bin/prog arg
  dmvx-vmm --stats --trace -- /bin/busybox true
  dmvx-vmm --variants 2 -- /bin/busybox sha256sum /etc/os-release
  dmvx-vmm --cluster web.toml --variant a --rootfs images/out/rootfs-lighttpd \\
      -- /usr/sbin/lighttpd -D -f /etc/lighttpd/lighttpd.conf
  dmvx-vmm --kernel images/out/linux/bzImage \\
      --initrd images/out/linux/initramfs.cpio.gz --timeout 300
  dmvx-vmm --kernel bzImage --cluster linux.toml --variant b
  dmvx-vmm keygen /etc/dmvx/web-0.key"
    };
}

const AFTER_LONG_HELP: &str = concat!(
    examples!(),
    "

Linux mode's kernel command line without --cmdline (default:
  \"",
    default_cmdline!(),
    "\")

Exit status, process mode: the program's, or 128+N if signal N killed it;
121 if the variants diverged (a report is written to --report-dir);
125 if the VMM itself failed, 126 if the program cannot be executed, 127 if
it is not found, 2 for a usage error.

Exit status, Linux mode: 0 the guest powered off (ACPI S5, e.g. poweroff -f),
10 it reset the machine (i8042 reset, e.g. reboot with reboot=k, or a panic
with panic=N), 11 it triple-faulted, 12 the --timeout passed, 13 the host's
KVM could not emulate a guest instruction and stopped it; 121 if the variants
diverged; 125 if the kernel or initrd cannot be booted (with the reason) or
the VMM failed, 2 for a usage error."
);

/// Which variant of a cluster this is: a number, or a name that the cluster
/// file gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VariantRef {
    Id(u32),
    Name(String),
}

/// The command line as clap sees it; [`parse`] turns it into [`Args`].
#[derive(Parser, Debug)]
#[command(
    name = "dmvx-vmm",
    version,
    about = ABOUT,
    long_about = LONG_ABOUT,
    after_help = examples!(),
    after_long_help = AFTER_LONG_HELP,
    max_term_width = 100,
    // As before clap: a repeated option's last value counts (--env adds up).
    args_override_self = true,
    // `dmvx-vmm help` runs a program named help.
    disable_help_subcommand = true,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    tool: Option<Tool>,

    /// The dmvx guest kernel (default: embedded), or in Linux mode a Linux kernel
    #[arg(long, value_name = "PATH")]
    kernel: Option<PathBuf>,
    /// Guest memory, e.g. 256M or 1G
    #[arg(long, value_name = "SIZE", default_value = "256M", value_parser = parse_size)]
    memory: u64,
    /// The most processes the program may have at once (a fork beyond: EAGAIN)
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_PROCS, value_parser = parse_max_procs)]
    max_procs: u32,
    /// How the program's system calls reach the VMM: `exit` (one VM exit
    /// per call) or `ring` (the exit-less path where it serves the call,
    /// the exit otherwise); default: $DMVX_SYSCALL_PATH, else exit
    #[arg(long, value_name = "PATH", value_parser = parse_syscall_path)]
    syscall_path: Option<crate::platform::SyscallPath>,
    /// Memory for MAP_SHARED anonymous mappings, shared by the program's
    /// processes (0: shared mappings are private to each process)
    #[arg(long, value_name = "SIZE", default_value = "64M", value_parser = parse_size)]
    shared_memory: u64,
    /// The program's root directory, writable [default: the host's /, read-only]
    #[arg(long, value_name = "DIR")]
    rootfs: Option<PathBuf>,
    /// Make --rootfs read-only
    #[arg(long)]
    read_only: bool,
    /// Add K=V to the program's environment (repeatable)
    #[arg(long, value_name = "K=V", value_parser = parse_env)]
    env: Vec<String>,
    /// Working directory inside the root
    #[arg(long, value_name = "DIR", default_value = "/")]
    cwd: String,
    /// Where the program may connect: serve (listen and answer; connect only
    /// to its own ports), loopback (also any local port), none (no IP
    /// sockets), or allow=ADDR:PORT,... (serve plus these)
    #[arg(long, value_name = "POLICY", default_value = "serve", value_parser = parse_net)]
    net: NetPolicy,

    /// Run N variants here (N VMMs joined over loopback TCP, as across hosts)
    #[arg(
        long,
        value_name = "N",
        default_value = "1",
        value_parser = parse_variants,
        help_heading = "Multi-variant execution"
    )]
    variants: u32,
    /// Policy of --variants: strict, dmvx (default), or a TOML file
    #[arg(long, value_name = "P", help_heading = "Multi-variant execution")]
    policy: Option<String>,
    /// Join the cluster that FILE describes, as variant --variant
    #[arg(long, value_name = "FILE", conflicts_with = "variants", help_heading = "Multi-variant execution")]
    cluster: Option<PathBuf>,
    /// ... or the one read from inherited descriptor N (closed once read)
    #[arg(
        long,
        value_name = "N",
        value_parser = parse_cluster_fd,
        conflicts_with_all = ["variants", "cluster"],
        help_heading = "Multi-variant execution"
    )]
    cluster_fd: Option<i32>,
    /// This variant's private key, mode 0600 [default: its private_key_file]
    #[arg(long, value_name = "FILE", help_heading = "Multi-variant execution")]
    private_key: Option<PathBuf>,
    /// ... or the one read from inherited descriptor N
    #[arg(
        long,
        value_name = "N",
        value_parser = parse_private_key_fd,
        conflicts_with = "private_key",
        help_heading = "Multi-variant execution"
    )]
    private_key_fd: Option<i32>,
    /// This variant's id (0-15; it picks the layout) or its name in --cluster
    #[arg(
        long,
        value_name = "ID|NAME",
        value_parser = parse_variant,
        conflicts_with = "variants",
        help_heading = "Multi-variant execution"
    )]
    variant: Option<VariantRef>,
    /// Where divergence reports are written
    #[arg(long, value_name = "DIR", default_value = ".", help_heading = "Multi-variant execution")]
    report_dir: PathBuf,
    /// Variant ID runs the program file PATH instead of PROGRAM (another build
    /// of it: N-version variants; argv[0] stays PROGRAM); repeatable. With
    /// --variants N the cluster file gets every variant's program digest
    #[arg(long, value_name = "ID=PATH", value_parser = parse_variant_program, help_heading = "Multi-variant execution")]
    variant_program: Vec<(u32, String)>,
    /// Draw the address-space layout from SEED (decimal or 0x-hex) instead of
    /// the host's random generator, to reproduce a run's layout (reports
    /// record each variant's seed)
    #[arg(long, value_name = "SEED", value_parser = parse_layout_seed, help_heading = "Diversity")]
    layout_seed: Option<u64>,
    /// No layout randomisation: every base at the bottom of the variant's
    /// range (debugging; weaker, like setarch -R)
    #[arg(long, help_heading = "Diversity")]
    fixed_layout: bool,
    /// Where the variants' anonymous memory and heaps live: shared (the same
    /// addresses in every variant, drawn per run; code, files and stacks stay
    /// disjoint) or disjoint (each in its own slot; programs that compute with
    /// data addresses, such as jemalloc's, then diverge)
    #[arg(long, value_name = "LAYOUT", default_value = "shared", help_heading = "Diversity")]
    data_layout: crate::kernel::layout::DataLayout,

    /// The unprivileged host uid the VMM runs the guest's host calls as
    #[arg(long, value_name = "UID", default_value_t = crate::jail::DEFAULT_ID, help_heading = "Jail")]
    uid: u32,
    /// The unprivileged host gid the VMM runs as
    #[arg(long, value_name = "GID", default_value_t = crate::jail::DEFAULT_ID, help_heading = "Jail")]
    gid: u32,
    /// Run even though the host lacks jail layer LAYER (identity: also host
    /// root with --uid 0; mount-namespace, landlock, seccomp); repeatable
    #[arg(long, value_name = "LAYER", value_parser = parse_layer, value_delimiter = ',', help_heading = "Jail")]
    allow_missing: Vec<crate::jail::Layer>,
    /// No jail at all: the VMM keeps its own host authority (debugging and
    /// the jail's cost in benchmarks only)
    #[arg(long, help_heading = "Jail")]
    no_jail: bool,
    /// Enter the jail, then make one host call no filter allows (ptrace):
    /// the VMM must end at once, naming the call (status 125)
    #[arg(long, help_heading = "Jail")]
    jail_selftest: bool,

    /// Print exit, system call and timing statistics at the end
    #[arg(long, help_heading = "Output")]
    stats: bool,
    /// Print every system call and its result (strace-like, on stderr)
    #[arg(long, help_heading = "Output")]
    trace: bool,

    /// Linux mode: the initial ramdisk
    #[arg(long, value_name = "FILE", help_heading = "Linux mode")]
    initrd: Option<PathBuf>,
    /// Linux mode: the kernel command line (default: see --help)
    #[arg(long, value_name = "STR", help_heading = "Linux mode")]
    cmdline: Option<String>,
    /// Linux mode: stop the guest after this long
    #[arg(long, value_name = "SECONDS", value_parser = parse_timeout, help_heading = "Linux mode")]
    timeout: Option<Duration>,

    /// Print what dmvx does with each system call (markdown)
    #[arg(long, help_heading = "Tables and benchmarks")]
    syscall_table: bool,
    /// Print the call classes and the presets' rules (markdown)
    #[arg(long, help_heading = "Tables and benchmarks")]
    policy_table: bool,
    /// Time N exits of a guest that only exits (a system call's floor)
    #[arg(long, value_name = "N", value_parser = parse_count, help_heading = "Tables and benchmarks")]
    bench_exit_loop: Option<u64>,
    /// The privilege level of --bench-exit-loop's guest
    #[arg(
        long,
        value_name = "CPL",
        default_value = "3",
        value_parser = parse_cpl,
        requires = "bench_exit_loop",
        help_heading = "Tables and benchmarks"
    )]
    bench_cpl: u8,

    /// The program to run and its arguments (argv[0] = PROGRAM)
    #[arg(value_name = "PROGRAM [ARGS]", trailing_var_arg = true)]
    program: Vec<String>,
}

/// The tools that are not a run.
#[derive(Subcommand, Debug)]
enum Tool {
    /// Write a fresh key pair for one variant: FILE (private, mode 0600) and FILE.pub
    #[command(after_help = "Prints the public_key line for the variant's [[variant]] entry in the cluster file.")]
    Keygen {
        /// Replace an existing FILE
        #[arg(long)]
        force: bool,
        /// Where the private key goes (the public key goes to FILE.pub)
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
}

/// Parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Args {
    pub kernel: Option<PathBuf>,
    pub memory: u64,
    /// The most processes the program may have at once.
    pub max_procs: u32,
    /// `--syscall-path`, or its default.
    pub syscall_path: crate::platform::SyscallPath,
    /// Memory for MAP_SHARED anonymous mappings shared across fork.
    pub shared_memory: u64,
    pub rootfs: Option<PathBuf>,
    pub read_only: bool,
    pub env: Vec<String>,
    pub cwd: String,
    /// Where the program's sockets may connect (`--net`).
    pub net: NetPolicy,
    /// This variant of `cluster` (its id, or its name there).
    pub variant: VariantRef,
    /// Join the cluster described by this file as variant `variant`.
    pub cluster: Option<PathBuf>,
    /// ... or by the configuration read from this inherited descriptor.
    pub cluster_fd: Option<i32>,
    /// This variant's private key file (else its `private_key_file`).
    pub private_key: Option<PathBuf>,
    /// ... or the private key read from this inherited descriptor.
    pub private_key_fd: Option<i32>,
    /// Run this many variants here (the embedded local cluster).
    pub variants: u32,
    /// Policy of a local cluster: `strict`, `dmvx` or a TOML file.
    pub policy: Option<String>,
    /// Where divergence reports are written.
    pub report_dir: PathBuf,
    /// Seed of the address-space layout (`--layout-seed`); `None`: from the host.
    pub layout_seed: Option<u64>,
    /// The variant's fixed layout, no randomisation (`--fixed-layout`).
    pub fixed_layout: bool,
    /// Where data lives across variants (`--data-layout`).
    pub data_layout: crate::kernel::layout::DataLayout,
    /// `--variant-program ID=PATH`: variant ID runs PATH instead of PROGRAM.
    pub variant_programs: Vec<(u32, String)>,
    /// How the VMM confines itself.
    pub jail: crate::jail::Settings,
    pub stats: bool,
    pub trace: bool,
    /// Linux mode: initrd, kernel command line, time limit.
    pub initrd: Option<PathBuf>,
    pub cmdline: Option<String>,
    pub timeout: Option<Duration>,
    pub command: Command,
}

/// What to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Run PROGRAM with ARGS (argv[0] = PROGRAM).
    Run { program: String, args: Vec<String> },
    /// Linux mode: boot the Linux kernel given with --kernel.
    Linux,
    /// Print the syscall table as markdown.
    SyscallTable,
    /// Print the policy presets as markdown.
    PolicyTable,
    /// Time N bare exits of a guest at CPL 0 or 3.
    BenchExitLoop { n: u64, cpl: u8 },
    /// Write a fresh key pair: FILE (private, mode 0600) and FILE.pub.
    Keygen { path: PathBuf, replace: bool },
}

impl Args {
    /// Whether a cluster configuration was given (file or descriptor).
    pub fn joins_cluster(&self) -> bool {
        self.cluster.is_some() || self.cluster_fd.is_some()
    }
}

/// Parses a size like 256M, 1G, 1048576, 64K.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let bad = || format!("invalid size '{s}': use a number with an optional K, M or G suffix");
    let (num, mult) = match s.as_bytes().last().map(|c| c.to_ascii_uppercase()) {
        Some(b'K') => (&s[..s.len() - 1], 1u64 << 10),
        Some(b'M') => (&s[..s.len() - 1], 1 << 20),
        Some(b'G') => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    num.parse::<u64>().ok().and_then(|n| n.checked_mul(mult)).ok_or_else(bad)
}

fn parse_env(kv: &str) -> Result<String, String> {
    if !kv.contains('=') || kv.starts_with('=') {
        return Err(format!("--env expects K=V, got '{kv}'"));
    }
    Ok(kv.to_string())
}

fn parse_variants(v: &str) -> Result<u32, String> {
    v.parse()
        .ok()
        .filter(|n| (1..=MAX_VARIANTS).contains(n))
        .ok_or_else(|| format!("--variants must be 1-{MAX_VARIANTS}, got '{v}'"))
}

fn parse_variant(v: &str) -> Result<VariantRef, String> {
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        return v
            .parse()
            .ok()
            .filter(|&n: &u32| n < MAX_VARIANTS)
            .map(VariantRef::Id)
            .ok_or_else(|| format!("--variant must be 0-{} or a name, got '{v}'", MAX_VARIANTS - 1));
    }
    dmvx_sync::config::check_variant_name(v).map_err(|why| format!("'{v}' is not a variant name: {why}"))?;
    Ok(VariantRef::Name(v.to_string()))
}

fn parse_layout_seed(v: &str) -> Result<u64, String> {
    crate::kernel::layout::parse_seed(v)
        .ok_or_else(|| format!("--layout-seed needs a 64-bit number (decimal or 0x-hex), got '{v}'"))
}

fn parse_variant_program(v: &str) -> Result<(u32, String), String> {
    v.split_once('=')
        .and_then(|(id, path)| {
            let id = id.parse::<u32>().ok().filter(|&i| i < MAX_VARIANTS)?;
            (!path.is_empty()).then(|| (id, path.to_string()))
        })
        .ok_or_else(|| format!("--variant-program expects ID=PATH with ID 0-15, got '{v}'"))
}

fn parse_layer(v: &str) -> Result<crate::jail::Layer, String> {
    crate::jail::Layer::parse(v).ok_or_else(|| {
        let names: Vec<&str> = crate::jail::Layer::ALL.iter().map(|l| l.name()).collect();
        format!("no jail layer {v:?} (layers: {})", names.join(", "))
    })
}

fn parse_net(v: &str) -> Result<NetPolicy, String> {
    v.parse().map_err(|e: crate::kernel::net_policy::NetPolicyError| e.to_string())
}

fn parse_syscall_path(v: &str) -> Result<crate::platform::SyscallPath, String> {
    crate::platform::SyscallPath::parse(v).ok_or_else(|| format!("'{v}' is not a system call path (ring or exit)"))
}

fn parse_max_procs(v: &str) -> Result<u32, String> {
    v.parse().ok().filter(|n| (1..=65536).contains(n)).ok_or_else(|| format!("--max-procs must be 1-65536, got '{v}'"))
}

fn parse_fd(name: &str, v: &str) -> Result<i32, String> {
    v.parse()
        .ok()
        .filter(|&n: &i32| n >= 3)
        .ok_or_else(|| format!("{name} needs a descriptor number of 3 or above (0-2 are the program's), got '{v}'"))
}

fn parse_cluster_fd(v: &str) -> Result<i32, String> {
    parse_fd("--cluster-fd", v)
}

fn parse_private_key_fd(v: &str) -> Result<i32, String> {
    parse_fd("--private-key-fd", v)
}

fn parse_timeout(v: &str) -> Result<Duration, String> {
    v.parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s > 0.0 && *s < 1e9)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| format!("--timeout needs a positive number of seconds, got '{v}'"))
}

fn parse_count(v: &str) -> Result<u64, String> {
    v.parse().ok().filter(|&n| n > 0).ok_or_else(|| format!("--bench-exit-loop needs a positive count, got '{v}'"))
}

fn parse_cpl(v: &str) -> Result<u8, String> {
    match v {
        "0" => Ok(0),
        "3" => Ok(3),
        _ => Err(format!("--bench-cpl must be 0 or 3, got '{v}'")),
    }
}

/// Parses `args` (with argv[0]). `--help` and `--version` come back as
/// errors of kind DisplayHelp/DisplayVersion, which `exit()` prints on
/// stdout with status 0; usage errors exit with 2.
pub fn parse<I, T>(args: I) -> Result<Args, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let c = Cli::try_parse_from(args)?;
    let usage = |kind, msg: String| Cli::command().error(kind, msg);
    if c.cluster_fd.is_some() && c.cluster_fd == c.private_key_fd {
        return Err(usage(
            ErrorKind::ArgumentConflict,
            "--cluster-fd and --private-key-fd must be different descriptors".into(),
        ));
    }
    let key_option = c.private_key.is_some() || c.private_key_fd.is_some();
    if key_option && c.cluster.is_none() && c.cluster_fd.is_none() {
        return Err(usage(
            ErrorKind::MissingRequiredArgument,
            "--private-key and --private-key-fd need --cluster or --cluster-fd".into(),
        ));
    }
    let command = if let Some(Tool::Keygen { force, file }) = c.tool {
        Command::Keygen { path: file, replace: force }
    } else if let Some(n) = c.bench_exit_loop {
        Command::BenchExitLoop { n, cpl: c.bench_cpl }
    } else if c.syscall_table {
        Command::SyscallTable
    } else if c.policy_table {
        Command::PolicyTable
    } else if let Some((program, args)) = c.program.split_first() {
        let linux_only =
            [("--initrd", c.initrd.is_some()), ("--cmdline", c.cmdline.is_some()), ("--timeout", c.timeout.is_some())];
        if let Some((name, _)) = linux_only.iter().find(|(_, given)| *given) {
            return Err(usage(
                ErrorKind::ArgumentConflict,
                format!(
                    "{name} is a Linux-mode option, but a PROGRAM was given (process mode); Linux mode is --kernel without a PROGRAM"
                ),
            ));
        }
        Command::Run { program: program.clone(), args: args.to_vec() }
    } else if c.kernel.is_some() {
        Command::Linux
    } else {
        return Err(usage(
            ErrorKind::MissingRequiredArgument,
            "no program given, and no --kernel to boot (see --help)".into(),
        ));
    };
    if let (Some(VariantRef::Name(name)), None, None) = (&c.variant, &c.cluster, c.cluster_fd) {
        return Err(usage(
            ErrorKind::MissingRequiredArgument,
            format!(
                "--variant {name} names a variant of a cluster file: give --cluster FILE (or a number 0-{})",
                MAX_VARIANTS - 1
            ),
        ));
    }
    Ok(Args {
        kernel: c.kernel,
        memory: c.memory,
        max_procs: c.max_procs,
        syscall_path: c.syscall_path.unwrap_or_else(crate::platform::SyscallPath::from_env),
        shared_memory: c.shared_memory,
        rootfs: c.rootfs,
        read_only: c.read_only,
        env: c.env,
        cwd: c.cwd,
        net: c.net,
        variant: c.variant.unwrap_or(VariantRef::Id(0)),
        cluster: c.cluster,
        cluster_fd: c.cluster_fd,
        private_key: c.private_key,
        private_key_fd: c.private_key_fd,
        variants: c.variants,
        policy: c.policy,
        report_dir: c.report_dir,
        layout_seed: c.layout_seed,
        fixed_layout: c.fixed_layout,
        data_layout: c.data_layout,
        variant_programs: {
            // A variant named twice runs the last PATH given for it.
            let mut v: Vec<(u32, String)> = Vec::new();
            for (id, path) in c.variant_program {
                v.retain(|(i, _)| *i != id);
                v.push((id, path));
            }
            v
        },
        jail: crate::jail::Settings {
            disabled: c.no_jail,
            uid: c.uid,
            gid: c.gid,
            allow_missing: c.allow_missing,
            selftest: c.jail_selftest,
        },
        stats: c.stats,
        trace: c.trace,
        initrd: c.initrd,
        cmdline: c.cmdline,
        timeout: c.timeout,
        command,
    })
}

/// This command line (`args`, without argv[0]) less `--variants` and
/// `--policy` and their values: what each variant of a local cluster runs
/// with, after `--cluster FILE --variant ID`. What follows `--` or PROGRAM
/// is the program's and passes unchanged.
pub fn variant_args<I: IntoIterator<Item = OsString>>(args: I) -> Vec<OsString> {
    let cmd = Cli::command();
    let takes_value =
        |long: &str| cmd.get_arguments().any(|a| a.get_long() == Some(long) && a.get_action().takes_values());
    let mut out = Vec::new();
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        let Some(long) = arg.to_str().and_then(|s| s.strip_prefix("--")).map(str::to_owned) else {
            // A short flag (-h, -V), or PROGRAM (non-UTF-8 is never an option).
            let program = !arg.to_str().is_some_and(|s| s.starts_with('-'));
            out.push(arg);
            if program {
                out.extend(it);
                break;
            }
            continue;
        };
        if long.is_empty() {
            out.push(arg);
            out.extend(it);
            break;
        }
        let (name, inline_value) = match long.split_once('=') {
            Some((name, _)) => (name, true),
            None => (long.as_str(), false),
        };
        let value = if takes_value(name) && !inline_value { it.next() } else { None };
        if name != "variants" && name != "policy" {
            out.push(arg);
            out.extend(value);
        }
    }
    out
}

/// The text of `--help`.
#[cfg(test)]
fn long_help() -> String {
    Cli::command().render_long_help().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &[&str]) -> Result<Args, clap::Error> {
        parse(std::iter::once("dmvx-vmm").chain(s.iter().copied()))
    }

    fn usage_error(s: &[&str]) -> String {
        let e = p(s).unwrap_err();
        assert_eq!(e.exit_code(), 2, "{s:?}: {e}");
        e.to_string()
    }

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
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
        // Options after PROGRAM are the program's.
        let b = p(&["busybox", "ls", "-la", "--stats"]).unwrap();
        assert_eq!(
            b.command,
            Command::Run { program: "busybox".into(), args: vec!["ls".into(), "-la".into(), "--stats".into()] }
        );
        assert!(!b.stats);
        assert_eq!((b.memory, b.variants, b.variant.clone(), b.cwd.as_str()), (256 << 20, 1, VariantRef::Id(0), "/"));
        assert_eq!(p(&["--memory=1G", "x"]).unwrap().memory, 1 << 30);
    }

    #[test]
    fn variants_are_numbered_or_named() {
        let a = p(&["--cluster", "c.toml", "--variant", "3", "x"]).unwrap();
        assert_eq!(a.variant, VariantRef::Id(3));
        let b = p(&["--cluster", "c.toml", "--variant", "eu-1", "x"]).unwrap();
        assert_eq!(b.variant, VariantRef::Name("eu-1".into()));
        assert!(usage_error(&["--variant", "16", "x"]).contains("--variant must be 0-15 or a name"));
        assert!(usage_error(&["--variant", "a b", "x"]).contains("not a variant name"));
        assert!(usage_error(&["--variant", "a", "x"]).contains("give --cluster FILE"));
        assert!(usage_error(&["--variants", "2", "--variant", "1", "x"]).contains("cannot be used with"));
    }

    #[test]
    fn help_states_the_exit_statuses_and_examples() {
        use crate::linux::status;
        let text = long_help().replace('\n', " ");
        for (code, what) in [
            (status::POWER_OFF, "powered off"),
            (status::RESET, "reset the machine"),
            (status::TRIPLE_FAULT, "triple-faulted"),
            (status::TIMEOUT, "the --timeout passed"),
            (status::KVM_STOPPED, "KVM could not emulate"),
        ] {
            let at = text.find(what).unwrap_or_else(|| panic!("{what}"));
            let before = &text[..at];
            assert!(before.contains(&format!("{code} ")), "--help does not give {code} for '{what}'");
        }
        assert!(long_help().contains(&format!("(default:\n  \"{DEFAULT_CMDLINE}\")")));
        assert!(text.contains("Examples:") && text.contains("dmvx-vmm --variants 2 --"));
        assert!(p(&["--help"]).unwrap_err().exit_code() == 0);
    }

    #[test]
    fn kernel_without_program_is_linux_mode() {
        let a =
            p(&["--kernel", "bzImage", "--initrd", "i.gz", "--cmdline", "console=ttyS0", "--timeout", "2.5"]).unwrap();
        assert_eq!(a.command, Command::Linux);
        assert_eq!(a.initrd, Some(PathBuf::from("i.gz")));
        assert_eq!(a.cmdline.as_deref(), Some("console=ttyS0"));
        assert_eq!(a.timeout, Some(Duration::from_millis(2500)));
        let b = p(&["--kernel", "k", "--", "/bin/true"]).unwrap();
        assert!(matches!(b.command, Command::Run { .. }));
    }

    #[test]
    fn tables_and_benchmarks() {
        assert_eq!(p(&["--syscall-table"]).unwrap().command, Command::SyscallTable);
        assert_eq!(p(&["--policy-table"]).unwrap().command, Command::PolicyTable);
        assert_eq!(p(&["--bench-exit-loop", "10"]).unwrap().command, Command::BenchExitLoop { n: 10, cpl: 3 });
        assert_eq!(
            p(&["--bench-exit-loop", "10", "--bench-cpl", "0"]).unwrap().command,
            Command::BenchExitLoop { n: 10, cpl: 0 }
        );
        assert!(usage_error(&["--bench-exit-loop", "10", "--bench-cpl", "1"]).contains("must be 0 or 3"));
        assert!(usage_error(&["--bench-exit-loop", "0"]).contains("positive count"));
    }

    #[test]
    fn variants_run_the_command_line_less_the_local_cluster_options() {
        let v = |s: &[&str]| -> Vec<String> {
            variant_args(s.iter().map(OsString::from)).into_iter().map(|o| o.into_string().unwrap()).collect()
        };
        assert_eq!(
            v(&["--variants", "2", "--stats", "--policy=strict", "--memory", "64M", "busybox", "--policy", "x"]),
            ["--stats", "--memory", "64M", "busybox", "--policy", "x"]
        );
        assert_eq!(v(&["--variants=3", "--policy", "p.toml", "--", "--variants", "2"]), ["--", "--variants", "2"]);
        assert_eq!(v(&["--env", "A=--policy", "--variants", "2", "prog"]), ["--env", "A=--policy", "prog"]);
    }

    #[test]
    fn keygen_and_cluster_sources() {
        assert_eq!(p(&["keygen", "k"]).unwrap().command, Command::Keygen { path: "k".into(), replace: false });
        assert_eq!(
            p(&["keygen", "--force", "k"]).unwrap().command,
            Command::Keygen { path: "k".into(), replace: true }
        );
        assert!(usage_error(&["keygen"]).contains("<FILE>"));
        assert!(usage_error(&["keygen", "a", "b"]).contains("unexpected argument 'b'"));
        // keygen is the tool only first; after an option, or after --, it is a
        // program; so is help.
        assert_eq!(
            p(&["--stats", "keygen", "a"]).unwrap().command,
            Command::Run { program: "keygen".into(), args: vec!["a".into()] }
        );
        assert!(matches!(p(&["--", "keygen"]).unwrap().command, Command::Run { .. }));
        assert_eq!(p(&["help"]).unwrap().command, Command::Run { program: "help".into(), args: vec![] });
        let a = p(&["--cluster-fd", "5", "--private-key-fd", "6", "--variant", "1", "/bin/true"]).unwrap();
        assert_eq!((a.cluster_fd, a.private_key_fd), (Some(5), Some(6)));
        assert!(a.joins_cluster());
        assert!(usage_error(&["--cluster-fd", "1", "/bin/true"]).contains("3 or above"));
        assert!(usage_error(&["--cluster", "c", "--cluster-fd", "4", "x"]).contains("cannot be used with"));
        assert!(usage_error(&["--cluster-fd", "4", "--private-key-fd", "4", "x"]).contains("different"));
        assert!(usage_error(&["--private-key", "k", "x"]).contains("need --cluster"));
        assert!(usage_error(&["--max-procs", "0", "x"]).contains("--max-procs must be 1-65536"));
        assert_eq!(p(&["x"]).unwrap().max_procs, DEFAULT_MAX_PROCS);
        // A name needs a cluster configuration, from a file or a descriptor.
        assert_eq!(p(&["--cluster-fd", "5", "--variant", "a", "x"]).unwrap().variant, VariantRef::Name("a".into()));
    }

    #[test]
    fn reports_usage_errors() {
        assert!(usage_error(&["--memory", "lots", "x"]).contains("invalid size"));
        assert!(usage_error(&["--bogus"]).contains("unexpected argument '--bogus'"));
        assert!(usage_error(&["--env", "novalue", "x"]).contains("K=V"));
        assert!(usage_error(&[]).contains("no program given"));
        assert!(usage_error(&["--timeout", "0", "--kernel", "k"]).contains("positive number of seconds"));
        assert!(usage_error(&["--initrd", "i", "/bin/true"]).contains("Linux-mode option"));
        let twice = p(&["--memory", "1G", "--memory", "2G", "--env", "A=1", "--env", "B=2", "--stats", "--stats", "x"])
            .unwrap();
        assert_eq!((twice.memory, twice.env, twice.stats), (2 << 30, vec!["A=1".to_string(), "B=2".to_string()], true));
        assert_eq!(parse_size("1G").unwrap(), 1 << 30);
        assert!(usage_error(&["--layout-seed", "x1", "/bin/true"]).contains("--layout-seed"));
        let a = p(&["--layout-seed", "0x10", "--fixed-layout", "/bin/true"]).unwrap();
        assert_eq!((a.layout_seed, a.fixed_layout), (Some(16), true));
        let a = p(&["--variant-program", "1=/b", "--variant-program", "1=/c", "/a"]).unwrap();
        assert_eq!(a.variant_programs, vec![(1, "/c".to_string())]);
        for bad in ["1", "16=/x", "x=/y", "1="] {
            assert!(usage_error(&["--variant-program", bad, "/a"]).contains("ID=PATH"), "{bad}");
        }
    }
}
