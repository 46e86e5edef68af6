//! The only module allowed `unsafe`: thin wrappers over the few calls libc exposes and socket2
//! does not (`SO_MAX_PACING_RATE`, `setns`).
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// "No pacing limit", what the kernel reports for a socket nobody limited (`~0UL`).
pub(crate) const PACING_UNLIMITED: u64 = u64::MAX;

/// Reads `SO_MAX_PACING_RATE` (bytes/s) of `fd`.
pub(crate) fn max_pacing_rate(fd: BorrowedFd<'_>) -> io::Result<u64> {
    let mut value: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: `fd` is a valid open descriptor for the borrow's lifetime; `value` and `len`
    // are live, writable and `len` holds the size of `value`.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_MAX_PACING_RATE,
            (&mut value as *mut u64).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(match len {
        // Older kernels answer with 32 bits; their "unlimited" is ~0U.
        4 => {
            let low = value as u32;
            if low == u32::MAX {
                PACING_UNLIMITED
            } else {
                u64::from(low)
            }
        }
        _ => value,
    })
}

/// Sets `SO_MAX_PACING_RATE` (bytes/s) of `fd`; [`PACING_UNLIMITED`] removes the limit.
pub(crate) fn set_max_pacing_rate(fd: BorrowedFd<'_>, rate: u64) -> io::Result<()> {
    // SAFETY: `fd` is valid for the borrow; the option value points at a live u64 of the
    // length passed.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_MAX_PACING_RATE,
            (&rate as *const u64).cast(),
            std::mem::size_of::<u64>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() != Some(libc::EINVAL) {
        return Err(err);
    }
    // Kernels before 4.20 only take 32 bits.
    let narrow: u32 = rate.try_into().unwrap_or(u32::MAX);
    // SAFETY: as above, with a live u32.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_MAX_PACING_RATE,
            (&narrow as *const u32).cast(),
            std::mem::size_of::<u32>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Moves the calling thread into the network namespace `ns` (an open `/run/netns/NAME`).
pub(crate) fn enter_network_namespace(ns: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: `ns` is a valid descriptor for the call; setns only changes this thread's
    // namespace and touches no memory of ours.
    let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
