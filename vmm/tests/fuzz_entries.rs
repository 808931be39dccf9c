//! The fuzz targets' entry functions (`dmvx_vmm::fuzz_entry`, run by
//! `fuzz/` under libFuzzer on nightly) on stable: the ELF parser and the
//! Linux kernel detection over a few thousand seeded pseudo-random and
//! mutated valid images. No input may panic, and the valid images must
//! still be accepted, so a parser that refuses everything fails here too.

use dmvx_sync::fuzz_entry::Rng;
use dmvx_vmm::fuzz_entry;
use dmvx_vmm::fuzz_entry::KernelKind;

/// `v` with a few header bytes overwritten (mostly within the first
/// 0x280 bytes, where the ELF and setup headers live), or truncated.
fn mutate(rng: &mut Rng, v: &[u8]) -> Vec<u8> {
    let mut m = v.to_vec();
    for _ in 0..=rng.below(4) {
        let span = if rng.below(4) == 0 { m.len() } else { m.len().min(0x280) };
        match rng.below(5) {
            0 => {
                let n = rng.below(m.len() + 1);
                m.truncate(n);
            }
            1 if !m.is_empty() => {
                let (i, bit) = (rng.below(span), rng.below(8));
                m[i] ^= 1 << bit;
            }
            2 if m.len() >= 8 => {
                // A whole field: a random, zero or all-ones 64-bit value.
                let i = rng.below(span.saturating_sub(7));
                let v = [rng.next(), 0, u64::MAX, 1 << 63][rng.below(4)];
                m[i..i + 8].copy_from_slice(&v.to_le_bytes());
            }
            _ if !m.is_empty() => {
                let i = rng.below(span);
                m[i] = [0, 0xff, 0x7f, 0x80, rng.next() as u8][rng.below(5)];
            }
            _ => {}
        }
    }
    m
}

fn put(b: &mut [u8], at: usize, v: &[u8]) {
    b[at..at + v.len()].copy_from_slice(v);
}

/// A small PVH ELF kernel: one PT_LOAD segment, a PT_NOTE holding the Xen
/// PHYS32_ENTRY note, and a section table with its string table.
fn pvh_elf() -> Vec<u8> {
    const BASE: u64 = 0x100_0000;
    let mut b = vec![0u8; 0x200];
    put(&mut b, 0, b"\x7fELF\x02\x01\x01");
    put(&mut b, 16, &2u16.to_le_bytes()); // ET_EXEC
    put(&mut b, 18, &62u16.to_le_bytes()); // EM_X86_64
    put(&mut b, 20, &1u32.to_le_bytes());
    put(&mut b, 24, &BASE.to_le_bytes()); // e_entry
    put(&mut b, 32, &64u64.to_le_bytes()); // e_phoff
    put(&mut b, 40, &0x100u64.to_le_bytes()); // e_shoff
    put(&mut b, 52, &64u16.to_le_bytes());
    put(&mut b, 54, &56u16.to_le_bytes());
    put(&mut b, 56, &2u16.to_le_bytes()); // e_phnum
    put(&mut b, 58, &64u16.to_le_bytes());
    put(&mut b, 60, &2u16.to_le_bytes()); // e_shnum
    put(&mut b, 62, &1u16.to_le_bytes()); // e_shstrndx
    let len = b.len() as u64;
    // PT_LOAD of the whole file at BASE.
    let ph = 64;
    put(&mut b, ph, &1u32.to_le_bytes());
    put(&mut b, ph + 4, &5u32.to_le_bytes());
    put(&mut b, ph + 16, &BASE.to_le_bytes());
    put(&mut b, ph + 24, &BASE.to_le_bytes());
    put(&mut b, ph + 32, &len.to_le_bytes());
    put(&mut b, ph + 40, &(len + 0x1000).to_le_bytes());
    put(&mut b, ph + 48, &0x1000u64.to_le_bytes());
    // PT_NOTE at 0xb0: namesz 4, descsz 4, type 18, "Xen\0", the entry.
    let ph = 64 + 56;
    put(&mut b, ph, &4u32.to_le_bytes());
    put(&mut b, ph + 8, &0xb0u64.to_le_bytes());
    put(&mut b, ph + 32, &20u64.to_le_bytes());
    put(&mut b, ph + 40, &20u64.to_le_bytes());
    put(&mut b, 0xb0, &4u32.to_le_bytes());
    put(&mut b, 0xb4, &4u32.to_le_bytes());
    put(&mut b, 0xb8, &18u32.to_le_bytes());
    put(&mut b, 0xbc, b"Xen\0");
    put(&mut b, 0xc0, &(BASE as u32).to_le_bytes());
    // Section 1: .shstrtab at 0xd0 ("\0.shstrtab\0").
    put(&mut b, 0xd0, b"\0.shstrtab\0");
    let sh = 0x100 + 64;
    put(&mut b, sh, &1u32.to_le_bytes());
    put(&mut b, sh + 4, &3u32.to_le_bytes());
    put(&mut b, sh + 24, &0xd0u64.to_le_bytes());
    put(&mut b, sh + 32, &11u64.to_le_bytes());
    b
}

/// A synthetic bzImage (boot protocol 2.15, 64-bit entry) with `payload`
/// bytes of code after one setup sector.
fn bzimage(payload: usize) -> Vec<u8> {
    let mut b = vec![0u8; 1024 + payload];
    b[0x1f1] = 1; // setup_sects
    put(&mut b, 0x1f4, &((payload / 16) as u32).to_le_bytes()); // syssize
    put(&mut b, 0x1fe, &0xaa55u16.to_le_bytes());
    put(&mut b, 0x202, b"HdrS");
    put(&mut b, 0x206, &0x020fu16.to_le_bytes());
    b[0x211] = 1; // loadflags: LOADED_HIGH
    put(&mut b, 0x214, &0x10_0000u32.to_le_bytes());
    put(&mut b, 0x22c, &0x7fff_ffffu32.to_le_bytes());
    put(&mut b, 0x236, &1u16.to_le_bytes()); // xloadflags: XLF_KERNEL_64
    put(&mut b, 0x238, &2047u32.to_le_bytes());
    put(&mut b, 0x260, &0x10_0000u32.to_le_bytes()); // init_size
    b
}

/// Runs `f` over every seed, its truncations, mutations and random buffers.
fn exercise<T>(seeds: &[Vec<u8>], salt: u64, mut f: impl FnMut(&[u8]) -> T) {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ salt);
    for s in seeds {
        for cut in (0..s.len().min(0x300)).step_by(3) {
            f(&s[..cut]);
        }
    }
    for _ in 0..3000 {
        let s = &seeds[rng.below(seeds.len())];
        let m = mutate(&mut rng, s);
        f(&m);
    }
    for _ in 0..500 {
        let n = rng.below(700);
        let mut v: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
        // Half of them with a valid magic, to get past the first check.
        if rng.below(2) == 0 && v.len() > 0x206 {
            put(&mut v, 0, b"\x7fELF\x02\x01");
            put(&mut v, 0x202, b"HdrS");
        }
        f(&v);
    }
}

#[test]
fn elf_entry_never_panics_and_accepts_valid_input() {
    let seeds = [pvh_elf(), fuzz_entry::EMBEDDED.to_vec()];
    for (i, s) in seeds.iter().enumerate() {
        assert!(fuzz_entry::elf(s), "valid ELF seed {i} was refused");
    }
    let mut n = 0;
    exercise(&seeds[..1], 1, |d| n += usize::from(fuzz_entry::elf(d)));
    assert!(n > 0, "no mutated ELF was accepted");
}

#[test]
fn bzimage_entry_never_panics_and_accepts_valid_input() {
    assert_eq!(fuzz_entry::bzimage(&bzimage(4096)), Some(KernelKind::BzImage));
    assert_eq!(fuzz_entry::bzimage(&pvh_elf()), Some(KernelKind::PvhElf));
    // An ELF that also has "HdrS" at 0x202 is an ELF (found by libFuzzer
    // against a wrong invariant in the entry function).
    let mut both = pvh_elf();
    both.resize(0x300, 0);
    put(&mut both, 0x202, b"HdrS");
    assert_eq!(fuzz_entry::bzimage(&both), Some(KernelKind::PvhElf));
    // The dmvx guest kernel is an ELF, but not a Linux kernel.
    assert_eq!(fuzz_entry::bzimage(fuzz_entry::EMBEDDED), None);
    let seeds = vec![bzimage(4096), pvh_elf()];
    let (mut bz, mut pvh) = (0, 0);
    exercise(&seeds, 2, |d| match fuzz_entry::bzimage(d) {
        Some(KernelKind::BzImage) => bz += 1,
        Some(KernelKind::PvhElf) => pvh += 1,
        None => {}
    });
    assert!(bz > 0 && pvh > 0, "mutated kernels accepted: {bz} bzImages, {pvh} PVH ELFs");
}

/// Writes the seeds for `fuzz/` when asked (`DMVX_WRITE_FUZZ_SEEDS=dir`).
#[test]
fn write_seeds_when_asked() {
    let Some(dir) = std::env::var_os("DMVX_WRITE_FUZZ_SEEDS") else {
        return;
    };
    let dir = std::path::PathBuf::from(dir);
    for (target, seeds) in [("elf", vec![pvh_elf()]), ("bzimage", vec![bzimage(4096), pvh_elf()])] {
        let d = dir.join(target);
        std::fs::create_dir_all(&d).unwrap();
        for (i, s) in seeds.iter().enumerate() {
            std::fs::write(d.join(format!("seed-{i}")), s).unwrap();
        }
    }
}
