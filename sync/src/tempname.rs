//! Fresh temporary names, which diversity itself makes differ.
//!
//! glibc's mkstemp family seeds its names with the address of a stack
//! variable (and a replicated clock); python's importlib uses `id()`.
//! With disjoint layouts each variant therefore creates a different name.
//! Such creates say "a fresh name of my choosing" (O_CREAT|O_EXCL, or
//! mkdtemp's mkdir 0700), so variants compare their path with the random
//! part masked: the last run of at least `MIN_RANDOM` letters and digits
//! in the last component. The directory, the rest of the component and the
//! length must agree. A follower then binds its name to the leader's for
//! the rest of the run: its later paths name the leader's file (`NameMap`).

use std::collections::HashMap;

/// The shortest random part glibc makes (the six X of a template).
pub const MIN_RANDOM: usize = 6;
/// At most this many names are bound in one run (beyond, creates still
/// compare masked, but later uses of the name would diverge).
pub const MAX_BINDINGS: usize = 1 << 16;

/// The masked form of `path`, if its last component has a random-looking part.
pub fn mask(path: &[u8]) -> Option<Vec<u8>> {
    let start = path.iter().rposition(|&c| c == b'/').map_or(0, |i| i + 1);
    let last = &path[start..];
    let mut end = last.len();
    while end > 0 {
        if !last[end - 1].is_ascii_alphanumeric() {
            end -= 1;
            continue;
        }
        let mut begin = end;
        while begin > 0 && last[begin - 1].is_ascii_alphanumeric() {
            begin -= 1;
        }
        if end - begin >= MIN_RANDOM {
            let mut out = path.to_vec();
            out[start + begin..start + end].fill(b'*');
            return Some(out);
        }
        end = begin;
    }
    None
}

/// Splits off the last component.
fn last_component(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|&c| c == b'/') {
        Some(i) => (&path[..=i], &path[i + 1..]),
        None => (&[], path),
    }
}

/// A follower's names bound to the leader's.
#[derive(Clone, Debug, Default)]
pub struct NameMap {
    names: HashMap<Vec<u8>, Vec<u8>>,
    /// The lengths of the bound names, longest first.
    lens: Vec<usize>,
    /// The first bytes of the bound names (a quick test before the lookup).
    first: [u64; 4],
}

/// The state of one translation of outgoing bytes (`NameMap::translate`):
/// the bytes at the end of what was fed so far that may begin a name.
#[derive(Debug, Default)]
pub struct Translation {
    carry: Vec<u8>,
}

impl NameMap {
    /// Binds the last component of `mine` to that of `leader`, when the two
    /// paths agree apart from the masked part. Returns whether it bound.
    pub fn bind(&mut self, mine: &[u8], leader: &[u8]) -> bool {
        let (dir_m, name_m) = last_component(mine);
        let (dir_l, name_l) = last_component(leader);
        if dir_m != dir_l || name_m == name_l || name_m.is_empty() || name_m.len() != name_l.len() {
            return false;
        }
        if mask(mine).is_none() || mask(mine) != mask(leader) || self.names.len() >= MAX_BINDINGS {
            return false;
        }
        self.names.insert(name_m.to_vec(), name_l.to_vec());
        if !self.lens.contains(&name_m.len()) {
            self.lens.push(name_m.len());
            self.lens.sort_unstable_by(|a, b| b.cmp(a));
        }
        self.first[name_m[0] as usize / 64] |= 1 << (name_m[0] % 64);
        true
    }

    /// Translates one part of a follower's outgoing bytes (the data of a
    /// write or send, fed in order): every occurrence of one of its bound
    /// names becomes the leader's name (of the same length), and `sink`
    /// gets the translated bytes as far as no name can still begin in
    /// them. `finish` hands over the rest. So a follower that prints the
    /// name it created (`mktemp`) is compared as if it had printed the
    /// leader's, the name that leaves the cluster. Only names the VMM bound
    /// (creates that agreed apart from their random part) are translated,
    /// and only in this direction: a follower cannot make any other byte
    /// compare as something it is not.
    pub fn translate(&self, t: &mut Translation, part: &[u8], sink: &mut dyn FnMut(&[u8])) {
        let Some(&longest) = self.lens.first() else {
            sink(part);
            return;
        };
        if t.carry.is_empty() && !part.iter().any(|&c| self.may_begin(c)) {
            sink(part);
            return;
        }
        t.carry.extend_from_slice(part);
        let done = self.replace_from(&mut t.carry, |p, len| p + longest <= len);
        sink(&t.carry[..done]);
        t.carry.drain(..done);
    }

    /// The end of a translation: the bytes still held.
    pub fn finish(&self, t: &mut Translation, sink: &mut dyn FnMut(&[u8])) {
        let done = self.replace_from(&mut t.carry, |p, len| p < len);
        debug_assert_eq!(done, t.carry.len());
        sink(&t.carry);
        t.carry.clear();
    }

    /// Whether a bound name begins with `c`.
    #[inline]
    fn may_begin(&self, c: u8) -> bool {
        self.first[c as usize / 64] & (1 << (c % 64)) != 0
    }

    /// Replaces bound names in `buf` from its start, as long as `go(p,
    /// buf.len())` allows a name to begin at `p`; returns where it stopped.
    fn replace_from(&self, buf: &mut [u8], go: impl Fn(usize, usize) -> bool) -> usize {
        let mut p = 0;
        while go(p, buf.len()) {
            if self.may_begin(buf[p]) {
                let hit = self.lens.iter().find_map(|&len| {
                    let cand = buf.get(p..p + len)?;
                    self.names.get(cand).map(|l| (len, l))
                });
                if let Some((len, leader)) = hit {
                    buf[p..p + len].copy_from_slice(leader);
                    p += len;
                    continue;
                }
            }
            p += 1;
        }
        p
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// `path` (or a program argument: gcc passes its temporaries to cc1
    /// and as) with every bound name in it replaced by the leader's name,
    /// also where the program made another name of it (gnupg's dotlock
    /// links its fresh `.#lk0x….HOST.PID` to the same name with an `x`
    /// appended): a name derived from a fresh name is derived from the
    /// leader's in the leader.
    pub fn rewrite(&self, path: &mut [u8]) {
        if !self.names.is_empty() {
            self.replace_from(path, |p, len| p < len);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_the_last_long_alphanumeric_run_of_the_last_component() {
        assert_eq!(mask(b"/case/tmp.OoZhRt").as_deref(), Some(&b"/case/tmp.******"[..]));
        assert_eq!(mask(b"./sedAb12cd").as_deref(), Some(&b"./*********"[..]));
        assert_eq!(mask(b"/tmp/ccAbc123.s").as_deref(), Some(&b"/tmp/********.s"[..]));
        assert_eq!(mask(b"x.pyc.136339148004048").as_deref(), Some(&b"x.pyc.***************"[..]));
        assert_eq!(mask(b"/abcdefgh/a.b"), None);
        assert_eq!(mask(b"short"), None);
    }

    /// Feeds `parts` through a translation, returns what came out.
    fn translated(m: &NameMap, parts: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut t = Translation::default();
        for p in parts {
            m.translate(&mut t, p, &mut |b| out.extend_from_slice(b));
        }
        m.finish(&mut t, &mut |b| out.extend_from_slice(b));
        out
    }

    #[test]
    fn translates_bound_names_in_outgoing_bytes_across_parts() {
        let mut m = NameMap::default();
        assert_eq!(translated(&m, &[b"/case/t.AbCdEfGh\n"]), b"/case/t.AbCdEfGh\n", "nothing bound");
        assert!(m.bind(b"/case/t.AbCdEfGh", b"/case/t.ZyXwVuTs"));
        assert!(m.bind(b"/tmp/ccQ1w2e3.s", b"/tmp/ccR4t5y6.s"));
        let line = b"/case/t.AbCdEfGh\n".as_slice();
        assert_eq!(translated(&m, &[line]), b"/case/t.ZyXwVuTs\n");
        // Split anywhere, byte by byte, the same.
        for cut in 0..line.len() {
            assert_eq!(translated(&m, &[&line[..cut], &line[cut..]]), b"/case/t.ZyXwVuTs\n", "cut at {cut}");
        }
        let bytes: Vec<&[u8]> = line.chunks(1).collect();
        assert_eq!(translated(&m, &bytes), b"/case/t.ZyXwVuTs\n");
        assert_eq!(
            translated(&m, &[b"t.AbCdEfGht.AbCdEfGh ccQ1w2e3.s"]),
            b"t.ZyXwVuTst.ZyXwVuTs ccR4t5y6.s",
            "adjacent names, names of another length"
        );
        // The leader's own name and near misses stay what they are.
        assert_eq!(translated(&m, &[b"t.ZyXwVuTs t.AbCdEfG"]), b"t.ZyXwVuTs t.AbCdEfG");
        assert_eq!(translated(&m, &[b""]), b"");
    }

    #[test]
    fn binds_only_names_that_agree_outside_the_random_part() {
        let mut m = NameMap::default();
        assert!(!m.bind(b"/case/tmp.OoZhRt", b"/other/tmp.KO537U"), "another directory");
        assert!(!m.bind(b"/case/tmp.OoZhRt", b"/case/tmp.KO537UU"), "another length");
        assert!(!m.bind(b"/case/tmp.OoZhRt", b"/case/tmq.KO537U"), "another prefix");
        assert!(!m.bind(b"/case/abc", b"/case/abd"), "no random part");
        assert!(m.is_empty());
        assert!(m.bind(b"/case/tmp.OoZhRt", b"/case/tmp.KO537U"));
        let mut p = b"tmp.OoZhRt".to_vec();
        m.rewrite(&mut p);
        assert_eq!(p, b"tmp.KO537U");
        let mut p = b"/case/tmp.OoZhRt/inner".to_vec();
        m.rewrite(&mut p);
        assert_eq!(p, b"/case/tmp.KO537U/inner");
        let mut p = b"/case/tmp.OoZhRtx".to_vec();
        m.rewrite(&mut p);
        assert_eq!(p, b"/case/tmp.KO537Ux", "a name made of the bound one");
        let mut p = b"/case/tmp.OoZhR".to_vec();
        m.rewrite(&mut p);
        assert_eq!(p, b"/case/tmp.OoZhR", "part of a bound name is no name");
        let mut a = b"-o/case/tmp.OoZhRt".to_vec();
        m.rewrite(&mut a);
        assert_eq!(a, b"-o/case/tmp.KO537U");
        let mut a = b"-quiet".to_vec();
        m.rewrite(&mut a);
        assert_eq!(a, b"-quiet");
    }
}
