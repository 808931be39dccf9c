//! Generated documents match the code they are generated from.

use dmvx::*;

#[test]
fn syscall_table_in_docs_is_current() {
    let o = run_vmm(&["--syscall-table"], b"");
    assert_eq!(status(&o), 0);
    let doc = std::fs::read_to_string(workspace().join("docs/syscalls.md")).expect("docs/syscalls.md");
    assert!(doc.ends_with(&stdout(&o)), "docs/syscalls.md is stale: run scripts/gen-docs.sh");
    assert!(stdout(&o).contains("| 0 | `read` | host (sandboxed)"));
}
