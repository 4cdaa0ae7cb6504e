//! [`Error`]: one error type for an embedding kernel, wrapping every
//! module's own, so that `?` works throughout.

use core::fmt;

/// What a caller can do about an [`Error`]: the few situations a kernel
/// acts on, whichever module the error came from ([`Error::kind`]). The
/// module's own error, with every detail, stays the error's `source()`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Out of memory (frames, heap, or a full fixed table). Nothing
    /// changed: free memory or preserve less, and try again.
    OutOfMemory,
    /// Handed-over data (a blob, the tracker's chain, a record array, a
    /// footprint, an image) is corrupt or malformed. Nothing was believed:
    /// boot cold, or do without the one object it names.
    Corrupt,
    /// No version both kernels have: of the handoff, or of an object (or
    /// of the shared state it depends on). Never a misread: the object is
    /// lost or carried.
    NoCommonVersion,
    /// Preflight refused the freeze: the next kernel would lose objects
    /// (each named), or reads no orchestrator node at all. Unpreserve
    /// them, or freeze allowing loss.
    WouldLose,
    /// This kernel reads none of the object's versions: it stays
    /// preserved and goes on to a later kernel (not an error of the data).
    Carried,
    /// A buffer was too small; [`Error::needed`] says how large.
    NoSpace,
    /// A handler's own error ([`crate::luo::HandlerError`]).
    Handler,
    /// A call the state does not allow, or an argument out of its domain
    /// (misaligned, twice, unknown key, wrong family): a bug of the caller.
    Misuse,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorKind::OutOfMemory => "out of memory",
            ErrorKind::Corrupt => "corrupt handed-over data",
            ErrorKind::NoCommonVersion => "no common version",
            ErrorKind::WouldLose => "refused by preflight",
            ErrorKind::Carried => "carried, not read",
            ErrorKind::NoSpace => "buffer too small",
            ErrorKind::Handler => "handler error",
            ErrorKind::Misuse => "misuse",
        })
    }
}

/// Any error of the crate, by the module it comes from; [`Error::kind`]
/// says what a caller can do about it.
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
    TrackerChain(crate::tracker::TrackerChainError),
    /// From the scratch areas.
    Scratch(crate::scratch::ScratchError),
    /// From the handoff blob.
    Handoff(crate::handoff::HandoffError),
    /// From the next kernel image.
    Elf(crate::elf::ElfError),
    /// From preserved vmalloc.
    Vmalloc(crate::vmalloc::VmallocError),
    /// From a memfd or its records.
    Memfd(crate::memfd::MemfdError),
    /// From the orchestrator.
    Luo(crate::luo::LuoError),
    /// From reading a bundle of kernel images (`kho-images-v1`).
    Images(crate::abi::images::ImagesError),
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
            Error::TrackerChain(e) => e.fmt(f),
            Error::Scratch(e) => e.fmt(f),
            Error::Handoff(e) => e.fmt(f),
            Error::Elf(e) => e.fmt(f),
            Error::Vmalloc(e) => e.fmt(f),
            Error::Memfd(e) => e.fmt(f),
            Error::Luo(e) => e.fmt(f),
            Error::Images(e) => e.fmt(f),
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
            Error::TrackerChain(e) => Some(e),
            Error::Scratch(e) => Some(e),
            Error::Handoff(e) => Some(e),
            Error::Elf(e) => Some(e),
            Error::Vmalloc(e) => Some(e),
            Error::Memfd(e) => Some(e),
            Error::Luo(e) => Some(e),
            Error::Images(e) => Some(e),
        }
    }
}

impl Error {
    /// What a caller can do about this error, whichever module it came
    /// from.
    pub fn kind(&self) -> ErrorKind {
        use crate::error::kinds::*;
        match self {
            Error::Fdt(_) => ErrorKind::Corrupt,
            Error::FdtWrite(e) => write(e),
            Error::Range(e) => range(e),
            Error::Map(e) => map(e),
            Error::Reserve(e) => reserve(e),
            Error::Chain(e) => chain(e),
            Error::Claim(e) => claim(e),
            Error::Tracker(e) => tracker(e),
            Error::TrackerChain(e) => tracker_chain(e),
            Error::Scratch(e) => scratch(e),
            Error::Handoff(e) => handoff(e),
            Error::Elf(_) => ErrorKind::Corrupt,
            Error::Vmalloc(e) => vmalloc(e),
            Error::Memfd(e) => memfd(e),
            Error::Luo(e) => e.kind(),
            Error::Images(e) => images(e),
        }
    }

    /// For a blob written into a buffer too small
    /// (`WriteError::NoSpace`, however it was reached): the bytes needed.
    /// `Frozen::write` (feature `arch`) gives the whole blob's size.
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

impl From<crate::tracker::TrackerChainError> for Error {
    fn from(e: crate::tracker::TrackerChainError) -> Self {
        Error::TrackerChain(e)
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

impl From<crate::abi::images::ImagesError> for Error {
    fn from(e: crate::abi::images::ImagesError) -> Self {
        Error::Images(e)
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

    #[test]
    fn an_image_bundle_error_reaches_the_crate_error() {
        use crate::abi::images::{Bundle, ImagesError};
        let e: Error = Bundle::parse(&[0u8; 64]).map(|_| ()).unwrap_err().into();
        assert_eq!(e, Error::Images(ImagesError::NotABundle));
        assert_eq!(e.kind(), ErrorKind::Corrupt);
        assert_eq!(
            e.source().expect("the bundle's error").to_string(),
            ImagesError::NotABundle.to_string()
        );
        let empty: Error = ImagesError::EmptyImage(1).into();
        assert_eq!(empty.kind(), ErrorKind::Misuse);
    }
}

impl crate::luo::LuoError {
    /// What a caller can do about this error ([`Error::kind`]).
    pub fn kind(&self) -> crate::error::ErrorKind {
        use crate::error::ErrorKind::*;
        use crate::error::kinds;
        match self {
            crate::luo::LuoError::NoReadableVersion { .. }
            | crate::luo::LuoError::SharedUnread { .. }
            | crate::luo::LuoError::NoHandler(_) => NoCommonVersion,
            crate::luo::LuoError::WouldLose(_) | crate::luo::LuoError::NextReadsNoNode { .. } => {
                WouldLose
            }
            crate::luo::LuoError::Carried { .. } => Carried,
            // kho's own handlers' errors keep their module's kind.
            crate::luo::LuoError::Handler { error, .. } => {
                match error.downcast_ref::<crate::memfd::MemfdError>() {
                    Some(m) => kinds::memfd(m),
                    None => Handler,
                }
            }
            crate::luo::LuoError::OutOfMemory => OutOfMemory,
            crate::luo::LuoError::Write(w) => kinds::write(w),
            crate::luo::LuoError::BadNode(_)
            | crate::luo::LuoError::Footprint { .. }
            | crate::luo::LuoError::BadFootprint { .. } => Corrupt,
            crate::luo::LuoError::Claim(c) => kinds::claim(c),
            crate::luo::LuoError::Tracker(t) => kinds::tracker(t),
            crate::luo::LuoError::Vmalloc(v)
            | crate::luo::LuoError::FootprintArray { error: v, .. } => kinds::vmalloc(v),
            crate::luo::LuoError::NodeUnread(e) => e.kind(),
            crate::luo::LuoError::DuplicateFamily(_)
            | crate::luo::LuoError::DuplicateSession(_)
            | crate::luo::LuoError::NoSession(_)
            | crate::luo::LuoError::DuplicateToken { .. }
            | crate::luo::LuoError::NoToken { .. }
            | crate::luo::LuoError::WrongFamily(_)
            | crate::luo::LuoError::State(_)
            | crate::luo::LuoError::NothingStored(_)
            | crate::luo::LuoError::DuplicateVersion { .. }
            | crate::luo::LuoError::NeverRetrieved
            | crate::luo::LuoError::NotTaken
            | crate::luo::LuoError::Taken { .. } => Misuse,
        }
    }
}

impl<T> From<crate::luo::Refused<T>> for Error {
    /// Keeps the reason; drops the object (see [`crate::luo::Refused`]).
    fn from(r: crate::luo::Refused<T>) -> Self {
        Error::Luo(r.error)
    }
}

/// The kind of each module's errors (one function per module error, used
/// by [`Error::kind`] and [`crate::luo::LuoError::kind`]).
pub(crate) mod kinds {
    use super::ErrorKind::{self, *};
    use crate::abi::images::ImagesError;
    use crate::chain::ChainError;
    use crate::claims::ClaimError;
    use crate::fdt::WriteError;
    use crate::handoff::HandoffError;
    use crate::memfd::MemfdError;
    use crate::platform::MapError;
    use crate::ranges::RangeError;
    use crate::reserve::ReserveError;
    use crate::scratch::ScratchError;
    use crate::tracker::TrackerChainError;
    use crate::tracker::TrackerError;
    use crate::vmalloc::VmallocError;

    pub(crate) fn write(e: &WriteError) -> ErrorKind {
        match e {
            WriteError::NoSpace { .. } => NoSpace,
            _ => Misuse,
        }
    }

    pub(crate) fn range(e: &RangeError) -> ErrorKind {
        match e {
            RangeError::Full => OutOfMemory,
            _ => Misuse,
        }
    }

    /// A frame that cannot be mapped names memory the data should not.
    pub(crate) fn map(e: &MapError) -> ErrorKind {
        match e {
            MapError::NoSpace => OutOfMemory,
            MapError::BadFrame { .. } => Corrupt,
        }
    }

    /// Overlapping handed-over ranges are the data's fault.
    pub(crate) fn reserve(e: &ReserveError) -> ErrorKind {
        match e {
            ReserveError::Full => OutOfMemory,
            ReserveError::Overlap { .. } => Corrupt,
        }
    }

    pub(crate) fn chain(e: &ChainError) -> ErrorKind {
        match e {
            ChainError::OutOfPages | ChainError::OutOfMemory => OutOfMemory,
            _ => Corrupt,
        }
    }

    /// Claims are made from handed-over records: a page they may not
    /// have is the records' fault.
    pub(crate) fn claim(e: &ClaimError) -> ErrorKind {
        match e {
            ClaimError::OutOfMemory => OutOfMemory,
            _ => Corrupt,
        }
    }

    /// The tracker is given addresses by its caller.
    pub(crate) fn tracker(e: &TrackerError) -> ErrorKind {
        match e {
            TrackerError::OutOfMemory => OutOfMemory,
            _ => Misuse,
        }
    }

    /// Reading the chain: whatever the tracker refuses came from it.
    pub(crate) fn tracker_chain(e: &TrackerChainError) -> ErrorKind {
        match e {
            TrackerChainError::Tracker(TrackerError::OutOfMemory) => OutOfMemory,
            TrackerChainError::Chain(c) => chain(c),
            TrackerChainError::Reserve(r) => reserve(r),
            _ => Corrupt,
        }
    }

    pub(crate) fn scratch(e: &ScratchError) -> ErrorKind {
        match e {
            ScratchError::ImageNotInRam => Misuse,
            ScratchError::TooSmall { .. } => OutOfMemory,
            _ => Corrupt,
        }
    }

    pub(crate) fn images(e: &ImagesError) -> ErrorKind {
        match e {
            ImagesError::NotABundle | ImagesError::Malformed => Corrupt,
            ImagesError::EmptyImage(_) => Misuse,
        }
    }

    pub(crate) fn handoff(e: &HandoffError) -> ErrorKind {
        match e {
            HandoffError::UnknownVersion => NoCommonVersion,
            HandoffError::Scratch(s) => scratch(s),
            HandoffError::Tracker(h) => tracker_chain(h),
            HandoffError::Reserve(r) => reserve(r),
            _ => Corrupt,
        }
    }

    pub(crate) fn vmalloc(e: &VmallocError) -> ErrorKind {
        match e {
            VmallocError::OutOfFrames | VmallocError::OutOfMemory => OutOfMemory,
            VmallocError::TooLarge | VmallocError::State => Misuse,
            VmallocError::Chain(c) => chain(c),
            VmallocError::Claim(c) => claim(c),
            VmallocError::Map(m) => map(m),
            VmallocError::Tracker(t) => tracker(t),
            _ => Corrupt,
        }
    }

    pub(crate) fn memfd(e: &MemfdError) -> ErrorKind {
        match e {
            MemfdError::OutOfFrames | MemfdError::OutOfMemory => OutOfMemory,
            MemfdError::Sealed { .. }
            | MemfdError::UnknownSeal { .. }
            | MemfdError::TooLarge
            | MemfdError::Preserved { .. }
            | MemfdError::Unrepresentable => Misuse,
            MemfdError::Vmalloc(v) => vmalloc(v),
            MemfdError::Tracker(t) => tracker(t),
            _ => Corrupt,
        }
    }
}
