//! The structures the VMM writes to the program in the kernel's x86-64
//! layout, byte by byte: their fields where the kernel has them, and zero
//! in every padding byte (never VMM memory, the same in every variant).

use std::mem::{offset_of, size_of};

use super::fd::KERNEL_TERMIOS_SIZE;
use super::proc::{sysinfo_bytes, SYSINFO_SIZE};

#[test]
fn sysinfo_fields_lie_at_the_kernels_offsets() {
    // libc's struct sysinfo is the kernel's on x86-64.
    assert_eq!(size_of::<libc::sysinfo>(), SYSINFO_SIZE);
    let b = sysinfo_bytes(0x1122_3344_5566_7788, 0x0102_0304_0506_0708, 0x1a2b_3c4d_5e6f_7081);
    let u64_at = |off: usize| u64::from_le_bytes(b[off..off + 8].try_into().expect("8 bytes"));
    assert_eq!(u64_at(offset_of!(libc::sysinfo, uptime)), 0x1122_3344_5566_7788);
    assert_eq!(u64_at(offset_of!(libc::sysinfo, totalram)), 0x0102_0304_0506_0708);
    assert_eq!(u64_at(offset_of!(libc::sysinfo, freeram)), 0x1a2b_3c4d_5e6f_7081);
    let procs = offset_of!(libc::sysinfo, procs);
    assert_eq!(u16::from_le_bytes([b[procs], b[procs + 1]]), 1);
    let unit = offset_of!(libc::sysinfo, mem_unit);
    assert_eq!(u32::from_le_bytes(b[unit..unit + 4].try_into().expect("4 bytes")), 1, "sizes are in bytes");
    // Every other byte (loads, shared/buffer/swap/high memory, the pad
    // field, the implicit padding after it and at the end) is zero.
    let ram = [offset_of!(libc::sysinfo, totalram), offset_of!(libc::sysinfo, freeram)];
    let written = [(offset_of!(libc::sysinfo, uptime), 8), (ram[0], 8), (ram[1], 8), (procs, 2), (unit, 4)];
    for (i, &byte) in b.iter().enumerate() {
        if !written.iter().any(|&(o, n)| (o..o + n).contains(&i)) {
            assert_eq!(byte, 0, "byte {i} of struct sysinfo");
        }
    }
}

#[test]
fn the_host_kernels_sysinfo_is_that_size() {
    // The host kernel writes exactly its struct sysinfo: nothing beyond.
    let mut buf = [0xaau8; SYSINFO_SIZE + 16];
    // SAFETY: buf is larger than the struct sysinfo the call writes.
    let r = unsafe { libc::sysinfo(buf.as_mut_ptr().cast()) };
    assert_eq!(r, 0, "sysinfo: {}", std::io::Error::last_os_error());
    assert!(buf[SYSINFO_SIZE..].iter().all(|&c| c == 0xaa), "the kernel wrote beyond {SYSINFO_SIZE} bytes");
    let unit = offset_of!(libc::sysinfo, mem_unit);
    assert_ne!(u32::from_le_bytes(buf[unit..unit + 4].try_into().expect("4 bytes")), 0xaaaa_aaaa);
}

#[test]
fn kernel_termios_is_glibcs_without_the_speeds() {
    // struct termios of the kernel: four u32 flags, c_line, c_cc[19]; no
    // padding. glibc's has 32 control characters and two speeds after.
    assert_eq!(offset_of!(libc::termios, c_iflag), 0);
    assert_eq!(offset_of!(libc::termios, c_oflag), 4);
    assert_eq!(offset_of!(libc::termios, c_cflag), 8);
    assert_eq!(offset_of!(libc::termios, c_lflag), 12);
    assert_eq!(offset_of!(libc::termios, c_line), 16);
    assert_eq!(offset_of!(libc::termios, c_cc), 17);
    assert_eq!(KERNEL_TERMIOS_SIZE, 17 + 19);
    assert!(size_of::<libc::termios>() > KERNEL_TERMIOS_SIZE);
}

#[test]
fn the_host_kernels_tcgets_writes_kernel_termios_size() {
    // SAFETY: plain call; the descriptor is closed below.
    let fd = unsafe { libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY) };
    if fd < 0 {
        eprintln!("SKIPPED: no pseudo-terminal on this host ({})", std::io::Error::last_os_error());
        return;
    }
    let mut buf = [0xaau8; 64];
    // SAFETY: fd is a terminal; buf is larger than the termios TCGETS writes.
    let r = unsafe { libc::ioctl(fd, libc::TCGETS, buf.as_mut_ptr()) };
    let err = std::io::Error::last_os_error();
    // SAFETY: fd was opened above and is not used after.
    unsafe { libc::close(fd) };
    assert_eq!(r, 0, "TCGETS: {err}");
    assert!(buf[KERNEL_TERMIOS_SIZE..].iter().all(|&c| c == 0xaa), "TCGETS wrote beyond {KERNEL_TERMIOS_SIZE} bytes");
    assert_ne!(buf[KERNEL_TERMIOS_SIZE - 1], 0xaa, "TCGETS wrote the last control character");
}
