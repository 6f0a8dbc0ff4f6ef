//! Giving back to the system the memory a burst of work has freed.
//!
//! glibc's allocator keeps freed memory mapped, to hand out again. After a burst (a first run
//! over a fleet's backlog: hundreds of thousands of actions and job records) most of it lies in
//! holes between live allocations, which glibc returns only from the top of its heaps; the next
//! run's allocations then land around the holes and the resident size keeps growing.
//! [`release_free_memory`] returns every free page (`malloc_trim`), so a run starts from what is
//! live. Elsewhere than on glibc it does nothing.

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
