//! A read-only, shared memory map of a [`ReadSlice`](crate::ReadSlice)'s
//! bytes, as `Bytes`. The broker uses it as the stand-in for fetched records
//! that go to the socket with `sendfile` from the file itself: the map gives
//! the records a unique address range (so the response encoder can tell them
//! apart) without reading or copying them. Nothing needs to touch the map;
//! if something does, it reads the file's real bytes through the page cache.
//!
//! Cost: one `mmap` and one `munmap` (when the last `Bytes` clone drops); no
//! page is faulted in unless the bytes are read.

use std::fs::File;
use std::io;
use std::sync::Arc;

use bytes::Bytes;

/// Owner of one mapping; unmapped on drop.
struct Mapping {
    addr: usize,
    map_len: usize,
    data_offset: usize,
    len: usize,
    /// Keeps the file (and so the mapped pages' inode) alive with the map.
    _file: Arc<File>,
}

impl AsRef<[u8]> for Mapping {
    #[allow(unsafe_code)]
    fn as_ref(&self) -> &[u8] {
        // SAFETY: `addr..addr + map_len` is a live PROT_READ mapping owned by
        // `self` until drop, and `data_offset + len <= map_len`. The file is
        // never written below the log end while mapped segments are read
        // (closed segments are immutable; truncation is not done while
        // serving a range, see `ReadSlice`).
        unsafe { std::slice::from_raw_parts((self.addr + self.data_offset) as *const u8, self.len) }
    }
}

impl Drop for Mapping {
    #[allow(unsafe_code)]
    fn drop(&mut self) {
        // SAFETY: the mapping was created by `map` with exactly this address
        // and length and is unmapped once, here; no reference into it outlives
        // `self` (the `Bytes` owning it is being dropped).
        let _ = unsafe { rustix::mm::munmap(self.addr as *mut std::ffi::c_void, self.map_len) };
    }
}

/// Maps `len` bytes of `file` at `position` (len > 0).
pub(crate) fn map(file: &Arc<File>, position: u64, len: usize) -> io::Result<Bytes> {
    let page = rustix::param::page_size() as u64;
    let map_start = position - position % page;
    let data_offset = (position - map_start) as usize;
    let map_len = data_offset + len;
    // SAFETY: a fresh read-only shared mapping chosen by the kernel (no fixed
    // address), so it aliases no Rust memory; its lifetime is tied to the
    // `Mapping` that owns it.
    #[allow(unsafe_code)]
    let addr = unsafe {
        rustix::mm::mmap(
            std::ptr::null_mut(),
            map_len,
            rustix::mm::ProtFlags::READ,
            rustix::mm::MapFlags::SHARED,
            &**file,
            map_start,
        )
    }
    .map_err(io::Error::from)?;
    Ok(Bytes::from_owner(Mapping {
        addr: addr as usize,
        map_len,
        data_offset,
        len,
        _file: file.clone(),
    }))
}
