//! [`Error`]: one error type for an embedding kernel, wrapping every
//! module's own, so that `?` works throughout.

use core::fmt;

/// Any error of the crate, by the module it comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Error {
    /// From reading an FDT.
    Fdt(crate::fdt::FdtError),
    /// From writing an FDT.
    FdtWrite(crate::fdt::WriteError),
    /// From a range set.
    Range(crate::ranges::RangeError),
    /// From mapping frames.
    Map(crate::platform::MapError),
    /// From reserving handed-over memory.
    Reserve(crate::reserve::ReserveError),
    /// From a page chain.
    Chain(crate::chain::ChainError),
    /// From adopting preserved pages.
    Claim(crate::claims::ClaimError),
    /// From the preserved-page tracker.
    Tracker(crate::tracker::TrackerError),
    /// From the tracker's handed-over chain.
    Handover(crate::tracker::handover::HandoverError),
    /// From the scratch areas.
    Scratch(crate::scratch::ScratchError),
    /// From the handoff blob.
    Handoff(crate::handoff::HandoffError),
    /// From the next kernel image.
    Elf(crate::elf::ElfError),
    /// From the PVH boot structures.
    Pvh(crate::pvh::PvhError),
    /// From preserved vmalloc.
    Vmalloc(crate::vmalloc::VmallocError),
    /// From a memfd or its records.
    Memfd(crate::memfd::MemfdError),
    /// From the orchestrator.
    Luo(crate::luo::LuoError),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Fdt(e) => e.fmt(f),
            Error::FdtWrite(e) => e.fmt(f),
            Error::Range(e) => e.fmt(f),
            Error::Map(e) => e.fmt(f),
            Error::Reserve(e) => e.fmt(f),
            Error::Chain(e) => e.fmt(f),
            Error::Claim(e) => e.fmt(f),
            Error::Tracker(e) => e.fmt(f),
            Error::Handover(e) => e.fmt(f),
            Error::Scratch(e) => e.fmt(f),
            Error::Handoff(e) => e.fmt(f),
            Error::Elf(e) => e.fmt(f),
            Error::Pvh(e) => e.fmt(f),
            Error::Vmalloc(e) => e.fmt(f),
            Error::Memfd(e) => e.fmt(f),
            Error::Luo(e) => e.fmt(f),
        }
    }
}

/// The module error each variant wraps.
impl core::error::Error for Error {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            Error::Fdt(e) => Some(e),
            Error::FdtWrite(e) => Some(e),
            Error::Range(e) => Some(e),
            Error::Map(e) => Some(e),
            Error::Reserve(e) => Some(e),
            Error::Chain(e) => Some(e),
            Error::Claim(e) => Some(e),
            Error::Tracker(e) => Some(e),
            Error::Handover(e) => Some(e),
            Error::Scratch(e) => Some(e),
            Error::Handoff(e) => Some(e),
            Error::Elf(e) => Some(e),
            Error::Pvh(e) => Some(e),
            Error::Vmalloc(e) => Some(e),
            Error::Memfd(e) => Some(e),
            Error::Luo(e) => Some(e),
        }
    }
}

impl Error {
    /// For a blob written into a buffer too small
    /// ([`WriteError::NoSpace`](crate::fdt::WriteError::NoSpace), however
    /// it was reached): the bytes needed. [`crate::Frozen::write`] gives
    /// the whole blob's size.
    pub fn needed(&self) -> Option<usize> {
        use crate::fdt::WriteError::NoSpace;
        match self {
            Error::FdtWrite(NoSpace { needed })
            | Error::Luo(crate::luo::LuoError::Write(NoSpace { needed })) => Some(*needed),
            _ => None,
        }
    }
}

impl From<crate::fdt::FdtError> for Error {
    fn from(e: crate::fdt::FdtError) -> Self {
        Error::Fdt(e)
    }
}

impl From<crate::fdt::WriteError> for Error {
    fn from(e: crate::fdt::WriteError) -> Self {
        Error::FdtWrite(e)
    }
}

impl From<crate::ranges::RangeError> for Error {
    fn from(e: crate::ranges::RangeError) -> Self {
        Error::Range(e)
    }
}

impl From<crate::platform::MapError> for Error {
    fn from(e: crate::platform::MapError) -> Self {
        Error::Map(e)
    }
}

impl From<crate::reserve::ReserveError> for Error {
    fn from(e: crate::reserve::ReserveError) -> Self {
        Error::Reserve(e)
    }
}

impl From<crate::chain::ChainError> for Error {
    fn from(e: crate::chain::ChainError) -> Self {
        Error::Chain(e)
    }
}

impl From<crate::claims::ClaimError> for Error {
    fn from(e: crate::claims::ClaimError) -> Self {
        Error::Claim(e)
    }
}

impl From<crate::tracker::TrackerError> for Error {
    fn from(e: crate::tracker::TrackerError) -> Self {
        Error::Tracker(e)
    }
}

impl From<crate::tracker::handover::HandoverError> for Error {
    fn from(e: crate::tracker::handover::HandoverError) -> Self {
        Error::Handover(e)
    }
}

impl From<crate::scratch::ScratchError> for Error {
    fn from(e: crate::scratch::ScratchError) -> Self {
        Error::Scratch(e)
    }
}

impl From<crate::handoff::HandoffError> for Error {
    fn from(e: crate::handoff::HandoffError) -> Self {
        Error::Handoff(e)
    }
}

impl From<crate::elf::ElfError> for Error {
    fn from(e: crate::elf::ElfError) -> Self {
        Error::Elf(e)
    }
}

impl From<crate::pvh::PvhError> for Error {
    fn from(e: crate::pvh::PvhError) -> Self {
        Error::Pvh(e)
    }
}

impl From<crate::vmalloc::VmallocError> for Error {
    fn from(e: crate::vmalloc::VmallocError) -> Self {
        Error::Vmalloc(e)
    }
}

impl From<crate::memfd::MemfdError> for Error {
    fn from(e: crate::memfd::MemfdError) -> Self {
        Error::Memfd(e)
    }
}

impl From<crate::luo::LuoError> for Error {
    fn from(e: crate::luo::LuoError) -> Self {
        Error::Luo(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::claims::ClaimError;
    use crate::memfd::MemfdError;
    use crate::ranges::Range;
    use alloc::string::ToString;
    use core::error::Error as _;

    #[test]
    fn every_level_names_the_error_it_wraps() {
        let why = ClaimError::Twice {
            range: Range::new(0x1000, 0x2000),
        };
        let e = Error::Memfd(MemfdError::Claim { record: 7, why });
        let memfd = e.source().expect("the memfd error");
        assert_eq!(
            memfd.to_string(),
            MemfdError::Claim { record: 7, why }.to_string()
        );
        let claim = memfd.source().expect("the claim error");
        assert_eq!(claim.to_string(), why.to_string());
        assert!(claim.source().is_none());
    }
}
