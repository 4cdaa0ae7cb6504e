//! The demo's shared state: a pool of 2 MiB blocks that the 2 MiB-folio
//! file draws its folios from (`demo-pool-v1`).
//!
//! The pool is an orchestrator object of its own (family `demo-pool`),
//! shared by its dependents: preserved with the first file that draws from
//! it, restored in the next kernel before any of them, finished after the
//! last. Its state is the blocks it still holds (the ones it gave out are
//! the files'), which the next kernel claims and keeps serving from.

use alloc::vec::Vec;
use kho::claims::Claims;
use kho::luo::{Handler, LuoError, Payload, PayloadIn, Prepared, RestoreCtx, Version};
use kho::platform::{Frame, FrameAlloc, MapError, MapFrames, Mapping, PhysMem};
use kho::ranges::Range;
use kho::tracker::Tracker;
use kho_x86_64::glue::KernelMem;

/// The pool's format: the addresses of its free blocks, LE u64 each.
pub const POOL_V1: Version = Version::new("demo-pool-v1");
/// Its family.
pub const FAMILY: &str = "demo-pool";
/// Where it lives: session and token.
pub const SESSION: &str = "pool";
/// Its token.
pub const TOKEN: u64 = 1;
/// Bytes of a block.
const BLOCK: u64 = 2 << 20;

/// The pool: 2 MiB blocks not given out yet.
#[derive(Debug, Default)]
pub struct Pool {
    /// Free blocks, each 2 MiB aligned.
    pub free: Vec<u64>,
}

impl Pool {
    /// A pool of `n` blocks from the frame allocator.
    pub fn new(n: usize) -> Option<Self> {
        let mut free = Vec::new();
        for _ in 0..n {
            free.push(kho_x86_64::frames::alloc(BLOCK / 4096, BLOCK)?);
        }
        // Served from the end: lowest address first, so that a file's
        // folios lie in address order (one run where they are adjacent).
        free.reverse();
        Some(Self { free })
    }
}

/// The handler of the pool.
pub struct PoolHandler;

impl Handler<KernelMem> for PoolHandler {
    type Object = Pool;
    type Undo = ();
    fn family(&self) -> &'static str {
        FAMILY
    }
    fn writes(&self) -> &[Version] {
        &[POOL_V1]
    }
    fn reads(&self) -> &[Version] {
        &[POOL_V1]
    }
    fn preserve(
        &mut self,
        o: &mut Pool,
        _: &mut KernelMem,
        t: &mut Tracker,
    ) -> Result<(), LuoError> {
        for (i, &b) in o.free.iter().enumerate() {
            if let Err(e) = t.preserve(b, 9) {
                for &c in o.free.iter().take(i) {
                    let _ = t.unpreserve(c, 9);
                }
                return Err(e.into());
            }
        }
        Ok(())
    }
    fn unpreserve(
        &mut self,
        o: &mut Pool,
        _: &mut KernelMem,
        t: &mut Tracker,
    ) -> Result<(), LuoError> {
        for &b in &o.free {
            t.unpreserve(b, 9)?;
        }
        Ok(())
    }
    fn footprint(&self, o: &Pool, out: &mut Vec<Range>) {
        out.extend(o.free.iter().map(|&b| Range::new(b, b + BLOCK)));
    }
    fn prepare(
        &mut self,
        o: &mut Pool,
        _: &mut KernelMem,
        _: &mut Tracker,
        out: &mut Prepared<()>,
    ) -> Result<(), LuoError> {
        let data = o.free.iter().flat_map(|b| b.to_le_bytes()).collect();
        out.payloads.push(Payload::new(POOL_V1.name, data));
        Ok(())
    }
    fn retrieve(
        &mut self,
        pl: &PayloadIn<'_>,
        _: &mut KernelMem,
        ctx: &mut RestoreCtx<'_>,
    ) -> Result<Pool, LuoError> {
        if !pl.data.len().is_multiple_of(8) {
            return Err(LuoError::BadNode("demo-pool-v1 payload"));
        }
        let mut free = Vec::new();
        for i in 0..pl.data.len() / 8 {
            let b = pl
                .u64_at(i)
                .ok_or(LuoError::BadNode("demo-pool-v1 payload"))?;
            let claimed = if b.is_multiple_of(BLOCK) {
                ctx.claims.claim(b, BLOCK / 4096).map_err(LuoError::from)
            } else {
                Err(LuoError::BadNode("demo-pool-v1 block"))
            };
            if let Err(e) = claimed {
                for &c in &free {
                    ctx.claims.release(c, BLOCK / 4096);
                }
                return Err(e);
            }
            free.push(b);
        }
        Ok(Pool { free })
    }
    fn discard(&mut self, o: Pool, _: &mut KernelMem, claims: &mut Claims) {
        for b in o.free {
            claims.release(b, BLOCK / 4096);
        }
    }
}

/// This kernel's platform with 2 MiB frames drawn from a pool (a file
/// written through it takes its 2 MiB folios from the pool).
pub struct PoolMem<'a> {
    /// The pool.
    pub pool: &'a mut Pool,
    /// The platform (this kernel's one token to RAM, lent).
    pub mem: &'a mut KernelMem,
}

impl PhysMem for PoolMem<'_> {
    fn frame(&self, phys: u64) -> Option<&Frame> {
        self.mem.frame(phys)
    }
    fn frame_mut(&mut self, phys: u64) -> Option<&mut Frame> {
        self.mem.frame_mut(phys)
    }
}

impl FrameAlloc for PoolMem<'_> {
    fn alloc_frames(&mut self, order: u32) -> Option<u64> {
        match order {
            9 => self.pool.free.pop().or_else(|| self.mem.alloc_frames(9)),
            _ => self.mem.alloc_frames(order),
        }
    }
    fn free_frames(&mut self, phys: u64, order: u32) {
        self.mem.free_frames(phys, order);
    }
    fn add_free(&mut self, range: Range) {
        self.mem.add_free(range);
    }
}

impl MapFrames for PoolMem<'_> {
    fn map(&mut self, frames: &[u64]) -> Result<Mapping, MapError> {
        self.mem.map(frames)
    }
    fn bytes(&self, m: &Mapping) -> &[u8] {
        self.mem.bytes(m)
    }
    fn bytes_mut(&mut self, m: &Mapping) -> &mut [u8] {
        self.mem.bytes_mut(m)
    }
    fn unmap(&mut self, m: Mapping) {
        self.mem.unmap(m)
    }
    fn flush(&mut self, m: &Mapping) {
        self.mem.flush(m)
    }
}
