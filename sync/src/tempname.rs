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
        true
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// `arg` (a program argument) with every bound name in it replaced by
    /// the leader's, where it stands as a path component (between slashes
    /// or the ends of the string): gcc passes its temporaries to cc1 and as.
    pub fn rewrite_arg(&self, arg: &mut Vec<u8>) {
        if self.names.is_empty() {
            return;
        }
        // Arguments such as "-o/tmp/ccX.s" or "--out=x": the path part.
        let start = arg.iter().position(|&c| c == b'/').unwrap_or(0);
        let mut tail = arg[start..].to_vec();
        self.rewrite(&mut tail);
        arg.truncate(start);
        arg.extend_from_slice(&tail);
    }

    /// `path` with every component that is a bound name replaced by the
    /// leader's name.
    pub fn rewrite(&self, path: &mut Vec<u8>) {
        if self.names.is_empty() || !path.split(|&c| c == b'/').any(|c| self.names.contains_key(c)) {
            return;
        }
        let mut out = Vec::with_capacity(path.len());
        for (i, c) in path.split(|&c| c == b'/').enumerate() {
            if i > 0 {
                out.push(b'/');
            }
            out.extend_from_slice(self.names.get(c).map_or(c, Vec::as_slice));
        }
        *path = out;
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
        assert_eq!(p, b"/case/tmp.OoZhRtx");
        let mut a = b"/case/tmp.OoZhRt".to_vec();
        m.rewrite_arg(&mut a);
        assert_eq!(a, b"/case/tmp.KO537U");
        let mut a = b"-quiet".to_vec();
        m.rewrite_arg(&mut a);
        assert_eq!(a, b"-quiet");
    }
}
