//! Table-wide tests: every row of the syscall table, by what its fields
//! and class rule read, normalises diversified variants alike and records
//! every input it reads; and no row panics on arbitrary guest input.

use super::*;

/// What a table row makes of one argument.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Unused,
    /// Read only by the class rule (kept equal, never perturbed).
    ClassOnly,
    Int,
    Fd,
    /// The flags of a creating open (the mode counts then).
    CreateFlags,
    Len,
    Count,
    Path,
    Data,
    Iov,
    Sock,
}

/// The role of each argument in `entry`, or None where one argument has two
/// roles that cannot share a value (or a custom part reads unknown ones).
fn roles(entry: &syscall::Entry) -> Option<[Role; 6]> {
    let mut r = [Role::Unused; 6];
    let set = |i: u8, role: Role, r: &mut [Role; 6]| -> Option<()> {
        let cur = &mut r[i as usize];
        match (*cur, role) {
            (Role::Unused | Role::ClassOnly, _) => *cur = role,
            (a, b) if a == b => {}
            (Role::Int, Role::ClassOnly) | (Role::Fd, Role::ClassOnly) | (Role::Path, Role::ClassOnly) => {}
            (Role::Int, Role::CreateFlags) | (Role::CreateFlags, Role::Int) => *cur = Role::CreateFlags,
            _ => return None,
        }
        Some(())
    };
    let len = |l: Len| match l {
        Len::ArgMax(i, _) => Some(i),
        Len::Const(_) => None,
    };
    for f in entry.record {
        match *f {
            Field::Fd(i) | Field::DirFd(i) => set(i, Role::Fd, &mut r)?,
            Field::Int(i) => set(i, Role::Int, &mut r)?,
            Field::Const(_) => {}
            Field::Path(i) | Field::PathIf(i) => set(i, Role::Path, &mut r)?,
            Field::NewPath { path, flags: x } | Field::NewDir { path, mode: x } => {
                set(path, Role::Path, &mut r)?;
                set(x, Role::Int, &mut r)?;
            }
            Field::Bytes { ptr, len: l } | Field::BytesIf { ptr, len: l } => {
                set(ptr, Role::Data, &mut r)?;
                if let Some(i) = len(l) {
                    set(i, Role::Len, &mut r)?;
                }
            }
            Field::Digest { ptr, len: l } => {
                set(ptr, Role::Data, &mut r)?;
                set(l, Role::Len, &mut r)?;
            }
            Field::DigestIov { ptr, cnt } => {
                set(ptr, Role::Iov, &mut r)?;
                set(cnt, Role::Count, &mut r)?;
            }
            Field::SockAddr { ptr, len: l } | Field::SockAddrIf { ptr, len: l } => {
                set(ptr, Role::Sock, &mut r)?;
                set(l, Role::Len, &mut r)?;
            }
            Field::CreateMode { flags, mode } => {
                set(flags, Role::CreateFlags, &mut r)?;
                set(mode, Role::Int, &mut r)?;
            }
            Field::Custom(_) => return None,
        }
    }
    match entry.class {
        ClassRule::OnFd { fd, .. } => set(fd, Role::ClassOnly, &mut r)?,
        ClassRule::ProtExec { prot } => set(prot, Role::ClassOnly, &mut r)?,
        ClassRule::Open { flags, dirfd, path } => {
            if let Flags::Arg(i) = flags {
                set(i, Role::ClassOnly, &mut r)?;
            }
            if let Some(i) = dirfd {
                set(i, Role::ClassOnly, &mut r)?;
            }
            set(path, Role::ClassOnly, &mut r)?;
        }
        ClassRule::Futex => {
            set(1, Role::ClassOnly, &mut r)?;
            set(3, Role::ClassOnly, &mut r)?;
        }
        ClassRule::Closes { fd } => set(fd, Role::ClassOnly, &mut r)?,
        ClassRule::Fcntl => {
            set(0, Role::ClassOnly, &mut r)?;
            set(1, Role::ClassOnly, &mut r)?;
        }
        ClassRule::Is(_) | ClassRule::Remote(_) => {}
    }
    Some(r)
}

/// One variant's arguments for a row: pointers into data laid out at
/// `base`, `perturb` flipping one recorded input (argument `i`'s value or
/// the first significant byte behind it).
fn lay_out(v: &mut Fake, roles: &[Role; 6], base: u64, unused: u64, perturb: Option<usize>) -> [u64; 6] {
    let mut a = [0u64; 6];
    for (i, role) in roles.iter().enumerate() {
        let at = base + i as u64 * 0x1_0000 + (base >> 20) % 0x800;
        let p = perturb == Some(i);
        let flip = |mut b: Vec<u8>, at: usize| {
            if p {
                b[at] ^= 0x20;
            }
            b
        };
        a[i] = match role {
            Role::Unused => unused + i as u64 * 0x1000,
            Role::ClassOnly => 0x11,
            Role::Int => 0x11 + p as u64,
            Role::Fd => 3 + p as u64,
            Role::CreateFlags => (libc::O_CREAT | libc::O_RDWR) as u64 + if p { libc::O_APPEND as u64 } else { 0 },
            Role::Len => 16 - p as u64,
            Role::Count => 2 - p as u64,
            Role::Path => v.put(at, &flip(b"srv/data.txt\0".to_vec(), 0)),
            Role::Data => v.put(at, &flip((0..16).collect(), 0)),
            Role::Sock => v.put(at, &flip(sockaddr_in(80, [127, 0, 0, 1], [at as u8; 8]), 2)),
            Role::Iov => {
                let d1 = v.put(at + 0x100, &flip(b"first...".to_vec(), 0));
                let d2 = v.put(at + 0x900, b"second..");
                v.put(at, &iovecs(&[(d1, 8), (d2, 8)]))
            }
        };
    }
    a
}

/// Every row without a custom part: arguments the row ignores may differ
/// between variants (they do: leftover registers), the data its pointers
/// show may lie anywhere, and every input it records changes the record.
#[test]
fn every_table_row_normalises_alike_and_records_what_it_reads() {
    let mut checked = 0;
    for nr in 0..names::COUNT as u64 {
        let Some(entry) = syscall::entry(nr) else { continue };
        let Some(roles) = roles(entry) else { continue };
        let (mut a, mut b) = pair();
        for v in [&mut a, &mut b] {
            v.fds.insert(3, socket());
            v.fds.insert(4, FdFacts { kind: FileKind::Regular, remote: false, ipc: false, in_root: true });
            v.dirs.insert(3, b"/srv".to_vec());
            v.dirs.insert(0x11, b"/srv".to_vec());
        }
        let args_a = lay_out(&mut a, &roles, BASE_A, 0x5555_0000_0000, None);
        let args_b = lay_out(&mut b, &roles, BASE_B, 0x7f00_dead_0000, None);
        let name = names::name(nr).unwrap_or("?");
        let (ca, ra) = record(&mut a, nr as i64, args_a);
        let (cb, rb) = record(&mut b, nr as i64, args_b);
        assert_eq!(ca, cb, "{name}: classified differently ({roles:?})");
        assert_eq!(ra, rb, "{name}: recorded differently ({roles:?})");
        for i in 0..6 {
            if matches!(roles[i], Role::Unused | Role::ClassOnly) {
                continue;
            }
            let mut c = Fake::new(Backing::Scattered);
            c.fds.clone_from(&b.fds);
            c.dirs.clone_from(&b.dirs);
            let args_c = lay_out(&mut c, &roles, BASE_B, 0x7f00_dead_0000, Some(i));
            let (_, rc) = record(&mut c, nr as i64, args_c);
            assert_ne!(ra, rc, "{name}: argument {i} ({:?}) changed, the record did not", roles[i]);
        }
        checked += 1;
    }
    // Most rows have no custom part; a table change that hid them all from
    // this test would show here.
    eprintln!("{checked} rows checked");
    assert!(checked > 150, "only {checked} rows checked");
}

/// A small deterministic generator (xorshift), for arguments and memory.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Every row, custom parts included, on arbitrary arguments and memory
/// (pointers to nowhere, into random bytes, across the end of a mapping):
/// classification and records never panic, and are the same twice.
#[test]
fn every_table_row_survives_arbitrary_arguments_and_memory() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut v = Fake::new(Backing::Scattered);
    let regions = [BASE_A, BASE_A + 0x10_0000];
    for &r in &regions {
        let mut bytes: Vec<u8> = (0..3 * PAGE).map(|_| rng.next() as u8).collect();
        // Some words point back into the memory (iovecs, argv, msghdr).
        for w in bytes.chunks_exact_mut(8).step_by(3) {
            let target = regions[(rng.next() % 2) as usize] + rng.next() % (3 * PAGE);
            w.copy_from_slice(&target.to_le_bytes());
        }
        // Some small lengths and NULs, so strings end and lengths are sane.
        for w in bytes.chunks_exact_mut(16).step_by(5) {
            w[..8].copy_from_slice(&(rng.next() % 64).to_le_bytes());
        }
        v.put(r, &bytes);
    }
    v.fds.insert(3, socket());
    v.fds.insert(4, FdFacts { kind: FileKind::Pipe, remote: true, ipc: true, in_root: false });
    v.dirs.insert(3, b"/srv".to_vec());
    for nr in 0..names::COUNT as u64 + 2 {
        for _ in 0..40 {
            let mut a = [0u64; 6];
            for x in &mut a {
                *x = match rng.next() % 8 {
                    0 => 0,
                    1 => rng.next() % 8,
                    2 => AT_FDCWD as u32 as u64,
                    3 => u64::MAX - rng.next() % 16,
                    4 => rng.next(),
                    5 => regions[0] + 3 * PAGE - rng.next() % 64,
                    _ => regions[(rng.next() % 2) as usize] + rng.next() % (3 * PAGE),
                };
            }
            let (c1, r1) = record(&mut v, nr as i64, a);
            let (c2, r2) = record(&mut v, nr as i64, a);
            assert_eq!((c1, r1), (c2, r2), "call {nr} with {a:x?}");
        }
    }
}
