//! `dmvx-vmm`: run one variant of a program in a KVM microVM.

use std::process::ExitCode;

use dmvx_vmm::cli::{self, Command, USAGE};
use dmvx_vmm::guest_kernel::GuestKernel;
use dmvx_vmm::kernel::errno::Errno;
use dmvx_vmm::kernel::exec::ExecError;
use dmvx_vmm::kernel::{self, KernelError, Outcome};
use dmvx_vmm::linux::{self, serial::StdoutSink};

/// The VMM itself failed.
const EXIT_VMM: u8 = 125;
/// The program exists but cannot be executed.
const EXIT_NOEXEC: u8 = 126;
/// The program was not found.
const EXIT_NOTFOUND: u8 = 127;
const EXIT_USAGE: u8 = 2;

const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn main() -> ExitCode {
    let args = match cli::parse(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("dmvx-vmm: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let (program, rest) = match &args.command {
        Command::Help => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Command::Version => {
            println!("dmvx-vmm {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Command::SyscallTable => {
            print!("{}", kernel::syscall::markdown_table());
            return ExitCode::SUCCESS;
        }
        Command::PolicyTable => {
            print!("{}", dmvx_sync::policy::presets_markdown());
            return ExitCode::SUCCESS;
        }
        Command::BenchExitLoop { n, cpl } => {
            return match dmvx_vmm::bench::exit_loop(*n, *cpl) {
                Ok(ns) => {
                    println!("{ns:.1}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("dmvx-vmm: error: {e}");
                    ExitCode::from(EXIT_VMM)
                }
            };
        }
        Command::Linux => return run_linux(&args),
        Command::Run { program, args } => (program.clone(), args.clone()),
    };
    if args.variants > 1 && args.cluster.is_none() {
        return run_variants(&args);
    }
    let cluster = match &args.cluster {
        None => None,
        Some(path) => match dmvx_sync::ClusterConfig::load(path) {
            Ok(cfg) => {
                // Local reads of image files are sound only on identical images.
                if let Some(want) = cfg.digests.image {
                    let checked = match &args.rootfs {
                        None => Err(dmvx_vmm::image::ImageError::NoRootfs),
                        Some(root) => dmvx_vmm::image::verify(root, want),
                    };
                    if let Err(e) = checked {
                        eprintln!("dmvx-vmm: error: {e}");
                        return ExitCode::from(EXIT_VMM);
                    }
                }
                Some(kernel::ClusterJoin { cfg, id: args.variant as u8, report_dir: args.report_dir.clone() })
            }
            Err(e) => {
                eprintln!("dmvx-vmm: error: cluster file {}: {e}", path.display());
                return ExitCode::from(EXIT_VMM);
            }
        },
    };
    let kernel = match &args.kernel {
        Some(path) => GuestKernel::from_file(path),
        None => GuestKernel::embedded(),
    };
    let kernel = match kernel {
        Ok(k) => k,
        Err(e) => {
            eprintln!("dmvx-vmm: error: {e}");
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
    // Another build of the program for this variant (argv[0] stays).
    let program = match args.variant_programs.iter().find(|(id, _)| *id == args.variant) {
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
        variant: args.variant,
        layout_seed: args.layout_seed,
        fixed_layout: args.fixed_layout,
        stats: args.stats,
        trace: args.trace,
        launched_ns: std::env::var("DMVX_LAUNCH_NS").ok().and_then(|s| s.parse().ok()),
        cluster,
    };
    match kernel::run(config) {
        Ok(Outcome::Exited(status)) => ExitCode::from((status & 0xff) as u8),
        Ok(o @ Outcome::Killed { .. }) => {
            if let Outcome::Killed { signal, reason } = &o {
                eprintln!("dmvx: program killed by {}: {reason}", signal.name());
            }
            ExitCode::from(o.status() as u8)
        }
        Ok(o @ Outcome::Diverged(_)) => {
            if let Outcome::Diverged(msg) = &o {
                eprintln!("dmvx: variants diverged, every variant stopped: {msg}");
            }
            ExitCode::from(o.status() as u8)
        }
        Ok(o @ Outcome::Ended(_)) => ExitCode::from(o.status() as u8),
        Err(e) => {
            eprintln!("dmvx-vmm: error: {e}");
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
    if args.variants > 1 && args.cluster.is_none() {
        return run_variants(args);
    }
    let config = linux::Config {
        kernel: args.kernel.clone().expect("Linux mode has a --kernel"),
        initrd: args.initrd.clone(),
        cmdline: args.cmdline.clone().unwrap_or_else(|| cli::DEFAULT_CMDLINE.to_string()),
        memory: args.memory,
        timeout: args.timeout,
        sink: Box::new(StdoutSink),
        sink_stop: None,
        monitor: None,
    };
    let result = match &args.cluster {
        None => linux::run(config).map(linux::mvx::Outcome::Agreed),
        Some(path) => match dmvx_sync::ClusterConfig::load(path) {
            Ok(cfg) => {
                let join = linux::mvx::Join { cfg, id: args.variant as u8, report_dir: args.report_dir.clone() };
                linux::mvx::run(config, join)
            }
            Err(e) => {
                eprintln!("dmvx-vmm: error: cluster file {}: {e}", path.display());
                return ExitCode::from(EXIT_VMM);
            }
        },
    };
    match result {
        Ok(linux::mvx::Outcome::Agreed(exit)) => {
            eprintln!("dmvx-vmm: {exit}");
            ExitCode::from(exit.status())
        }
        Ok(linux::mvx::Outcome::Diverged(msg)) => {
            eprintln!("dmvx: variants diverged, every variant stopped: {msg}");
            ExitCode::from(dmvx_vmm::monitor::EXIT_DIVERGENCE)
        }
        Err(e) => {
            eprintln!("dmvx-vmm: error: {e}");
            ExitCode::from(EXIT_VMM)
        }
    }
}

/// `--variants N`: N variants here, joined over loopback.
fn run_variants(args: &cli::Args) -> ExitCode {
    // Pass every argument on except --variants and --policy (and their values).
    let mut rest: Vec<std::ffi::OsString> = Vec::new();
    let mut it = std::env::args_os().skip(1);
    while let Some(a) = it.next() {
        if a == "--" {
            rest.push(a);
            rest.extend(it.by_ref());
            break;
        }
        if a == "--variants" || a == "--policy" {
            it.next();
            continue;
        }
        rest.push(a);
    }
    // Variants of different builds: the cluster file names each one's digest.
    let mut programs = Vec::new();
    if let (false, Command::Run { program, .. }) = (args.variant_programs.is_empty(), &args.command) {
        let root = args.rootfs.clone().unwrap_or_else(|| "/".into());
        for id in 0..args.variants {
            let path = args.variant_programs.iter().find(|(i, _)| *i == id).map_or(program, |(_, p)| p);
            match dmvx_vmm::monitor::join::program_digest(&root, &args.cwd, path) {
                Ok(d) => programs.push(d),
                Err(e) => {
                    eprintln!("dmvx-vmm: error: variant {id}'s program: {e}");
                    return ExitCode::from(EXIT_VMM);
                }
            }
        }
    }
    match dmvx_vmm::monitor::launch::run_local(args.variants, args.policy.as_deref(), &programs, &rest) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("dmvx-vmm: error: {e}");
            ExitCode::from(EXIT_VMM)
        }
    }
}
