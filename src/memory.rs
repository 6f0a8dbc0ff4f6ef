//! Giving back to the system the memory a burst of work has freed.
//!
//! glibc's allocator keeps freed memory mapped, to hand out again. After a burst (a first run
//! over a fleet's backlog: hundreds of thousands of actions and job records) most of it lies in
//! holes between live allocations, which glibc returns only from the top of its heaps; the next
//! run's allocations then land around the holes and the resident size keeps growing.
//! [`release_free_memory`] returns every free page (`malloc_trim`), so a run starts from what is
//! live. Elsewhere than on glibc it does nothing.
//!
//! Blocks of [`OWN_MAPPING_FROM`] bytes and more that no free space of a heap can hold get a
//! mapping of their own, returned to the system when freed ([`configure_allocator`]). glibc
//! starts with the same threshold but raises it to the size of every such block freed, so after
//! the first page of jobs (a listing's body, about 200 KB, is read whole before it is decoded)
//! the bodies grew the heaps, and the holes they left between longer-lived allocations were
//! part of a run's peak. On the 5,000 × 201-job fleet that was about 2 MB of the peak, against
//! about 50 page faults more per page read.

/// The size from which a block gets a mapping of its own (glibc's initial `M_MMAP_THRESHOLD`,
/// held there).
pub const OWN_MAPPING_FROM: usize = 128 * 1024;

/// Keeps large blocks out of the heaps (see the module's text). Call it once, early.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn configure_allocator() {
    // SAFETY: `mallopt` takes plain integers and only sets the allocator's parameters, under
    // its lock. A fixed threshold also stops glibc from moving it.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, OWN_MAPPING_FROM as libc::c_int);
    }
}

/// Keeps large blocks out of the heaps (nothing to do off glibc).
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn configure_allocator() {}

/// Returns the allocator's free pages to the system (glibc's `malloc_trim(0)`).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn release_free_memory() {
    // SAFETY: `malloc_trim` takes no pointer and only walks the allocator's own free lists,
    // under the allocator's locks; it may be called from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Returns the allocator's free pages to the system (nothing to do off glibc).
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn release_free_memory() {}
