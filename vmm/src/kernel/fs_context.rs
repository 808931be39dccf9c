//! The file-system context of a task: its working directory and umask,
//! shared by the tasks created with CLONE_FS and copied for the others. The
//! root directory (the sandbox) is the same for every task of a run.

/// Working directory (its canonical path inside the root) and umask.
#[derive(Clone, Debug)]
pub struct FsContext {
    pub cwd: Vec<u8>,
    pub umask: u32,
}
