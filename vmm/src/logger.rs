//! The VMM's diagnostics: the `log` macros, written to stderr by env_logger,
//! filtered by RUST_LOG (default: info).
//!
//! Messages about the program, from the operating system it runs on (an
//! unsupported call, a refusal, a divergence), use `target: PROGRAM` and
//! read `dmvx: ...`; the VMM's messages about itself read `dmvx-vmm: ...`,
//! with `error:` or `warning:` before errors and warnings. At the default
//! level this is exactly what the VMM printed before it used `log`. Debug
//! and trace records also name their module. `--trace` output (the
//! program's system calls) and `--stats` are not log records: they are
//! what the user asked for and go to stderr whatever RUST_LOG says.

use std::io::Write;

use log::Level;

/// The target of messages about the program (`dmvx: ...`).
pub const PROGRAM: &str = "dmvx";

/// The line a record becomes.
fn line(target: &str, level: Level, args: &std::fmt::Arguments<'_>) -> String {
    let program = target == PROGRAM;
    let who = if program { "dmvx" } else { "dmvx-vmm" };
    match level {
        Level::Error if !program => format!("{who}: error: {args}"),
        Level::Warn if !program => format!("{who}: warning: {args}"),
        Level::Error | Level::Warn | Level::Info => format!("{who}: {args}"),
        Level::Debug => format!("{who}: debug: [{target}] {args}"),
        Level::Trace => format!("{who}: trace: [{target}] {args}"),
    }
}

/// Installs the logger: RUST_LOG's directives on top of `info`. Idempotent
/// (a second call changes nothing).
pub fn init() {
    let _ = env_logger::Builder::new()
        .filter_level(log::LevelFilter::Info)
        .parse_env(env_logger::Env::default())
        .write_style(env_logger::WriteStyle::Never)
        .format(|buf, record| writeln!(buf, "{}", line(record.target(), record.level(), record.args())))
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_read_as_before_at_the_default_level() {
        let l = |target, level, text: &str| line(target, level, &format_args!("{text}"));
        assert_eq!(l(PROGRAM, Level::Warn, "refused x"), "dmvx: refused x");
        assert_eq!(l(PROGRAM, Level::Error, "variants diverged"), "dmvx: variants diverged");
        assert_eq!(l("dmvx_vmm::linux", Level::Warn, "w"), "dmvx-vmm: warning: w");
        assert_eq!(l("dmvx_vmm", Level::Error, "e"), "dmvx-vmm: error: e");
        assert_eq!(l("dmvx_vmm", Level::Info, "the guest powered off"), "dmvx-vmm: the guest powered off");
        assert_eq!(l("dmvx_vmm::monitor", Level::Debug, "d"), "dmvx-vmm: debug: [dmvx_vmm::monitor] d");
    }
}
