//! The `kho` platform for this kernel: frames from the frame allocator,
//! read and written through the direct map.

use crate::{frames, paging};
use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use kho::PAGE_SIZE;
use kho::platform::Lent;
use kho::platform::{Frame, FrameAlloc, Mapping, PhysMem};
use kho::ranges::Range;
use kho::ranges::RangeVec;
use spin::Mutex;

/// Physical memory as this kernel reaches it: every RAM frame through the
/// direct map, and frames from [`frames::alloc`] (scratch before restore,
/// outside scratch after). Frames it lends ([`FrameAlloc::lend`]) leave its reach
/// until they are taken back: the lent `&'static mut` is their only path.
///
/// A token: safe code gets one only from boot, which makes it once with
/// [`KernelMem::new`] when the direct map is live and hands it to the
/// kernel's main by value. It cannot be copied, so `&mut KernelMem` is the
/// only way to write a frame, and two writers of one frame cannot exist:
///
/// ```compile_fail,E0382
/// fn two_writers(mem: kho_x86_64::glue::KernelMem) {
///     let copy = mem; // moves: `mem` is gone
///     let again = mem; // error[E0382]: use of moved value
///     let _ = (copy, again);
/// }
/// ```
///
/// ```compile_fail,E0599
/// fn cloned(mem: &kho_x86_64::glue::KernelMem) -> kho_x86_64::glue::KernelMem {
///     mem.clone() // error: `KernelMem` is not `Clone`
/// }
/// ```
#[derive(Debug)]
pub struct KernelMem {
    ram: &'static [Range],
    /// Memory Rust code holds references into (the kernel image with its
    /// statics and stacks, the heap) and the page tables made before the
    /// heap: never read or written through the token.
    rust: &'static [Range],
    /// Memory read in place as `&'static [u8]` (the boot modules, the
    /// extra segment): read, never written, through the token.
    shared: &'static [Range],
    /// Frames kept for lending ([`FrameAlloc::lend`]), 2 MiB at a time from outside
    /// scratch: the token refuses them (lent or not) until a frame is
    /// taken back, which leaves them.
    lent: RangeVec,
    /// Frames of `lent` that are not lent now.
    spare: Vec<u64>,
    /// Whether `lend` lends (see [`KernelMem::set_lending`]).
    lending: bool,
}

// Not `Clone` (so not `Copy`), checked on every build: were it `Clone`,
// the item below would be ambiguous and the build would fail.
const _: () = {
    trait AmbiguousIfClone<A> {
        fn item() {}
    }
    impl<T: ?Sized> AmbiguousIfClone<()> for T {}
    struct IsClone;
    impl<T: Clone> AmbiguousIfClone<IsClone> for T {}
    let _ = <KernelMem as AmbiguousIfClone<_>>::item;
};

impl KernelMem {
    /// The platform over `ram`.
    ///
    /// # Safety
    /// 1. The direct map ([`paging::phys_to_virt`]) is live and maps every
    ///    byte of `ram`, readable and writable, for the rest of the
    ///    kernel's life.
    /// 2. `ram` is ordinary memory (no device registers).
    /// 3. `rust` holds every range outside the frame allocator that Rust
    ///    code holds references into (the kernel image, the heap) and
    ///    every page table outside the heap, and `shared` every range
    ///    handed out as `&'static [u8]` (modules): the token refuses the
    ///    first for reading and writing, the second for writing.
    /// 4. Every other access to RAM goes through the token: nothing else
    ///    holds a reference or a pointer into a frame outside `rust` and
    ///    `shared` while a borrow of the token can reach it (kho reaches
    ///    frames only through [`PhysMem`] and [`kho::platform::MapFrames`], which borrow
    ///    the token). Which frames belong to whom is then a matter of
    ///    correctness, not of memory safety: writing a frame another
    ///    object owns corrupts that object, never Rust's own memory or a
    ///    mapping.
    pub unsafe fn new(
        ram: &'static [Range],
        rust: &'static [Range],
        shared: &'static [Range],
    ) -> Self {
        Self {
            ram,
            rust,
            shared,
            lent: RangeVec::new(),
            spare: Vec::new(),
            lending: true,
        }
    }

    /// Whether [`FrameAlloc::lend`] lends (it does from boot). Off, a
    /// structure that would be handed over as it lies is written at
    /// freeze instead (the tracker's chain): for a kernel that wants its
    /// handed-over metadata reachable through the token, or a test that
    /// damages it.
    pub fn set_lending(&mut self, on: bool) {
        self.lending = on;
    }

    /// Whether the 4 KiB frame at `phys` may be read (and, with `write`,
    /// written) through the token: aligned, and [`KernelMem::usable`].
    fn frame_ok(&self, phys: u64, write: bool) -> bool {
        phys.is_multiple_of(PAGE_SIZE)
            && phys
                .checked_add(PAGE_SIZE)
                .is_some_and(|end| self.usable(Range::new(phys, end), write))
    }

    /// Whether every page of `range` lies in one RAM range and may be
    /// read (and, with `write`, written) through the token: checked per
    /// range, not per page.
    fn usable(&self, range: Range, write: bool) -> bool {
        let pages = range.pages_around();
        let in_ram = self.ram.iter().any(|r| r.covers(pages));
        let rust = self.rust.iter().any(|r| r.overlaps(&pages));
        let shared = write && self.shared.iter().any(|r| r.overlaps(&pages));
        let lent = self.lent.intersects(pages);
        !range.is_empty() && in_ram && !rust && !shared && !lent
    }

    /// The bytes of `range` (RAM this kernel owns, as for
    /// [`PhysMem::frame_mut`]) as one slice, through the direct map:
    /// `None` if any page of it may not be written through the token.
    pub fn run_mut(&mut self, range: Range) -> Option<&mut [u8]> {
        let len = usize::try_from(range.len()).ok()?;
        if !self.usable(range, true) {
            return None;
        }
        // SAFETY: every page of `range` is RAM the direct map covers
        // (promise 1), outside what Rust or anyone else references
        // (promise 3), reached by nothing but the token (promise 4);
        // `&mut self` makes
        // this the only borrow through the token.
        Some(unsafe {
            core::slice::from_raw_parts_mut(
                paging::phys_to_virt(range.start).as_mut_ptr::<u8>(),
                len,
            )
        })
    }

    /// The bytes of `range` as one slice, for reading (as for
    /// [`PhysMem::frame`]): `None` if any page of it may not be read
    /// through the token.
    pub fn run(&self, range: Range) -> Option<&[u8]> {
        let len = usize::try_from(range.len()).ok()?;
        if !self.usable(range, false) {
            return None;
        }
        // SAFETY: as in `run_mut`, for reading: nothing writes these pages
        // while the borrow of `self` lives (promise 4).
        Some(unsafe {
            core::slice::from_raw_parts(paging::phys_to_virt(range.start).as_ptr::<u8>(), len)
        })
    }

    /// Copies `len` bytes from `src` to `dst` (RAM this kernel owns, as
    /// for [`KernelMem::run_mut`]; the two may overlap). False, and nothing
    /// copied, if either may not be used through the token.
    pub fn copy(&mut self, src: u64, dst: u64, len: u64) -> bool {
        let (Some(src_end), Some(dst_end)) = (src.checked_add(len), dst.checked_add(len)) else {
            return false;
        };
        if !self.usable(Range::new(src, src_end), true)
            || !self.usable(Range::new(dst, dst_end), true)
        {
            return false;
        }
        // SAFETY: both ranges are writable through the token (checked just
        // above), so mapped and owned by the holder; `copy` allows overlap.
        unsafe {
            core::ptr::copy(
                paging::phys_to_virt(src).as_ptr::<u8>(),
                paging::phys_to_virt(dst).as_mut_ptr::<u8>(),
                len as usize,
            )
        };
        true
    }
}

/// The live mappings (`virt` to `len`): a [`Mapping`] not made by
/// [`KernelMem`]'s `map`, or already unmapped, names no bytes.
static MAPS: Mutex<BTreeMap<u64, usize>> = Mutex::new(BTreeMap::new());

fn live(m: &Mapping) -> bool {
    MAPS.lock().get(&m.virt) == Some(&m.len)
}

impl PhysMem for KernelMem {
    fn frame(&self, phys: u64) -> Option<&Frame> {
        if !self.frame_ok(phys, false) {
            return None;
        }
        let p = paging::phys_to_virt(phys).as_ptr::<Frame>();
        // SAFETY: `phys` is an aligned RAM frame, so the direct map covers
        // it (promise 1 of `new`) and the pointer is valid and aligned for
        // 4096 bytes; it is not memory Rust references (promise 3), and
        // nothing writes it while it is borrowed (promise 4).
        Some(unsafe { &*p })
    }

    fn frame_mut(&mut self, phys: u64) -> Option<&mut Frame> {
        if !self.frame_ok(phys, true) {
            return None;
        }
        let p = paging::phys_to_virt(phys).as_mut_ptr::<Frame>();
        // SAFETY: as above, and not lent out as `&'static [u8]` (promise 3
        // of `new`); nothing but the token reaches the frame (promise 4),
        // and `&mut self` makes this the only borrow through this token.
        Some(unsafe { &mut *p })
    }
}

/// Frames lent at a time when none is spare: 2 MiB, one range to refuse.
const LEND_CHUNK: u64 = 512;

/// A lent frame is the direct map's view of a frame of `lent`: the token
/// refuses it, so the `&'static mut` is the only path to it until it comes
/// back.
impl FrameAlloc for KernelMem {
    fn alloc_frames(&mut self, order: u32) -> Option<u64> {
        let count = 1u64.checked_shl(order)?;
        frames::alloc(count, count.checked_mul(PAGE_SIZE)?)
    }

    fn free_frames(&mut self, phys: u64, order: u32) {
        // A double free is refused by the allocator and changes nothing.
        let _ = frames::free(phys, 1 << order);
    }

    fn add_free(&mut self, range: kho::ranges::Range) {
        // The pools are range lists: new free memory of any shape joins
        // them as it is.
        let _ = frames::free(range.start, range.len() / PAGE_SIZE);
    }

    fn lend(&mut self) -> Option<Lent> {
        if !self.lending {
            return None;
        }
        if self.spare.is_empty() {
            // Before restore every frame comes from scratch, which never
            // holds what is handed over.
            if !frames::general_open() {
                return None;
            }
            self.spare.try_reserve(LEND_CHUNK as usize).ok()?;
            let chunk = frames::alloc(LEND_CHUNK, LEND_CHUNK * PAGE_SIZE)?;
            let whole = Range::new(chunk, chunk + LEND_CHUNK * PAGE_SIZE);
            if self.lent.insert(whole).is_err() {
                let _ = frames::free(chunk, LEND_CHUNK);
                return None;
            }
            self.spare
                .extend((0..LEND_CHUNK).rev().map(|i| chunk + i * PAGE_SIZE));
        }
        let phys = self.spare.pop()?;
        let p = paging::phys_to_virt(phys).as_mut_ptr::<Frame>();
        // SAFETY: `phys` is a frame of `lent`: allocated from RAM outside
        // scratch for this token alone, so the direct map covers it
        // (promise 1 of `new`) and the pointer is valid and aligned for
        // 4096 bytes, for good. The token refuses every frame of `lent`
        // (`usable`), nothing else reaches RAM outside `rust` and `shared`
        // (promise 4), and `phys` left `spare` just now, so this is the
        // only reference to the frame until `take_back` receives it.
        let frame: &'static mut Frame = unsafe { &mut *p };
        frame.fill(0);
        Some(Lent::new(phys, frame))
    }

    fn take_back(&mut self, frame: Lent) {
        let (phys, bytes) = frame.into_parts();
        // Only the frame this token lent at `phys`: the `&'static mut` to
        // the direct map's view of a frame of `lent` is the one `lend`
        // made (no other can exist), and it ends here. Anything else (a
        // page of another platform, an address this token never lent)
        // changes nothing.
        let page = Range::new(phys, phys.saturating_add(PAGE_SIZE));
        let ours = core::ptr::eq(
            bytes as *const Frame,
            paging::phys_to_virt(phys).as_ptr::<Frame>(),
        );
        if ours && phys.is_multiple_of(PAGE_SIZE) && self.lent.intersects(page) {
            // Now an allocated frame like any other, through the token.
            let _ = self.lent.carve(page);
        }
    }
}

impl kho::platform::MapFrames for KernelMem {
    fn map(&mut self, frames: &[u64]) -> Result<Mapping, kho::platform::MapError> {
        if let Some(&bad) = frames.iter().find(|&&f| !self.frame_ok(f, true)) {
            return Err(kho::platform::MapError::BadFrame { phys: bad });
        }
        let len = frames.len() * PAGE_SIZE as usize;
        let mut maps = MAPS.lock();
        // SAFETY: every frame is RAM (checked); the caller owns them while
        // the mapping lives (the MapFrames contract).
        let virt =
            unsafe { paging::map_frames(frames) }.map_err(|_| kho::platform::MapError::NoSpace)?;
        let virt = virt.as_u64();
        maps.insert(virt, len);
        Ok(Mapping { virt, len })
    }

    fn bytes(&self, m: &Mapping) -> &[u8] {
        if !live(m) {
            return &[];
        }
        // SAFETY: `m` is a live mapping made by `map` (checked against the
        // registry, so not forged and not unmapped): `len` bytes at `virt`
        // are mapped, and the borrow of `self` keeps `bytes_mut` from
        // handing out the same bytes through this token.
        unsafe { core::slice::from_raw_parts(m.virt as *const u8, m.len) }
    }

    fn bytes_mut(&mut self, m: &Mapping) -> &mut [u8] {
        if !live(m) {
            return &mut [];
        }
        // SAFETY: as in `bytes`; `&mut self` makes this the only borrow.
        unsafe { core::slice::from_raw_parts_mut(m.virt as *mut u8, m.len) }
    }

    fn unmap(&mut self, m: Mapping) {
        if MAPS.lock().remove(&m.virt) != Some(m.len) {
            return;
        }
        // SAFETY: the mapping was live (just removed from the registry, so
        // this happens once); no slice of it outlives the borrow it was
        // given under.
        unsafe {
            paging::unmap_frames(
                crate::addr::VirtAddr::new(m.virt),
                (m.len as u64) / PAGE_SIZE,
            )
        };
    }
}
