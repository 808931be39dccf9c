//! The `dmvx-vmm` command: parses the command line and runs what it asks
//! for (a variant, a local cluster, Linux mode, a tool).

use std::process::ExitCode;

use log::{error, info, warn};

use crate::cli::{self, Command, VariantRef};
use crate::guest_kernel::GuestKernel;
use crate::kernel::errno::Errno;
use crate::kernel::exec::ExecError;
use crate::kernel::{self, KernelError, Outcome};
use crate::linux::{self, serial::StdoutSink};
use crate::logger::PROGRAM;

/// The VMM itself failed.
const EXIT_VMM: u8 = 125;
/// The program exists but cannot be executed.
const EXIT_NOEXEC: u8 = 126;
/// The program was not found.
const EXIT_NOTFOUND: u8 = 127;

const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The command's entry: its exit status.
pub fn main() -> ExitCode {
    crate::jail::one_malloc_arena();
    crate::logger::init();
    // Usage errors exit with 2, --help and --version with 0 (clap's statuses).
    let args = cli::parse(std::env::args_os()).unwrap_or_else(|e| e.exit());
    let (program, rest) = match &args.command {
        Command::SyscallTable => {
            print!("{}", kernel::syscall::markdown_table());
            return ExitCode::SUCCESS;
        }
        Command::PolicyTable => {
            print!("{}", dmvx_sync::policy::presets_markdown());
            return ExitCode::SUCCESS;
        }
        Command::BenchExitLoop { n, cpl } => {
            return match crate::bench::exit_loop(*n, *cpl) {
                Ok(ns) => {
                    println!("{ns:.1}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    error!("{e}");
                    ExitCode::from(EXIT_VMM)
                }
            };
        }
        Command::Keygen { path, replace } => {
            return match crate::monitor::cluster::keygen(path, *replace) {
                Ok(public) => {
                    info!("wrote the private key to {} and the public key to {}.pub", path.display(), path.display());
                    println!("public_key = \"{public}\"");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    error!("{e}");
                    ExitCode::from(EXIT_VMM)
                }
            };
        }
        Command::Linux => return run_linux(&args),
        Command::Run { program, args } => (program.clone(), args.clone()),
    };
    if args.variants > 1 && !args.joins_cluster() {
        return run_variants(&args);
    }
    let cluster = match join_cluster(&args) {
        Ok(None) => None,
        Ok(Some(member)) => {
            // Local reads of image files are sound only on identical images.
            if let Some(want) = member.cfg.digests.image {
                let checked = match &args.rootfs {
                    None => Err(crate::image::ImageError::NoRootfs),
                    Some(root) => crate::image::verify(root, want),
                };
                if let Err(e) = checked {
                    error!("{e}");
                    return ExitCode::from(EXIT_VMM);
                }
            }
            let (cfg, key, id) = (member.cfg, member.key, member.id);
            Some(kernel::ClusterJoin {
                cfg,
                key,
                id,
                report_dir: args.report_dir.clone(),
                net: args.net.clone(),
                data: args.data_layout,
            })
        }
        Err(code) => return code,
    };
    let kernel = match &args.kernel {
        Some(path) => GuestKernel::from_file(path),
        None => GuestKernel::embedded(),
    };
    let kernel = match kernel {
        Ok(k) => k,
        Err(e) => {
            error!("{e}");
            return ExitCode::from(EXIT_VMM);
        }
    };
    let mut env = vec![DEFAULT_PATH.to_string()];
    for kv in &args.env {
        let key = kv.split('=').next().unwrap_or("");
        env.retain(|e| e.split('=').next() != Some(key));
        env.push(kv.clone());
    }
    let mut argv = vec![program.clone()];
    argv.extend(rest);
    let variant = cluster.as_ref().map_or_else(|| variant_id(&args.variant), |c| u32::from(c.id));
    // Another build of the program for this variant (argv[0] stays).
    let program = match args.variant_programs.iter().find(|(id, _)| *id == variant) {
        Some((_, path)) => path.clone(),
        None => program,
    };
    let writable = args.rootfs.is_some() && !args.read_only;
    let config = kernel::Config {
        kernel,
        memory: args.memory,
        root: args.rootfs.clone().unwrap_or_else(|| "/".into()),
        writable,
        program,
        argv,
        env,
        cwd: args.cwd.clone(),
        variant,
        layout_seed: args.layout_seed,
        fixed_layout: args.fixed_layout,
        stats: args.stats,
        trace: args.trace,
        launched_ns: std::env::var("DMVX_LAUNCH_NS").ok().and_then(|s| s.parse().ok()),
        cluster,
        max_procs: args.max_procs,
        syscall_path: args.syscall_path,
        shared_memory: args.shared_memory,
        jail: args.jail.clone(),
        net: args.net.clone(),
    };
    match kernel::run(config) {
        Ok(Outcome::Exited(status)) => ExitCode::from((status & 0xff) as u8),
        Ok(o @ Outcome::Killed { .. }) => {
            if let Outcome::Killed { signal, reason } = &o {
                warn!(target: PROGRAM, "program killed by {}: {reason}", signal.name());
            }
            ExitCode::from(o.status() as u8)
        }
        Ok(o @ Outcome::Diverged(_)) => {
            if let Outcome::Diverged(msg) = &o {
                error!(target: PROGRAM, "variants diverged, every variant stopped: {msg}");
            }
            ExitCode::from(o.status() as u8)
        }
        Ok(o @ Outcome::Ended(_)) => ExitCode::from(o.status() as u8),
        Err(e) => {
            error!("{e}");
            ExitCode::from(match &e {
                KernelError::Exec(x) => match x.errno() {
                    Errno::ENOENT => EXIT_NOTFOUND,
                    _ if matches!(x, ExecError::OutOfMemory { .. }) => EXIT_VMM,
                    _ => EXIT_NOEXEC,
                },
                _ => EXIT_VMM,
            })
        }
    }
}

/// Linux mode: boot the kernel, report how the guest ended.
fn run_linux(args: &cli::Args) -> ExitCode {
    if args.variants > 1 && !args.joins_cluster() {
        return run_variants(args);
    }
    let mut config = linux::Config {
        kernel: args.kernel.clone().expect("Linux mode has a --kernel"),
        initrd: args.initrd.clone(),
        cmdline: args.cmdline.clone().unwrap_or_else(|| cli::DEFAULT_CMDLINE.to_string()),
        memory: args.memory,
        timeout: args.timeout,
        sink: Box::new(StdoutSink),
        sink_stop: None,
        monitor: None,
        images: None,
    };
    // What the guest needs from the host is read or opened before the jail.
    if let Err(e) = config.load() {
        error!("{e}");
        return ExitCode::from(EXIT_VMM);
    }
    // Without KVM, the error comes where it always did (after the kernel checks).
    let _ = crate::vstate::vm::preopen_kvm();
    let member = match join_cluster(args) {
        Ok(m) => m,
        Err(code) => return code,
    };
    if member.is_some() {
        if let Err(e) = crate::jail::reports::open(&args.report_dir) {
            error!("cannot open the divergence report directory {}: {e}", args.report_dir.display());
            return ExitCode::from(EXIT_VMM);
        }
    }
    if let Err(e) = crate::jail::enter(&args.jail, None, false, crate::jail::Role::LinuxMain) {
        error!("{e}");
        return ExitCode::from(EXIT_VMM);
    }
    let result = match Ok::<_, ExitCode>(member) {
        Ok(None) => linux::run(config).map(linux::mvx::Outcome::Agreed),
        Ok(Some(member)) => {
            let (cfg, key, id) = (member.cfg, member.key, member.id);
            linux::mvx::run(config, linux::mvx::Join { cfg, key, id, report_dir: args.report_dir.clone() })
        }
        Err(code) => return code,
    };
    match result {
        Ok(linux::mvx::Outcome::Agreed(exit)) => {
            info!("{exit}");
            ExitCode::from(exit.status())
        }
        Ok(linux::mvx::Outcome::Diverged(msg)) => {
            error!(target: PROGRAM, "variants diverged, every variant stopped: {msg}");
            ExitCode::from(crate::monitor::EXIT_DIVERGENCE)
        }
        Err(e) => {
            error!("{e}");
            ExitCode::from(EXIT_VMM)
        }
    }
}

/// The cluster configuration and private key, if this VMM joins a cluster;
/// else the exit status (after saying why).
fn join_cluster(args: &cli::Args) -> Result<Option<crate::monitor::cluster::Member>, ExitCode> {
    let sources = crate::monitor::cluster::Sources {
        file: args.cluster.as_deref(),
        fd: args.cluster_fd,
        key_file: args.private_key.as_deref(),
        key_fd: args.private_key_fd,
    };
    crate::monitor::cluster::load(sources, &args.variant).map_err(|e| {
        error!("{e}");
        ExitCode::from(EXIT_VMM)
    })
}

/// `--variants N`: N variants here, joined over loopback.
fn run_variants(args: &cli::Args) -> ExitCode {
    let rest = cli::variant_args(std::env::args_os().skip(1));
    // Variants of different builds: the cluster file names each one's digest.
    let mut programs = Vec::new();
    if let (false, Command::Run { program, .. }) = (args.variant_programs.is_empty(), &args.command) {
        let root = args.rootfs.clone().unwrap_or_else(|| "/".into());
        for id in 0..args.variants {
            let path = args.variant_programs.iter().find(|(i, _)| *i == id).map_or(program, |(_, p)| p);
            match crate::monitor::join::program_digest(&root, &args.cwd, path) {
                Ok(d) => programs.push(d),
                Err(e) => {
                    error!("variant {id}'s program: {e}");
                    return ExitCode::from(EXIT_VMM);
                }
            }
        }
    }
    match crate::monitor::launch::run_local(args.variants, args.policy.as_deref(), &programs, &rest) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            error!("{e}");
            ExitCode::from(EXIT_VMM)
        }
    }
}

/// The variant id that `--variant` gives without a cluster (the CLI
/// refuses a name there).
fn variant_id(v: &VariantRef) -> u32 {
    match v {
        VariantRef::Id(id) => *id,
        VariantRef::Name(_) => 0,
    }
}
