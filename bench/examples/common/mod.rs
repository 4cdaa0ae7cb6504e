//! Pages for the profiling examples: the host's fake physical memory, with
//! a frame pool from 2^50 up.
use kho::platform::host::HostMem;
use kho::ranges::Range;

/// Fake physical memory for the chain pages.
pub fn pages() -> HostMem {
    HostMem::with_pool(Range::new(1 << 50, (1 << 50) + (1 << 40)))
}
