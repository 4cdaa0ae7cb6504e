//! Every layout one kernel hands to the next, one module per format
//! (public with feature `arch`: a kernel's own code names what it needs of
//! them through the module that uses them, `luo::Version`, say).
//!
//! Each versioned struct, constant and version string is defined here once
//! (as Linux keeps `include/linux/kho/abi/`); the modules that write and
//! read a format import its layout from here, and so does anything else
//! that decodes it (the inspect tool, the fuzz targets). `docs/abi.md`
//! describes each layout byte by byte; golden blobs under `tests/golden`
//! pin them. Records are little-endian `zerocopy` types with no padding.
//!
//! - [`handoff`]: the root blob (`kho-handoff-v2`) and its boot modules.
//! - [`scratch`]: scratch areas (`kho-scratch-v1`).
//! - [`chain`]: the page-chain framing the chained formats share.
//! - [`tracker`]: the preserved-page tracker (`kho-tracker-v3`).
//! - [`vmalloc`]: preserved vmalloc (`kho-vmalloc-v2`).
//! - `memfd` (public with the feature `tools`): `memfd-v1` and `memfd-v2`, seals and folio flags.
//! - [`luo`]: the orchestrator's node (`kho-luo-v2`; `kho-luo-v1` still
//!   read).
//! - [`reads`]: the ELF note in which a kernel image lists what it reads
//!   (`kho-reads-v1`).
//! - [`images`]: a bundle of kernel images in one boot module
//!   (`kho-images-v1`), for chains of kexecs between builds.

pub mod chain;
pub mod handoff;
pub mod images;
pub mod luo;
#[cfg(feature = "tools")]
pub mod memfd;
#[cfg(not(feature = "tools"))]
pub(crate) mod memfd;
pub mod reads;
pub mod scratch;
pub mod tracker;
pub mod vmalloc;
