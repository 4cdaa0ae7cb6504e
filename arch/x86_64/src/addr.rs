//! Physical and virtual addresses as distinct types, so that one is never
//! used for the other.

/// A physical address.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(transparent)]
pub struct PhysAddr(u64);

impl PhysAddr {
    /// The physical address `a`.
    pub const fn new(a: u64) -> Self {
        Self(a)
    }

    /// Its value.
    pub const fn as_u64(self) -> u64 {
        self.0
    }
}

/// Physical addresses are `u64` in kho's APIs (`kho::ranges::Range`).
impl From<u64> for PhysAddr {
    fn from(a: u64) -> Self {
        Self(a)
    }
}

/// A virtual address in this kernel's address space.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(transparent)]
pub struct VirtAddr(u64);

impl VirtAddr {
    /// The virtual address `a`.
    pub const fn new(a: u64) -> Self {
        Self(a)
    }

    /// Its value.
    pub const fn as_u64(self) -> u64 {
        self.0
    }

    /// As a pointer (to dereference it is the caller's `unsafe`).
    pub const fn as_ptr<T>(self) -> *const T {
        self.0 as *const T
    }

    /// As a mutable pointer (to dereference it is the caller's `unsafe`).
    pub const fn as_mut_ptr<T>(self) -> *mut T {
        self.0 as *mut T
    }

    /// `bytes` further on (wrapping: only the caller's use of the result
    /// can make it meaningful).
    pub const fn add(self, bytes: u64) -> Self {
        Self(self.0.wrapping_add(bytes))
    }
}
