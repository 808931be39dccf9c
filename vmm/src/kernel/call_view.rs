//! The kernel as the monitor sees it (`monitor::spec::CallView`): the facts
//! a call's class and record are made of, the same in every variant.

use super::errno::SysResult;
use super::mm::HostIov;
use super::Kernel;
use crate::monitor::spec::{CallView, FdFacts};

const AT_FDCWD: i32 = -100;

impl CallView for Kernel {
    fn fd_info(&self, fd: u64) -> Option<FdFacts> {
        self.fds().file(fd as u32 as u64).ok().map(|f| FdFacts {
            kind: f.kind,
            remote: f.remote,
            ipc: f.is_ipc(),
            in_root: f.in_root(),
        })
    }

    fn dir_path(&self, dirfd: i32) -> Option<Vec<u8>> {
        if dirfd == AT_FDCWD {
            return Some(self.cwd());
        }
        self.fds().file(dirfd as u32 as u64).ok().and_then(|f| f.path().map(<[u8]>::to_vec))
    }

    fn read_user(&mut self, va: u64, buf: &mut [u8]) -> SysResult<()> {
        self.mm.read_user(va, buf)
    }

    fn read_cstr(&mut self, va: u64, max: usize) -> SysResult<Vec<u8>> {
        self.mm.read_cstr(va, max)
    }

    fn path_arg(&mut self, va: u64) -> SysResult<Vec<u8>> {
        Kernel::path_arg(self, va)
    }

    fn rewrite_arg(&self, arg: &mut Vec<u8>) {
        if let Some(m) = self.monitor.as_ref() {
            m.names.rewrite(arg);
        }
    }

    fn bound_names(&self) -> Option<&dmvx_sync::tempname::NameMap> {
        self.monitor.as_ref().map(|m| &m.names).filter(|n| !n.is_empty())
    }

    fn user_iov(&mut self, va: u64, len: u64, iov: &mut HostIov) -> SysResult<u64> {
        self.mm.user_iov(va, len, false, iov)
    }
}
