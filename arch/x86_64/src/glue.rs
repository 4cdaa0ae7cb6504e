//! The `kho` platform for this kernel: frames from the frame allocator,
//! read and written through the direct map.

use crate::{frames, paging};
use alloc::collections::BTreeMap;
use kho::PAGE_SIZE;
use kho::platform::{Frame, FrameAlloc, Mapping, PhysMem};
use kho::ranges::Range;
use spin::Mutex;

/// Physical memory as this kernel reaches it: every RAM frame through the
/// direct map, and frames from [`frames::alloc`] (scratch before restore,
/// outside scratch after).
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
    /// 3. Whoever holds a `KernelMem` writes through
    ///    [`PhysMem::frame_mut`] only frames it owns (allocated from
    ///    [`frames`], or adopted from the handoff), and reads through
    ///    [`PhysMem::frame`] only frames nothing writes meanwhile: the
    ///    contract of [`PhysMem`], which kho keeps.
    pub unsafe fn new(ram: &'static [Range]) -> Self {
        Self { ram }
    }

    /// Whether `phys` is a 4 KiB frame inside RAM, which the direct map
    /// covers.
    fn ram_frame(&self, phys: u64) -> bool {
        phys.is_multiple_of(PAGE_SIZE)
            && phys
                .checked_add(PAGE_SIZE)
                .is_some_and(|end| self.ram.iter().any(|r| r.covers(Range::new(phys, end))))
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
        if !self.ram_frame(phys) {
            return None;
        }
        let p = paging::phys_to_virt(phys).as_ptr::<Frame>();
        // SAFETY: `phys` is an aligned RAM frame, so the direct map covers
        // it (promise 1 of `new`) and the pointer is valid and aligned for
        // 4096 bytes; nothing writes it while it is borrowed (promise 3).
        Some(unsafe { &*p })
    }

    fn frame_mut(&mut self, phys: u64) -> Option<&mut Frame> {
        if !self.ram_frame(phys) {
            return None;
        }
        let p = paging::phys_to_virt(phys).as_mut_ptr::<Frame>();
        // SAFETY: as above; the holder owns the frame (promise 3 of `new`),
        // and `&mut self` makes this the only borrow through this token.
        Some(unsafe { &mut *p })
    }
}

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
}

impl kho::platform::MapFrames for KernelMem {
    fn map(&mut self, frames: &[u64]) -> Result<Mapping, kho::platform::MapError> {
        if let Some(&bad) = frames.iter().find(|&&f| !self.ram_frame(f)) {
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
