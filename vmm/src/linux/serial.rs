//! The 8250 UART at COM1 (vm-superio), its interrupt, and where its output
//! goes.
//!
//! Everything the guest transmits is handed, in order, to a [`SerialSink`].
//! Today that is the VMM's stdout; in multi-variant Linux mode the MVX
//! engine will plug in a sink that compares each variant's stream.

use std::io::{self, Write};

use vm_superio::{Serial, Trigger};
use vmm_sys_util::eventfd::EventFd;

/// The first I/O port of COM1 and its eight registers.
pub const COM1_BASE: u16 = 0x3f8;
pub const COM1_PORTS: u16 = 8;
/// COM1's ISA interrupt line.
pub const COM1_IRQ: u32 = 4;

/// Receives the guest's serial output.
pub trait SerialSink: Send {
    /// Bytes the guest transmitted, in order.
    fn output(&mut self, bytes: &[u8]) -> io::Result<()>;
    /// The guest stopped: nothing more will come.
    fn finish(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A sink that writes to the VMM's stdout, flushing at each line end.
#[derive(Debug, Default)]
pub struct StdoutSink;

impl SerialSink for StdoutSink {
    fn output(&mut self, bytes: &[u8]) -> io::Result<()> {
        let mut out = io::stdout().lock();
        out.write_all(bytes)?;
        if bytes.contains(&b'\n') {
            out.flush()?;
        }
        Ok(())
    }

    fn finish(&mut self) -> io::Result<()> {
        io::stdout().flush()
    }
}

/// Adapts a sink to the `Write` the UART model wants, remembering the
/// first error (the guest must not stop because stdout is closed).
pub struct SinkWriter {
    sink: Box<dyn SerialSink>,
    error: Option<io::Error>,
}

impl Write for SinkWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.error.is_none() {
            if let Err(e) = self.sink.output(buf) {
                self.error = Some(e);
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Raises the UART's interrupt through a KVM irqfd.
pub struct IrqTrigger(pub EventFd);

impl Trigger for IrqTrigger {
    type E = io::Error;
    fn trigger(&self) -> io::Result<()> {
        self.0.write(1)
    }
}

/// COM1: the UART model and its sink.
pub struct SerialPort {
    uart: Serial<IrqTrigger, vm_superio::serial::NoEvents, SinkWriter>,
}

impl SerialPort {
    pub fn new(irq: EventFd, sink: Box<dyn SerialSink>) -> Self {
        SerialPort { uart: Serial::new(IrqTrigger(irq), SinkWriter { sink, error: None }) }
    }

    /// A guest write to register `offset`.
    pub fn write(&mut self, offset: u8, value: u8) -> io::Result<()> {
        self.uart.write(offset, value).map_err(|e| io::Error::other(format!("{e:?}")))
    }

    /// A guest read of register `offset`.
    pub fn read(&mut self, offset: u8) -> u8 {
        self.uart.read(offset)
    }

    /// Flushes the sink; returns the first output error, if any.
    pub fn finish(&mut self) -> io::Result<()> {
        let w = self.uart.writer_mut();
        if let Some(e) = w.error.take() {
            return Err(e);
        }
        w.sink.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    struct Capture(Arc<Mutex<Vec<u8>>>);
    impl SerialSink for Capture {
        fn output(&mut self, bytes: &[u8]) -> io::Result<()> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(())
        }
    }

    #[test]
    fn transmitted_bytes_reach_the_sink_and_raise_the_interrupt() {
        let got = Arc::new(Mutex::new(Vec::new()));
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let mut port = SerialPort::new(irq.try_clone().unwrap(), Box::new(Capture(got.clone())));
        port.write(1, 0x02).unwrap(); // IER: THR empty interrupt on
        for &b in b"hi\n" {
            port.write(0, b).unwrap();
        }
        assert_eq!(&*got.lock().unwrap(), b"hi\n");
        assert!(irq.read().unwrap() >= 1);
        // LSR: transmitter empty.
        assert_ne!(port.read(5) & 0x60, 0);
        port.finish().unwrap();
    }
}
