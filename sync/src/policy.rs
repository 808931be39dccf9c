//! Monitoring policies: for every call, whether it is checked in lockstep,
//! relaxed, or not at all, and whether its inputs are replicated from the
//! leader or produced locally by each variant.
//!
//! The VMM sorts each concrete call into a [`Class`] (the same system call
//! can fall into different classes: `write` to a socket is an output, `read`
//! of an image file a local input). A policy maps classes to a [`Rule`];
//! per-call overrides (by system call name) take precedence.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// When a call's record is compared across variants.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Hash, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Check {
    /// All variants must reach the same record before the call takes effect.
    Lockstep,
    /// The call runs at once; records are compared asynchronously within a
    /// bounded lag.
    Relaxed,
    /// Not compared.
    Unchecked,
}

impl Check {
    /// The name used in policy files.
    pub fn name(self) -> &'static str {
        match self {
            Check::Lockstep => "lockstep",
            Check::Relaxed => "relaxed",
            Check::Unchecked => "unchecked",
        }
    }
}

/// Where a call's results come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Hash, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Input {
    /// The leader performs it; followers receive its results.
    Replicated,
    /// Every variant performs it on its own (identical) resources.
    Local,
}

impl Input {
    /// The name used in policy files.
    pub fn name(self) -> &'static str {
        match self {
            Input::Replicated => "replicated",
            Input::Local => "local",
        }
    }
}

/// What to do with one call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    pub check: Check,
    pub input: Input,
}

macro_rules! classes {
    ($($v:ident = $name:literal: $desc:literal,)*) => {
        /// What a concrete call does, as far as monitoring is concerned.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u8)]
        pub enum Class { $(#[doc = $desc] $v,)* }

        impl Class {
            /// Every class, in order.
            pub const ALL: &'static [Class] = &[$(Class::$v),*];

            /// The name used in policy files.
            pub fn name(self) -> &'static str {
                match self { $(Class::$v => $name,)* }
            }

            /// What the class holds.
            pub fn description(self) -> &'static str {
                match self { $(Class::$v => $desc,)* }
            }

            /// The class called `name`.
            pub fn from_name(name: &str) -> Option<Class> {
                match name { $($name => Some(Class::$v),)* _ => None }
            }
        }
    };
}

classes! {
    Exec = "exec": "Code execution: execve, mmap/mprotect with PROT_EXEC.",
    Memory = "memory": "Other memory management: brk, mmap, munmap, mprotect, madvise.",
    FileOpen = "file_open": "Opening an image file or directory for reading.",
    FileRead = "file_read": "Reading the contents of an image file.",
    FileMeta = "file_meta": "File metadata: stat family, directory listings, readlink, access.",
    FileModify = "file_modify": "Creating or modifying files: open for writing, unlink, rename, mkdir, chmod, chown, truncation, locks, ...",
    Output = "output": "Output that leaves the variant: socket sends, terminal output, file writes.",
    SocketSetup = "socket_setup": "Socket creation, bind, connect, listen; shutdown and close of sockets (their peers see them).",
    NetInput = "net_input": "Network and other replicated-descriptor input: accept, recv, read of a socket or pipe.",
    Wait = "wait": "Readiness: epoll, poll, select.",
    FdState = "fd_state": "Descriptor state on replicated descriptors: fcntl, socket options, epoll_ctl, ...",
    Time = "time": "Clocks.",
    Random = "random": "Randomness: getrandom, random devices.",
    Process = "process": "Process state answered by the VMM: ids, uname, limits, signal dispositions, ...",
    Sleep = "sleep": "Sleeping and waiting for signals (cut short by signals the leader gets).",
    Exit = "exit": "Program exit.",
    Spawn = "spawn": "Creating processes: fork, vfork, clone; waiting for them and signalling them.",
    Ipc = "ipc": "Pipes and socket pairs between the program's own processes.",
    Other = "other": "Anything else.",
}

/// Named presets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    /// Every call lockstep, every input replicated: the costly baseline of
    /// earlier distributed MVX.
    Strict,
    /// The paper's relaxations.
    Dmvx,
}

impl Preset {
    /// The rule of `class` under this preset.
    pub fn rule(self, class: Class) -> Rule {
        use Check::*;
        use Input::*;
        let r = |check, input| Rule { check, input };
        match self {
            Preset::Strict => match class {
                // Memory and process state cannot come from elsewhere: each
                // variant has its own; still every call is checked first.
                Class::Memory | Class::Exec | Class::FileOpen | Class::Process | Class::Exit => r(Lockstep, Local),
                _ => r(Lockstep, Replicated),
            },
            Preset::Dmvx => match class {
                Class::Exec => r(Lockstep, Local),
                Class::Memory => r(Relaxed, Local),
                Class::FileOpen => r(Relaxed, Local),
                Class::FileRead => r(Relaxed, Local),
                Class::FileMeta => r(Relaxed, Replicated),
                Class::FileModify => r(Lockstep, Replicated),
                Class::Output => r(Lockstep, Replicated),
                Class::SocketSetup => r(Lockstep, Replicated),
                Class::NetInput => r(Relaxed, Replicated),
                Class::Wait => r(Relaxed, Replicated),
                Class::FdState => r(Relaxed, Replicated),
                Class::Time => r(Relaxed, Replicated),
                Class::Random => r(Relaxed, Replicated),
                Class::Process => r(Relaxed, Local),
                // Followers take the leader's outcome (it may be cut short
                // by a signal that reaches the leader only) instead of waiting.
                Class::Sleep => r(Relaxed, Replicated),
                Class::Exit => r(Lockstep, Local),
                // The leader's outcome (the child's pid, which child was
                // reaped, whether a signal found its target) is replicated.
                Class::Spawn => r(Lockstep, Replicated),
                // Which bytes a pipe read returns depends on timing: the
                // leader's are replicated; the data never leaves the variant.
                Class::Ipc => r(Relaxed, Replicated),
                Class::Other => r(Relaxed, Local),
            },
        }
    }
}

/// Errors in a policy file.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PolicyError {
    #[error("policy: {0}")]
    Parse(String),
    #[error("policy: unknown preset '{0}' (use strict or dmvx)")]
    Preset(String),
    #[error("policy: unknown call class '{0}' (classes: {1})")]
    Class(String, String),
    #[error("policy: unknown system call '{0}'")]
    Call(String),
}

/// An override in a policy file: either field may be left out.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleOverride {
    pub check: Option<Check>,
    pub input: Option<Input>,
}

/// The policy section of a cluster file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySpec {
    pub preset: Option<Preset>,
    /// Per class.
    #[serde(default)]
    pub classes: BTreeMap<String, RuleOverride>,
    /// Per system call name; beats the class.
    #[serde(default)]
    pub calls: BTreeMap<String, RuleOverride>,
    /// Paths under which files are mutable during the run: opening them is
    /// file modification and their contents are replicated, never local.
    #[serde(default)]
    pub mutable_paths: Option<Vec<String>>,
}

/// Directories a server typically writes at run time.
pub const DEFAULT_MUTABLE_PATHS: &[&str] =
    &["/tmp", "/run", "/var/run", "/var/log", "/var/tmp", "/var/lib", "/var/cache"];

/// A compiled policy: a rule per class, and per-call overrides.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    pub preset: Preset,
    classes: Vec<Rule>,
    calls: BTreeMap<u64, RuleOverride>,
    pub mutable_paths: Vec<String>,
}

impl Policy {
    /// A preset without overrides.
    pub fn preset(preset: Preset) -> Policy {
        Policy {
            preset,
            classes: Class::ALL.iter().map(|&c| preset.rule(c)).collect(),
            calls: BTreeMap::new(),
            mutable_paths: DEFAULT_MUTABLE_PATHS.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// Compiles a policy section; `number_of` maps system call names to numbers.
    pub fn from_spec(spec: &PolicySpec, number_of: impl Fn(&str) -> Option<u64>) -> Result<Policy, PolicyError> {
        let mut p = Policy::preset(spec.preset.unwrap_or(Preset::Dmvx));
        for (name, o) in &spec.classes {
            let c = Class::from_name(name).ok_or_else(|| {
                PolicyError::Class(name.clone(), Class::ALL.iter().map(|c| c.name()).collect::<Vec<_>>().join(", "))
            })?;
            let r = &mut p.classes[c as usize];
            r.check = o.check.unwrap_or(r.check);
            r.input = o.input.unwrap_or(r.input);
        }
        for (name, o) in &spec.calls {
            let nr = number_of(name).ok_or_else(|| PolicyError::Call(name.clone()))?;
            p.calls.insert(nr, *o);
        }
        if let Some(m) = &spec.mutable_paths {
            p.mutable_paths = m.clone();
        }
        Ok(p)
    }

    /// Parses a TOML policy section (as a table).
    pub fn from_toml(table: &toml::Table, number_of: impl Fn(&str) -> Option<u64>) -> Result<Policy, PolicyError> {
        let spec: PolicySpec = toml::Value::Table(table.clone())
            .try_into()
            .map_err(|e: toml::de::Error| PolicyError::Parse(e.to_string()))?;
        Self::from_spec(&spec, number_of)
    }

    /// The rule for call `nr` of class `class`.
    #[inline]
    pub fn rule(&self, nr: u64, class: Class) -> Rule {
        let base = self.classes[class as usize];
        match self.calls.get(&nr) {
            None => base,
            Some(o) => Rule { check: o.check.unwrap_or(base.check), input: o.input.unwrap_or(base.input) },
        }
    }

    /// Whether `path` (a guest path) lies under a mutable path.
    pub fn is_mutable(&self, path: &[u8]) -> bool {
        self.mutable_paths.iter().any(|m| {
            let m = m.as_bytes();
            path.starts_with(m) && (path.len() == m.len() || path[m.len()] == b'/' || m.ends_with(b"/"))
        })
    }

    /// A canonical description, the same for equal policies.
    pub fn canonical(&self, name_of: impl Fn(u64) -> Option<&'static str>) -> String {
        let mut s = format!("preset={:?}\n", self.preset);
        for &c in Class::ALL {
            let r = self.classes[c as usize];
            s.push_str(&format!("class {}={:?}/{:?}\n", c.name(), r.check, r.input));
        }
        for (nr, o) in &self.calls {
            s.push_str(&format!("call {}={:?}/{:?}\n", name_of(*nr).unwrap_or("?"), o.check, o.input));
        }
        for m in &self.mutable_paths {
            s.push_str(&format!("mutable {m}\n"));
        }
        s
    }

    /// SHA-256 of the canonical description: variants must agree on it.
    pub fn digest(&self, name_of: impl Fn(u64) -> Option<&'static str>) -> [u8; 32] {
        Sha256::digest(self.canonical(name_of).as_bytes()).into()
    }

    /// The table of rules, for documentation.
    pub fn markdown(&self) -> String {
        let mut s = String::from("| class | check | input |\n|---|---|---|\n");
        for &c in Class::ALL {
            let r = self.classes[c as usize];
            s.push_str(&format!("| `{}` | {} | {} |\n", c.name(), r.check.name(), r.input.name()));
        }
        s
    }
}

/// Both presets side by side, for documentation.
pub fn presets_markdown() -> String {
    let mut s = String::from("| class | what it holds | `strict` | `dmvx` (default) |\n|---|---|---|---|\n");
    for &c in Class::ALL {
        let (a, b) = (Preset::Strict.rule(c), Preset::Dmvx.rule(c));
        s.push_str(&format!(
            "| `{}` | {} | {}, {} | {}, {} |\n",
            c.name(),
            c.description(),
            a.check.name(),
            a.input.name(),
            b.check.name(),
            b.input.name()
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nr(name: &str) -> Option<u64> {
        match name {
            "write" => Some(1),
            "read" => Some(0),
            _ => None,
        }
    }

    #[test]
    fn presets_differ_where_the_paper_says() {
        let d = Policy::preset(Preset::Dmvx);
        let s = Policy::preset(Preset::Strict);
        assert_eq!(d.rule(0, Class::FileRead), Rule { check: Check::Relaxed, input: Input::Local });
        assert_eq!(s.rule(0, Class::FileRead), Rule { check: Check::Lockstep, input: Input::Replicated });
        assert_eq!(d.rule(1, Class::Output).check, Check::Lockstep);
        assert_eq!(d.rule(9, Class::Exec).check, Check::Lockstep);
        assert_eq!(d.rule(39, Class::Process).check, Check::Relaxed);
        assert!(Class::ALL.iter().all(|&c| s.rule(0, c).check == Check::Lockstep));
    }

    #[test]
    fn overrides_apply_and_change_the_digest() {
        let t: toml::Table = toml::from_str(
            r#"
            preset = "dmvx"
            [classes.file_read]
            input = "replicated"
            [calls.write]
            check = "relaxed"
            "#,
        )
        .unwrap();
        let p = Policy::from_toml(&t, nr).unwrap();
        assert_eq!(p.rule(0, Class::FileRead).input, Input::Replicated);
        assert_eq!(p.rule(1, Class::Output).check, Check::Relaxed);
        assert_eq!(p.rule(2, Class::Output).check, Check::Lockstep);
        let name = |_| None;
        assert_ne!(p.digest(name), Policy::preset(Preset::Dmvx).digest(name));
        assert_eq!(Policy::preset(Preset::Dmvx).digest(name), Policy::preset(Preset::Dmvx).digest(name));
    }

    #[test]
    fn bad_policies_are_errors() {
        let bad = |s: &str| Policy::from_toml(&toml::from_str(s).unwrap(), nr).unwrap_err();
        assert!(matches!(bad("preset = \"lax\""), PolicyError::Parse(_)));
        assert!(matches!(bad("[classes.nope]\ncheck = \"relaxed\""), PolicyError::Class(..)));
        assert!(matches!(bad("[calls.frobnicate]\ncheck = \"relaxed\""), PolicyError::Call(_)));
        assert!(matches!(bad("[calls.write]\ncheck = \"sometimes\""), PolicyError::Parse(_)));
    }

    #[test]
    fn mutable_paths_match_whole_components() {
        let p = Policy::preset(Preset::Dmvx);
        assert!(p.is_mutable(b"/var/log/nginx/error.log"));
        assert!(p.is_mutable(b"/tmp"));
        assert!(!p.is_mutable(b"/tmpfoo"));
        assert!(!p.is_mutable(b"/etc/passwd"));
    }
}
