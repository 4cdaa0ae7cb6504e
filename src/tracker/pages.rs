//! The tracker's pages: on the heap until they settle into frames the
//! platform lends, then handed over where they lie.

use crate::platform::{FrameAlloc, Lent};
use alloc::boxed::Box;
use alloc::vec::Vec;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// The checksum share of a page of words `v_g` (`g` from 0) whose weights
/// are `(first + 2g) * k`: `k * (first * S0 + 2 * S1)` with `S0 = sum v_g`
/// and `S1 = sum g * v_g`, one multiply a word and no weight computed
/// per word. The reader and the writer both sum this way.
#[inline]
pub(super) fn weighted(words: impl Iterator<Item = u64>, first: u64, k: u64) -> u64 {
    let (mut s0, mut s1) = (0u64, 0u64);
    for (g, v) in words.enumerate() {
        s0 = s0.wrapping_add(v);
        s1 = s1.wrapping_add(v.wrapping_mul(g as u64));
    }
    k.wrapping_mul(first.wrapping_mul(s0).wrapping_add(s1.wrapping_mul(2)))
}

/// One 4 KiB page of `T`: on the heap, or in a frame lent at `phys`.
pub(super) enum Page<T: 'static> {
    /// On the heap.
    Heap(Box<T>),
    /// In a lent frame.
    Lent {
        /// The frame's address.
        phys: u64,
        /// Its bytes, as `T`.
        data: &'static mut T,
    },
}

impl<T: FromBytes + IntoBytes + KnownLayout + Immutable + 'static> Page<T> {
    /// Its contents.
    #[inline(always)]
    pub(super) fn get(&self) -> &T {
        match self {
            Page::Heap(b) => b,
            Page::Lent { data, .. } => data,
        }
    }

    /// Its contents, for writing.
    #[inline(always)]
    pub(super) fn get_mut(&mut self) -> &mut T {
        match self {
            Page::Heap(b) => b,
            Page::Lent { data, .. } => data,
        }
    }

    /// Where it lies, once settled.
    pub(super) fn phys(&self) -> Option<u64> {
        match self {
            Page::Heap(_) => None,
            Page::Lent { phys, .. } => Some(*phys),
        }
    }

    /// Moves a heap page into a frame `p` lends, bytes and all; `false`
    /// if `p` lends none (the page stays where it is). A settled page
    /// stays.
    pub(super) fn settle(&mut self, p: &mut impl FrameAlloc) -> bool {
        let Page::Heap(b) = self else {
            return true;
        };
        let Some(frame) = p.lend() else {
            return false;
        };
        let (phys, bytes) = frame.into_parts();
        match T::mut_from_bytes(bytes) {
            Ok(data) => {
                data.as_mut_bytes().copy_from_slice(b.as_bytes());
                *self = Page::Lent { phys, data };
                true
            }
            Err(e) => {
                // Not a frame `T` can lie in (misaligned): back it goes.
                if let Ok(bytes) = <&mut [u8; 4096]>::try_from(e.into_src()) {
                    p.take_back(Lent::new(phys, bytes));
                }
                false
            }
        }
    }

    /// Gives a settled page's frame back to `p` as it is, still allocated:
    /// what the next kernel reads at its address. A heap page is dropped.
    #[cfg(any(test, feature = "host"))]
    pub(super) fn hand_back(self, p: &mut impl FrameAlloc) {
        if let Page::Lent { phys, data } = self
            && let Ok(bytes) = <&mut [u8; 4096]>::try_from(IntoBytes::as_mut_bytes(data))
        {
            p.take_back(Lent::new(phys, bytes));
        }
    }

    /// Gives a settled page's frame back to `p` for good (taken back,
    /// then freed); a heap page is dropped.
    #[cfg(any(test, feature = "host"))]
    pub(super) fn release(self, p: &mut impl FrameAlloc) {
        if let Some(phys) = self.phys() {
            self.hand_back(p);
            p.free_frames(phys, 0);
        }
    }
}

/// A store's pages in order, with what settling and the checksum need:
/// how many are settled, and the checksum of every page, which the store
/// keeps up to date as it writes (a write adds its word's weight times
/// the change: the sum is linear in the words), so that nothing is summed
/// again at a preserve or at freeze.
pub(super) struct Pages<T: 'static> {
    pages: Vec<Page<T>>,
    /// Pages before this one are settled.
    settled: usize,
    /// The checksum of every page.
    sum: u64,
}

impl<T> Default for Pages<T> {
    fn default() -> Self {
        Self {
            pages: Vec::new(),
            settled: 0,
            sum: 0,
        }
    }
}

impl<T: FromBytes + IntoBytes + KnownLayout + Immutable + 'static> Pages<T> {
    /// Number of pages.
    pub(super) fn len(&self) -> usize {
        self.pages.len()
    }

    /// Page `i`.
    #[inline(always)]
    pub(super) fn get(&self, i: usize) -> &T {
        self.pages[i].get()
    }

    /// Page `i`, for writing: the caller adds what its write changed to
    /// the sum ([`add_to_sum`](Self::add_to_sum)).
    #[inline(always)]
    pub(super) fn get_mut(&mut self, i: usize) -> &mut T {
        self.pages[i].get_mut()
    }

    /// Makes room for `n` more pages; then [`push`](Self::push) cannot
    /// fail. On failure nothing changes.
    pub(super) fn reserve(&mut self, n: usize) -> Result<(), ()> {
        self.pages.try_reserve(n).map_err(|_| ())
    }

    /// Adds a zeroed page at the end (after [`reserve`](Self::reserve)):
    /// its share of the sum is 0.
    pub(super) fn push(&mut self, page: Box<T>) {
        self.pages.push(Page::Heap(page));
    }

    /// The checksum of every page.
    pub(super) fn sum(&self) -> u64 {
        self.sum
    }

    /// Adds `d` (a word's weight times its change) to the sum.
    #[inline(always)]
    pub(super) fn add_to_sum(&mut self, d: u64) {
        self.sum = self.sum.wrapping_add(d);
    }

    /// The checksum computed again from every page, `weigh(index, page)`
    /// each page's share: for tests of the kept one.
    #[cfg(test)]
    pub(super) fn sum_again(&self, weigh: impl Fn(usize, &T) -> u64) -> u64 {
        self.iter()
            .enumerate()
            .fold(0, |s, (i, page)| s.wrapping_add(weigh(i, page)))
    }

    /// Every page, in order.
    #[cfg(test)]
    pub(super) fn iter(&self) -> impl Iterator<Item = &T> + '_ {
        self.pages.iter().map(Page::get)
    }

    /// Moves every page still on the heap into a frame `p` lends, in
    /// order; stops at the first refused. Whether every page is settled.
    pub(super) fn settle(&mut self, p: &mut impl FrameAlloc) -> bool {
        while let Some(page) = self.pages.get_mut(self.settled) {
            if !page.settle(p) {
                return false;
            }
            self.settled += 1;
        }
        true
    }

    /// The address of page `i`, if it exists and is settled.
    pub(super) fn page_phys(&self, i: usize) -> Option<u64> {
        self.pages.get(i).and_then(Page::phys)
    }

    /// The addresses of the settled pages, in order.
    pub(super) fn page_addrs(&self) -> impl Iterator<Item = u64> + '_ {
        self.pages.iter().filter_map(Page::phys)
    }

    /// Gives every settled page back to `p` as it is (see
    /// [`Page::hand_back`]).
    #[cfg(any(test, feature = "host"))]
    pub(super) fn hand_back(self, p: &mut impl FrameAlloc) {
        for page in self.pages {
            page.hand_back(p);
        }
    }

    /// Gives every settled page back to `p` for good.
    #[cfg(any(test, feature = "host"))]
    pub(super) fn release(self, p: &mut impl FrameAlloc) {
        for page in self.pages {
            page.release(p);
        }
    }
}
