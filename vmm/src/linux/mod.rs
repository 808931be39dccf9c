//! Linux mode: boot an unmodified Linux kernel (a bzImage through the
//! 64-bit boot protocol, or an ELF vmlinux through its PVH entry) with an
//! optional initrd, a serial console on COM1, and the in-kernel irqchip
//! and PIT.
//!
//! The guest's serial output goes to a [`serial::SerialSink`]; the guest
//! ends the VMM by powering off (ACPI S5), by resetting (i8042, as
//! `reboot=k` does), or by a triple fault; `--timeout` bounds a guest that
//! does none of these.

pub mod boot;
pub mod devices;
pub mod mvx;
pub mod serial;

use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use linux_loader::configurator::linux::LinuxBootConfigurator;
use linux_loader::configurator::pvh::PvhBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use vm_memory::GuestAddress;
use vmm_sys_util::signal::{register_signal_handler, Killable, SIGRTMIN};

use crate::arch::x86_64::linux_boot::{
    self, CMDLINE_GPA, MAX_LINUX_MEMORY, PVH_INFO_GPA, PVH_MEMMAP_GPA, PVH_MODLIST_GPA, ZERO_PAGE_GPA,
};
use crate::arch::x86_64::{acpi, regs};
use crate::vstate::vcpu::{self, Vcpu, VcpuError};
use crate::vstate::vm::{Vm, VmError};
use boot::{BootError, KernelKind};
use devices::{DeviceError, GuestStop, Latch, LinuxDevices};
use serial::SerialSink;

/// The smallest guest memory Linux mode accepts.
pub const MIN_MEMORY: u64 = 16 << 20;
/// How long a stopped vCPU may take to leave KVM_RUN after the time limit.
const STOP_GRACE: Duration = Duration::from_secs(3);
/// How often a monitor (multi-variant Linux mode) looks at the cluster.
pub const MONITOR_PERIOD: Duration = Duration::from_millis(20);

/// Exit statuses of Linux mode.
pub mod status {
    pub const POWER_OFF: u8 = 0;
    pub const RESET: u8 = 10;
    pub const TRIPLE_FAULT: u8 = 11;
    pub const TIMEOUT: u8 = 12;
    pub const KVM_STOPPED: u8 = 13;
    pub const DIVERGED: u8 = crate::monitor::EXIT_DIVERGENCE;
}

/// What to boot.
pub struct Config {
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    pub cmdline: String,
    pub memory: u64,
    pub timeout: Option<Duration>,
    pub sink: Box<dyn SerialSink>,
    /// Raised by the sink to stop the guest (the variants diverged).
    pub sink_stop: Option<Latch>,
    /// Run every [`MONITOR_PERIOD`] while the guest runs; true stops it
    /// (the variants diverged).
    pub monitor: Option<Box<dyn FnMut() -> bool>>,
    /// The kernel's and initrd's bytes, read before the VMM's jail.
    pub images: Option<(Vec<u8>, Option<Vec<u8>>)>,
}

impl Config {
    /// Reads the kernel and initrd now (the jail holds neither file).
    pub fn load(&mut self) -> Result<(), LinuxError> {
        let path = &self.kernel;
        let kernel = std::fs::read(path).map_err(|source| BootError::ReadKernel { path: path.clone(), source })?;
        let initrd = self
            .initrd
            .as_ref()
            .map(|p| std::fs::read(p).map_err(|source| BootError::ReadInitrd { path: p.clone(), source }))
            .transpose()?;
        self.images = Some((kernel, initrd));
        Ok(())
    }

    /// The kernel's bytes and the initrd's (read now unless loaded).
    pub(crate) fn read_images(&self) -> Result<(Vec<u8>, Option<Vec<u8>>), LinuxError> {
        if let Some((k, i)) = &self.images {
            return Ok((k.clone(), i.clone()));
        }
        let path = &self.kernel;
        let kernel = std::fs::read(path).map_err(|source| BootError::ReadKernel { path: path.clone(), source })?;
        let initrd = self
            .initrd
            .as_ref()
            .map(|p| std::fs::read(p).map_err(|source| BootError::ReadInitrd { path: p.clone(), source }))
            .transpose()?;
        Ok((kernel, initrd))
    }
}

/// How the guest ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinuxExit {
    /// The guest powered off (ACPI S5).
    PowerOff,
    /// The guest reset the machine (i8042 reset line).
    Reset,
    /// The guest triple-faulted.
    TripleFault { rip: u64 },
    /// The time limit passed; `stuck` if the vCPU did not even stop.
    Timeout { limit: Duration, stuck: bool },
    /// The host's KVM could not emulate an instruction and stopped the
    /// guest (KVM_EXIT_INTERNAL_ERROR: nested KVM on these hosts stops
    /// Linux at its first emulated int3).
    KvmStopped { rip: u64 },
    /// The console sink stopped the guest: the variants diverged.
    Diverged,
}

impl LinuxExit {
    /// The VMM's exit status.
    pub fn status(&self) -> u8 {
        match self {
            LinuxExit::PowerOff => status::POWER_OFF,
            LinuxExit::Reset => status::RESET,
            LinuxExit::TripleFault { .. } => status::TRIPLE_FAULT,
            LinuxExit::Timeout { .. } => status::TIMEOUT,
            LinuxExit::KvmStopped { .. } => status::KVM_STOPPED,
            LinuxExit::Diverged => status::DIVERGED,
        }
    }
}

impl std::fmt::Display for LinuxExit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LinuxExit::PowerOff => write!(f, "the guest powered off"),
            LinuxExit::Reset => write!(f, "the guest reset the machine (i8042 reset)"),
            LinuxExit::TripleFault { rip } => {
                write!(f, "the guest triple-faulted near rip {rip:#x}")
            }
            LinuxExit::Timeout { limit, stuck } => {
                write!(f, "the guest was still running after the --timeout of {}s; stopped it", limit.as_secs_f64())?;
                if *stuck {
                    write!(f, " (its vCPU did not leave KVM_RUN)")?;
                }
                Ok(())
            }
            LinuxExit::Diverged => write!(f, "the variants diverged; the guest was stopped"),
            LinuxExit::KvmStopped { rip } => write!(
                f,
                "the host's KVM could not emulate an instruction of the guest at rip {rip:#x} and stopped it (KVM_EXIT_INTERNAL_ERROR; nested KVM cannot run unmodified Linux to the end)"
            ),
        }
    }
}

/// Why Linux mode could not boot or run the guest.
#[derive(Debug, thiserror::Error)]
pub enum LinuxError {
    #[error(transparent)]
    Boot(#[from] BootError),
    #[error("--memory {mib}M is too large for Linux mode: at most {max}M (guest memory must end below the 32-bit MMIO hole)", mib = .0 >> 20, max = MAX_LINUX_MEMORY >> 20)]
    MemoryTooLarge(u64),
    #[error(transparent)]
    Vm(#[from] VmError),
    #[error(transparent)]
    Device(#[from] DeviceError),
    #[error("setting up the vCPU: {0}")]
    Regs(#[from] regs::RegsError),
    #[error("setting up the vCPU's local APIC: {0}")]
    Lapic(kvm_ioctls::Error),
    #[error("writing the boot structures ({0}) into guest memory failed")]
    BootData(&'static str),
    #[error("writing the boot parameters: {0}")]
    Configurator(linux_loader::configurator::Error),
    #[error("cannot install the vCPU kick signal handler: {0}")]
    Signal(vmm_sys_util::errno::Error),
    #[error("cannot start the vCPU thread: {0}")]
    Thread(std::io::Error),
    #[error("running the guest: {0}")]
    Vcpu(#[from] VcpuError),
    #[error("the vCPU thread died")]
    VcpuThread,
    #[error("cluster: the kernel {path} has digest {have}, the cluster file says {want}")]
    KernelDigest { path: String, have: dmvx_sync::Digest, want: dmvx_sync::Digest },
    #[error("cluster: {0}")]
    Config(#[source] dmvx_sync::ConfigError),
    #[error("cluster: {0}")]
    Link(#[source] dmvx_sync::LinkError),
}

extern "C" fn kick_handler(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

/// What the vCPU thread reports.
type VcpuResult = (Result<GuestStop, VcpuError>, std::io::Result<()>);

/// Boots the kernel of `config` and runs it until it stops.
pub fn run(config: Config) -> Result<LinuxExit, LinuxError> {
    if config.memory > MAX_LINUX_MEMORY {
        return Err(LinuxError::MemoryTooLarge(config.memory));
    }
    let path = &config.kernel;
    let (bytes, initrd) = config.read_images()?;
    // Refuse what is not a kernel before touching KVM.
    boot::detect(path, &bytes)?;
    let initrd = match (&config.initrd, initrd) {
        (Some(p), Some(b)) => Some((p, b)),
        _ => None,
    };

    let vm = Vm::new(config.memory, MIN_MEMORY)?;
    let mem = vm.mem.clone();
    devices::create_irqchip_and_pit(&vm.fd)?;
    let kernel = boot::load_kernel(&mem, path, &bytes)?;
    drop(bytes);

    boot::check_cmdline(&kernel, &config.cmdline)?;
    let mut cmdline = config.cmdline.clone().into_bytes();
    cmdline.push(0);
    mem.write(CMDLINE_GPA, &cmdline).ok_or(LinuxError::BootData("command line"))?;
    let placement = match &initrd {
        Some((p, data)) => {
            let at = boot::place_initrd(&kernel, mem.size(), p, data.len() as u64)?;
            mem.write(at.addr, data).ok_or(LinuxError::BootData("initrd"))?;
            Some(at)
        }
        None => None,
    };
    drop(initrd);
    let rsdp = acpi::write_tables(&mem).ok_or(LinuxError::BootData("ACPI tables"))?;
    linux_boot::write_boot_tables(&mem).ok_or(LinuxError::BootData("GDT and page tables"))?;

    match kernel.kind {
        KernelKind::BzImage => {
            let hdr = kernel.setup_header.as_ref().expect("a bzImage has a header");
            let mut zp = linux_boot::zero_page(hdr, config.cmdline.len(), placement, mem.size());
            zp.acpi_rsdp_addr = rsdp;
            let params = BootParams::new(&zp, GuestAddress(ZERO_PAGE_GPA));
            LinuxBootConfigurator::write_bootparams(&params, mem.mmap()).map_err(LinuxError::Configurator)?;
        }
        KernelKind::PvhElf => {
            let (mut info, memmap, modules) = linux_boot::pvh_start_info(placement, mem.size());
            info.rsdp_paddr = rsdp;
            let mut params = BootParams::new(&info, GuestAddress(PVH_INFO_GPA));
            params.set_sections(&memmap, GuestAddress(PVH_MEMMAP_GPA));
            if !modules.is_empty() {
                params.set_modules(&modules, GuestAddress(PVH_MODLIST_GPA));
            }
            PvhBootConfigurator::write_bootparams(&params, mem.mmap()).map_err(LinuxError::Configurator)?;
        }
    }

    let mut vcpu = Vcpu::new(vm.fd.create_vcpu(0).map_err(VmError::CreateVcpu)?);
    regs::setup_cpuid(&vm.kvm, vcpu.fd())?;
    linux_boot::setup_lint(vcpu.fd()).map_err(LinuxError::Lapic)?;
    match kernel.kind {
        KernelKind::BzImage => linux_boot::setup_linux64(vcpu.fd(), kernel.entry)?,
        KernelKind::PvhElf => linux_boot::setup_pvh(vcpu.fd(), kernel.entry)?,
    }
    let stop = Latch::default();
    let mut devices = LinuxDevices::new(&vm.fd, config.sink, stop.clone(), config.sink_stop)?;

    register_signal_handler(SIGRTMIN(), kick_handler).map_err(LinuxError::Signal)?;
    let (tx, rx) = mpsc::channel::<VcpuResult>();
    let thread = std::thread::Builder::new()
        .name("vcpu0".into())
        .spawn(move || {
            crate::jail::filter_thread(crate::jail::Role::LinuxVcpu);
            let r = vcpu::run(&mut vcpu, &mut devices);
            let out = devices.finish();
            let _ = tx.send((r, out));
        })
        .map_err(LinuxError::Thread)?;

    let started = Instant::now();
    let deadline = config.timeout.map(|t| started + t);
    let mut monitor = config.monitor;
    let mut diverged;
    let result = loop {
        // With a monitor, wake up every MONITOR_PERIOD to run it.
        let mut wait = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        if monitor.is_some() {
            wait = Some(wait.map_or(MONITOR_PERIOD, |w| w.min(MONITOR_PERIOD)));
        }
        let got = match wait {
            None => rx.recv().map_err(|_| mpsc::RecvTimeoutError::Disconnected),
            Some(w) => rx.recv_timeout(w),
        };
        match got {
            Ok(r) => break Some(r),
            Err(mpsc::RecvTimeoutError::Disconnected) => break None,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        let timed_out = deadline.is_some_and(|d| Instant::now() >= d);
        diverged = !timed_out && monitor.as_mut().is_some_and(|m| m());
        if !timed_out && !diverged {
            continue;
        }
        // Ask the vCPU to stop, kicking it out of KVM_RUN until it does.
        stop.set();
        let give_up = Instant::now() + STOP_GRACE;
        let mut got = None;
        while Instant::now() < give_up {
            let _ = thread.kill(SIGRTMIN());
            match rx.recv_timeout(Duration::from_millis(20)) {
                Ok(r) => {
                    got = Some(r);
                    break;
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        let limit = config.timeout.unwrap_or_default();
        match got {
            Some((Ok(GuestStop::Stopped), _)) if diverged => return Ok(LinuxExit::Diverged),
            Some((Ok(GuestStop::Stopped), _)) => return Ok(LinuxExit::Timeout { limit, stuck: false }),
            Some(r) => break Some(r),
            None => {
                // The vCPU thread may still use guest memory: keep the VM
                // mapped until the process exits.
                std::mem::forget(vm);
                return Ok(if diverged { LinuxExit::Diverged } else { LinuxExit::Timeout { limit, stuck: true } });
            }
        }
    };
    let Some((result, output)) = result else {
        return Err(LinuxError::VcpuThread);
    };
    let _ = thread.join();
    if let Err(e) = output {
        log::warn!("writing the guest's serial output failed: {e}");
    }
    match result {
        Ok(GuestStop::PowerOff) => Ok(LinuxExit::PowerOff),
        Ok(GuestStop::Reset) => Ok(LinuxExit::Reset),
        Ok(GuestStop::TripleFault { rip }) => Ok(LinuxExit::TripleFault { rip }),
        Ok(GuestStop::Stopped) => Ok(LinuxExit::Timeout { limit: config.timeout.unwrap_or_default(), stuck: false }),
        Ok(GuestStop::SinkStopped) => Ok(LinuxExit::Diverged),
        Err(VcpuError::Internal { rip, .. }) => Ok(LinuxExit::KvmStopped { rip }),
        Err(e) => Err(e.into()),
    }
}
