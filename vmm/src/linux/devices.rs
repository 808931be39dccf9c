//! The legacy PC devices of a Linux-mode VM and the exit handler that
//! routes port I/O to them.
//!
//! KVM emulates the interrupt controllers (8259 PICs, IOAPIC, local APIC)
//! and the 8254 PIT in the kernel; the VMM emulates COM1 (vm-superio 8250,
//! interrupt through an irqfd), the i8042's reset line (vm-superio), the
//! ACPI PM1 registers (for power-off), and answers reads of absent devices
//! as a PC bus does.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use kvm_bindings::{kvm_pit_config, KVM_PIT_SPEAKER_DUMMY};
use kvm_ioctls::VmFd;
use vm_superio::{I8042Device, Trigger};
use vmm_sys_util::eventfd::EventFd;

use super::serial::{SerialPort, SerialSink, COM1_BASE, COM1_IRQ, COM1_PORTS};
use crate::arch::x86_64::acpi;
use crate::vstate::vcpu::{ExitHandler, Flow, Vcpu, VcpuError};

/// The i8042 keyboard controller's data and command ports.
pub const I8042_DATA: u16 = 0x60;
pub const I8042_COMMAND: u16 = 0x64;
/// CMOS/RTC index and data ports: read as zero (no RTC; "no update in
/// progress"), so the guest's clock code does not spin or warn.
const CMOS_PORTS: [u16; 2] = [0x70, 0x71];
/// Where KVM keeps the real-mode TSS it needs on Intel (three pages below
/// the 4 GiB boundary, inside the MMIO hole, like other VMMs).
const KVM_TSS_ADDRESS: usize = 0xfffb_d000;

/// Errors of device setup.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("cannot set KVM's TSS address: {0}")]
    TssAddress(kvm_ioctls::Error),
    #[error("cannot create the in-kernel interrupt controllers (KVM_CREATE_IRQCHIP): {0}")]
    IrqChip(kvm_ioctls::Error),
    #[error("cannot create the in-kernel PIT (KVM_CREATE_PIT2): {0}")]
    Pit(kvm_ioctls::Error),
    #[error("cannot create an eventfd for the serial interrupt: {0}")]
    EventFd(std::io::Error),
    #[error("cannot connect the serial interrupt to IRQ {COM1_IRQ} (KVM_IRQFD): {0}")]
    Irqfd(kvm_ioctls::Error),
}

/// Creates the in-kernel irqchip and PIT. Must run before the vCPU exists.
pub fn create_irqchip_and_pit(vm: &VmFd) -> Result<(), DeviceError> {
    vm.set_tss_address(KVM_TSS_ADDRESS).map_err(DeviceError::TssAddress)?;
    vm.create_irq_chip().map_err(DeviceError::IrqChip)?;
    let pit = kvm_pit_config { flags: KVM_PIT_SPEAKER_DUMMY, ..Default::default() };
    vm.create_pit2(pit).map_err(DeviceError::Pit)
}

/// A level that a device raises once and the run loop reads.
#[derive(Debug, Clone, Default)]
pub struct Latch(Arc<AtomicBool>);

impl Latch {
    pub fn set(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

impl Trigger for Latch {
    type E = std::convert::Infallible;
    fn trigger(&self) -> Result<(), Self::E> {
        self.set();
        Ok(())
    }
}

/// Why the guest stopped running.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuestStop {
    /// The guest wrote the power-off command.
    PowerOff,
    /// The guest pulsed the CPU reset line through the i8042.
    Reset,
    /// A triple fault (KVM_EXIT_SHUTDOWN), near `rip`.
    TripleFault { rip: u64 },
    /// The run loop was told to stop (the time limit).
    Stopped,
    /// The serial sink stopped the guest (the variants diverged).
    SinkStopped,
}

/// Routes a Linux guest's exits to the devices.
pub struct LinuxDevices {
    serial: SerialPort,
    i8042: I8042Device<Latch>,
    reset: Latch,
    /// The PM1a control register (SCI_EN always set: ACPI mode).
    pm1_control: u16,
    /// Set by the watchdog; checked when KVM_RUN is interrupted.
    stop: Latch,
    /// Set by the serial sink; checked after each serial write.
    sink_stop: Option<Latch>,
}

impl LinuxDevices {
    /// COM1 wired to `sink` with its interrupt on IRQ 4, the i8042, and
    /// the ACPI PM1 registers. `stop` is the watchdog's stop request.
    pub fn new(
        vm: &VmFd,
        sink: Box<dyn SerialSink>,
        stop: Latch,
        sink_stop: Option<Latch>,
    ) -> Result<Self, DeviceError> {
        let irq = EventFd::new(libc::EFD_NONBLOCK).map_err(DeviceError::EventFd)?;
        vm.register_irqfd(&irq, COM1_IRQ).map_err(DeviceError::Irqfd)?;
        let reset = Latch::default();
        Ok(LinuxDevices {
            serial: SerialPort::new(irq, sink),
            i8042: I8042Device::new(reset.clone()),
            reset,
            pm1_control: acpi::PM1_SCI_EN,
            stop,
            sink_stop,
        })
    }

    /// Flushes the serial output.
    pub fn finish(&mut self) -> std::io::Result<()> {
        self.serial.finish()
    }

    fn com1_offset(port: u16) -> Option<u8> {
        port.checked_sub(COM1_BASE).filter(|&o| o < COM1_PORTS).map(|o| o as u8)
    }
}

impl ExitHandler for LinuxDevices {
    type Done = GuestStop;

    fn io_out(&mut self, _vcpu: &mut Vcpu, port: u16, data: &[u8]) -> Result<Flow<GuestStop>, VcpuError> {
        let Some(&value) = data.first() else {
            return Ok(Flow::Continue);
        };
        let wide = u16::from_le_bytes([value, data.get(1).copied().unwrap_or(0)]);
        if let Some(off) = Self::com1_offset(port) {
            // Output errors (stdout closed) are kept by the sink and
            // reported at the end; the guest goes on.
            let _ = self.serial.write(off, value);
            if self.sink_stop.as_ref().is_some_and(Latch::is_set) {
                return Ok(Flow::Done(GuestStop::SinkStopped));
            }
        } else if port == I8042_DATA || port == I8042_COMMAND {
            let _ = self.i8042.write((port - I8042_DATA) as u8, value);
            if self.reset.is_set() {
                return Ok(Flow::Done(GuestStop::Reset));
            }
        } else if port == acpi::PM1A_CNT_PORT {
            if acpi::requests_power_off(port, wide) {
                return Ok(Flow::Done(GuestStop::PowerOff));
            }
            self.pm1_control = wide | acpi::PM1_SCI_EN;
        }
        // Everything else (POST codes on 0x80, probes of absent devices)
        // is ignored, as on a PC bus.
        Ok(Flow::Continue)
    }

    fn io_in(&mut self, port: u16, data: &mut [u8]) {
        if let Some(off) = Self::com1_offset(port) {
            data.fill(0);
            data[0] = self.serial.read(off);
        } else if port == I8042_DATA || port == I8042_COMMAND {
            data.fill(0);
            data[0] = self.i8042.read((port - I8042_DATA) as u8);
        } else if port == acpi::PM1A_CNT_PORT {
            let v = self.pm1_control.to_le_bytes();
            for (d, b) in data.iter_mut().zip(v.iter().chain(std::iter::repeat(&0))) {
                *d = *b;
            }
        } else if CMOS_PORTS.contains(&port) || acpi::is_pm1_port(port) {
            data.fill(0);
        } else {
            data.fill(0xff);
        }
    }

    fn mmio_write(&mut self, _vcpu: &mut Vcpu, _addr: u64, _data: &[u8]) -> Result<Flow<GuestStop>, VcpuError> {
        // No MMIO devices: writes to unbacked addresses go nowhere.
        Ok(Flow::Continue)
    }

    fn hlt(&mut self, _vcpu: &mut Vcpu) -> Result<Flow<GuestStop>, VcpuError> {
        // With the in-kernel local APIC KVM handles hlt itself.
        Ok(Flow::Continue)
    }

    fn shutdown(&mut self, vcpu: &mut Vcpu) -> Result<Flow<GuestStop>, VcpuError> {
        let rip = vcpu.regs().rip;
        Ok(Flow::Done(GuestStop::TripleFault { rip }))
    }

    fn interrupted(&mut self, _vcpu: &mut Vcpu) -> Result<Flow<GuestStop>, VcpuError> {
        Ok(if self.stop.is_set() { Flow::Done(GuestStop::Stopped) } else { Flow::Continue })
    }
}
