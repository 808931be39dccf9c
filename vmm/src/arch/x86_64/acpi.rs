//! Minimal ACPI tables for a Linux guest: RSDP, XSDT, FADT (with FACS and
//! a DSDT holding only the `\_S5` sleep package), and a MADT describing one
//! local APIC and the IOAPIC of KVM's in-kernel irqchip.
//!
//! Their one job beyond the interrupt topology is power-off: Linux enters
//! ACPI S5 by writing SLP_TYP=5 with SLP_EN to the PM1a control port, which
//! the VMM turns into a clean exit. The PM1 block is the only ACPI hardware
//! dmvx emulates (no SCI is ever raised, no PM timer, no GPEs).

use crate::memory::GuestMemory;

/// Where the tables live: in the BIOS area, reserved in the e820 map.
pub const ACPI_GPA: u64 = 0xe_0000;
/// The RSDP is first, so the legacy scan of 0xe0000-0xfffff finds it too.
pub const RSDP_GPA: u64 = ACPI_GPA;
const XSDT_GPA: u64 = ACPI_GPA + 0x40;
const FACS_GPA: u64 = ACPI_GPA + 0x100; // 64-byte aligned
const FADT_GPA: u64 = ACPI_GPA + 0x200;
const MADT_GPA: u64 = ACPI_GPA + 0x400;
const DSDT_GPA: u64 = ACPI_GPA + 0x600;

/// PM1a event block (status, enable): 4 ports.
pub const PM1A_EVT_PORT: u16 = 0x600;
/// PM1a control block: 2 ports.
pub const PM1A_CNT_PORT: u16 = 0x604;
/// The SCI's ISA interrupt (never raised).
const SCI_IRQ: u16 = 9;
/// The sleep type dmvx's `\_S5` package names.
const S5_SLP_TYP: u16 = 5;
/// PM1 control bits.
pub const PM1_SCI_EN: u16 = 1 << 0;
const PM1_SLP_TYP_SHIFT: u16 = 10;
const PM1_SLP_EN: u16 = 1 << 13;

const LOCAL_APIC_GPA: u32 = 0xfee0_0000;
const IOAPIC_GPA: u32 = 0xfec0_0000;

const OEM_ID: &[u8; 6] = b"DMVX  ";
const OEM_TABLE_ID: &[u8; 8] = b"DMVXVMM ";

/// Whether `port` is in the PM1a blocks the VMM emulates.
pub fn is_pm1_port(port: u16) -> bool {
    (PM1A_EVT_PORT..PM1A_EVT_PORT + 4).contains(&port) || (PM1A_CNT_PORT..PM1A_CNT_PORT + 2).contains(&port)
}

/// Whether a write of `value` to the PM1a control port enters S5 (soft off).
pub fn requests_power_off(port: u16, value: u16) -> bool {
    port == PM1A_CNT_PORT && value & PM1_SLP_EN != 0 && (value >> PM1_SLP_TYP_SHIFT) & 7 == S5_SLP_TYP
}

fn checksum(bytes: &[u8]) -> u8 {
    0u8.wrapping_sub(bytes.iter().fold(0u8, |a, &b| a.wrapping_add(b)))
}

/// A system description table: header plus `body`, checksummed.
fn sdt(signature: &[u8; 4], revision: u8, body: &[u8]) -> Vec<u8> {
    let len = 36 + body.len();
    let mut t = Vec::with_capacity(len);
    t.extend_from_slice(signature);
    t.extend_from_slice(&(len as u32).to_le_bytes());
    t.push(revision);
    t.push(0); // checksum, below
    t.extend_from_slice(OEM_ID);
    t.extend_from_slice(OEM_TABLE_ID);
    t.extend_from_slice(&1u32.to_le_bytes()); // OEM revision
    t.extend_from_slice(b"DMVX"); // creator id
    t.extend_from_slice(&1u32.to_le_bytes()); // creator revision
    t.extend_from_slice(body);
    t[9] = checksum(&t);
    t
}

fn put(buf: &mut [u8], off: usize, bytes: &[u8]) {
    buf[off..off + bytes.len()].copy_from_slice(bytes);
}

fn rsdp() -> Vec<u8> {
    let mut r = vec![0u8; 36];
    put(&mut r, 0, b"RSD PTR ");
    put(&mut r, 9, OEM_ID);
    r[15] = 2; // revision: ACPI 2.0+, with an XSDT
    put(&mut r, 20, &36u32.to_le_bytes());
    put(&mut r, 24, &XSDT_GPA.to_le_bytes());
    r[8] = checksum(&r[..20]);
    r[32] = checksum(&r);
    r
}

fn fadt() -> Vec<u8> {
    // Offsets are those of the FADT, minus its 36-byte header.
    let mut b = vec![0u8; 276 - 36];
    let h = |off: usize| off - 36;
    // FIRMWARE_CTRL stays 0: X_FIRMWARE_CTRL below names the FACS.
    put(&mut b, h(40), &(DSDT_GPA as u32).to_le_bytes());
    put(&mut b, h(46), &SCI_IRQ.to_le_bytes());
    // SMI_CMD 0: always in ACPI mode, no transition.
    put(&mut b, h(56), &(PM1A_EVT_PORT as u32).to_le_bytes());
    put(&mut b, h(64), &(PM1A_CNT_PORT as u32).to_le_bytes());
    b[h(88)] = 4; // PM1_EVT_LEN
    b[h(89)] = 2; // PM1_CNT_LEN
    put(&mut b, h(96), &101u16.to_le_bytes()); // no C2
    put(&mut b, h(98), &1001u16.to_le_bytes()); // no C3
                                                // IAPC_BOOT_ARCH: legacy devices, an 8042, no VGA, no CMOS RTC.
    put(&mut b, h(109), &(1u16 | 1 << 1 | 1 << 2 | 1 << 5).to_le_bytes());
    // Flags: WBINVD, power and sleep buttons absent as fixed features.
    put(&mut b, h(112), &(1u32 | 1 << 4 | 1 << 5).to_le_bytes());
    put(&mut b, h(132), &FACS_GPA.to_le_bytes());
    put(&mut b, h(140), &DSDT_GPA.to_le_bytes());
    put(&mut b, h(268), b"DMVXVMM\0");
    sdt(b"FACP", 6, &b)
}

fn facs() -> Vec<u8> {
    let mut f = vec![0u8; 64];
    put(&mut f, 0, b"FACS");
    put(&mut f, 4, &64u32.to_le_bytes());
    f[32] = 2; // version
    f
}

fn dsdt() -> Vec<u8> {
    // AML: Name (_S5, Package (4) { 5, 5, 0, 0 })
    let s5 = [0x08, b'_', b'S', b'5', b'_', 0x12, 0x08, 0x04, 0x0a, 0x05, 0x0a, 0x05, 0x00, 0x00];
    sdt(b"DSDT", 2, &s5)
}

fn madt() -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&LOCAL_APIC_GPA.to_le_bytes());
    b.extend_from_slice(&1u32.to_le_bytes()); // PCAT_COMPAT: there are 8259s
                                              // Processor local APIC: uid 0, APIC id 0, enabled.
    b.extend_from_slice(&[0, 8, 0, 0]);
    b.extend_from_slice(&1u32.to_le_bytes());
    // I/O APIC: id 1, at IOAPIC_GPA, GSIs from 0.
    b.extend_from_slice(&[1, 12, 1, 0]);
    b.extend_from_slice(&IOAPIC_GPA.to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes());
    sdt(b"APIC", 5, &b)
}

fn xsdt() -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&FADT_GPA.to_le_bytes());
    b.extend_from_slice(&MADT_GPA.to_le_bytes());
    sdt(b"XSDT", 1, &b)
}

/// Writes every table; returns the RSDP's address.
pub fn write_tables(mem: &GuestMemory) -> Option<u64> {
    mem.write(RSDP_GPA, &rsdp())?;
    mem.write(XSDT_GPA, &xsdt())?;
    mem.write(FACS_GPA, &facs())?;
    mem.write(FADT_GPA, &fadt())?;
    mem.write(MADT_GPA, &madt())?;
    mem.write(DSDT_GPA, &dsdt())?;
    Some(RSDP_GPA)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sums_to_zero(b: &[u8]) -> bool {
        b.iter().fold(0u8, |a, &x| a.wrapping_add(x)) == 0
    }

    #[test]
    fn tables_are_checksummed_and_fit_their_slots() {
        let r = rsdp();
        assert!(sums_to_zero(&r[..20]) && sums_to_zero(&r));
        for (t, slot) in [
            (xsdt(), FACS_GPA - XSDT_GPA),
            (fadt(), MADT_GPA - FADT_GPA),
            (madt(), DSDT_GPA - MADT_GPA),
            (dsdt(), 0x100),
        ] {
            assert!(sums_to_zero(&t), "{:?}", &t[..4]);
            assert_eq!(u32::from_le_bytes(t[4..8].try_into().unwrap()) as usize, t.len());
            assert!(t.len() as u64 <= slot);
        }
        assert_eq!(fadt().len(), 276);
        assert!(facs().len() as u64 <= FADT_GPA - FACS_GPA);
    }

    #[test]
    fn only_s5_with_slp_en_powers_off() {
        assert!(requests_power_off(PM1A_CNT_PORT, 5 << 10 | 1 << 13));
        assert!(requests_power_off(PM1A_CNT_PORT, 5 << 10 | 1 << 13 | 1));
        assert!(!requests_power_off(PM1A_CNT_PORT, 5 << 10));
        assert!(!requests_power_off(PM1A_CNT_PORT, 3 << 10 | 1 << 13));
        assert!(!requests_power_off(PM1A_EVT_PORT, 5 << 10 | 1 << 13));
        assert!(is_pm1_port(0x605) && !is_pm1_port(0x606));
    }
}
