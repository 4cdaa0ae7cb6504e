//! Embedding kho on the host: a platform of our own, a two-version object
//! with bulk data, a memfd, two kernels and the negative cases.
//!
//! Written only against the public API (README, docs/embedding.md,
//! rustdoc), the way a kernel author would; it plays both kernels'
//! architecture layer too (the blob written and restored: feature `arch`).
//! `cargo test --features arch --test embed` runs it;
//! `tests/embedding_budget.rs` holds it to its line budget.
//! The regions between `// region:` and `// end` are what the budget
//! counts: the handler (at most 80 lines) and both kernels' life cycle (at
//! most 60).

use kho::abi::handoff::Stamps;
use kho::luo::{
    Handler, LuoError, Payload, PayloadIn, Prepared, RestoreCtx, Version, le_bytes, le_words,
};
use kho::memfd::Memfd;
use kho::memfd::MemfdHandler;
use kho::platform::{Frame, FrameAlloc, MapError, MapFrames, Mapping, PhysMem};
use kho::ranges::Range;
use kho::reserve::{Kept, ReserveLog};
use kho::tracker::Tracker;
use kho::{Freeze, Incoming, Outgoing};

const MIB: u64 = 1 << 20;
/// RAM of the machine: 128 MiB from 2 MiB up (scratch takes the first 64).
const RAM: Range = Range::new(2 * MIB, 130 * MIB);
/// Where each kernel's image lies.
const IMAGE: Range = Range::new(2 * MIB, 3 * MIB);

// ---------------------------------------------------------------------
// The platform: RAM as frames that outlive each "kernel", and a
// first-fit allocator that each kernel builds anew.

/// Physical memory: survives the kexec.
struct Machine {
    frames: Vec<Frame>,
}

/// One kernel's view: the machine, its allocator, its mappings.
struct Kernel<'m> {
    mem: &'m mut Machine,
    used: Vec<bool>,
    maps: Vec<Option<(Vec<u64>, Vec<u8>)>>,
}

impl<'m> Kernel<'m> {
    /// A kernel that may allocate anything but `taken`.
    fn boot(mem: &'m mut Machine, taken: impl Iterator<Item = Range>) -> Self {
        let mut k = Kernel {
            used: vec![false; mem.frames.len()],
            mem,
            maps: Vec::new(),
        };
        for r in taken {
            k.mark(r, true);
        }
        k
    }
    fn mark(&mut self, r: Range, used: bool) {
        for a in (r.start..r.end).step_by(4096) {
            self.used[((a - RAM.start) / 4096) as usize] = used;
        }
    }
}

impl PhysMem for Kernel<'_> {
    fn frame(&self, phys: u64) -> Option<&Frame> {
        let i = phys.checked_sub(RAM.start).filter(|o| o % 4096 == 0)? / 4096;
        self.mem.frames.get(usize::try_from(i).ok()?)
    }
    fn frame_mut(&mut self, phys: u64) -> Option<&mut Frame> {
        let i = phys.checked_sub(RAM.start).filter(|o| o % 4096 == 0)? / 4096;
        self.mem.frames.get_mut(usize::try_from(i).ok()?)
    }
}

impl FrameAlloc for Kernel<'_> {
    fn alloc_frames(&mut self, order: u32) -> Option<u64> {
        let n = 1usize << order;
        let at = (0..self.used.len()).step_by(n).find(|&i| {
            self.used
                .get(i..i + n)
                .is_some_and(|s| s.iter().all(|u| !u))
        })?;
        let r = Range::new(
            RAM.start + at as u64 * 4096,
            RAM.start + (at + n) as u64 * 4096,
        );
        self.mark(r, true);
        Some(r.start)
    }
    fn free_frames(&mut self, phys: u64, order: u32) {
        self.mark(Range::new(phys, phys + (4096 << order)), false);
    }
    fn add_free(&mut self, range: Range) {
        self.mark(range, false);
    }
}

impl MapFrames for Kernel<'_> {
    fn map(&mut self, frames: &[u64]) -> Result<Mapping, MapError> {
        let mut bytes = Vec::new();
        for &f in frames {
            bytes.extend_from_slice(self.frame(f).ok_or(MapError::BadFrame { phys: f })?);
        }
        let m = Mapping {
            virt: self.maps.len() as u64,
            len: bytes.len(),
        };
        self.maps.push(Some((frames.to_vec(), bytes)));
        Ok(m)
    }
    fn bytes(&self, m: &Mapping) -> &[u8] {
        self.maps[m.virt as usize].as_ref().map_or(&[], |(_, b)| b)
    }
    fn bytes_mut(&mut self, m: &Mapping) -> &mut [u8] {
        self.maps[m.virt as usize]
            .as_mut()
            .map_or(&mut [], |(_, b)| b)
    }
    fn unmap(&mut self, m: Mapping) {
        self.flush(&m);
        self.maps[m.virt as usize] = None;
    }
    fn flush(&mut self, m: &Mapping) {
        if let Some((frames, bytes)) = self.maps[m.virt as usize].take() {
            for (f, b) in frames.iter().zip(bytes.chunks(4096)) {
                self.frame_mut(*f).unwrap().copy_from_slice(b);
            }
            self.maps[m.virt as usize] = Some((frames, bytes));
        }
    }
}

// ---------------------------------------------------------------------
// The object: a counter with a page of bulk data, in two versions.

/// A counter and its page of bulk data (at `bulk`, preserved as is).
#[derive(Debug, PartialEq)]
struct Counter {
    value: u64,
    bulk: u64,
}

/// What a counter payload can get wrong.
#[derive(Debug, PartialEq)]
enum CounterError {
    Short,
    BadSum,
}
impl std::fmt::Display for CounterError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self:?}")
    }
}
impl std::error::Error for CounterError {}

const V2: Version = Version::new("counter-v2");
const V1: Version = Version::new("counter-v1");
fn page(at: u64) -> Range {
    Range::new(at, at + 4096)
}
fn sum(p: &impl PhysMem, page: u64) -> u64 {
    p.frame(page)
        .map_or(0, |f| f.iter().map(|&b| u64::from(b)).sum())
}

// region: handler
/// Writes `counter-v2` (value, bulk page, the page's sum, inline) and
/// `counter-v1` (an index page holding the same three words); reads
/// `reads`. Checks every payload's length, the index page and the sum.
struct CounterHandler {
    reads: Vec<Version>,
}

impl<P: kho::luo::Platform> Handler<P> for CounterHandler {
    type Object = Counter;
    type Undo = u64; // the index page, freed if the kexec does not happen
    fn family(&self) -> &'static str {
        "counter"
    }
    fn writes(&self) -> &[Version] {
        &[V2, V1]
    }
    fn reads(&self) -> &[Version] {
        &self.reads
    }
    fn preserve(&mut self, c: &mut Counter, _: &mut P, t: &mut Tracker) -> Result<(), LuoError> {
        Ok(t.preserve(c.bulk, 0)?)
    }
    fn unpreserve(&mut self, c: &mut Counter, _: &mut P, t: &mut Tracker) -> Result<(), LuoError> {
        Ok(t.unpreserve(c.bulk, 0)?)
    }
    fn footprint(&self, c: &Counter, out: &mut Vec<Range>) {
        out.push(page(c.bulk)); // what a kernel that cannot read it keeps
    }
    fn prepare(
        &mut self,
        c: &mut Counter,
        p: &mut P,
        t: &mut Tracker,
        out: &mut Prepared<u64>,
    ) -> Result<(), LuoError> {
        let words = le_bytes(&[c.value, c.bulk, sum(p, c.bulk)]);
        let index = p.alloc_frames(0).ok_or(LuoError::OutOfMemory)?;
        p.frame_mut(index).ok_or(LuoError::OutOfMemory)?[..24].copy_from_slice(&words);
        t.preserve(index, 0)
            .inspect_err(|_| p.free_frames(index, 0))?;
        (out.keep, out.footprint) = (vec![index], vec![page(index)]);
        out.payloads.push(Payload::new(V2.name, words));
        out.payloads.push(Payload::new(V1.name, le_bytes(&[index])));
        Ok(())
    }
    fn unprepare(&mut self, _: &mut Counter, done: Prepared<u64>, p: &mut P, t: &mut Tracker) {
        for index in done.keep {
            let _ = t.unpreserve(index, 0);
            p.free_frames(index, 0);
        }
    }
    fn retrieve(
        &mut self,
        pl: &PayloadIn<'_>,
        p: &mut P,
        ctx: &mut RestoreCtx<'_>,
    ) -> Result<Counter, LuoError> {
        let bad = |e| LuoError::handler("counter", e);
        let short = || bad(CounterError::Short);
        let [value, bulk, want] = if pl.version == V1.name {
            let [index] = pl.words().ok_or_else(short)?;
            ctx.claims.claim_meta(index, 1)?; // read here, freed at finish
            let f = p.frame(index).ok_or_else(short)?;
            let zeros = f[24..].iter().all(|&b| b == 0);
            le_words(&f[..24]).filter(|_| zeros).ok_or_else(short)?
        } else {
            pl.words().ok_or_else(short)?
        };
        ctx.claims.claim(bulk, 1)?;
        if sum(p, bulk) != want {
            ctx.claims.release(bulk, 1);
            return Err(bad(CounterError::BadSum));
        }
        Ok(Counter { value, bulk })
    }
    fn discard(&mut self, c: Counter, _: &mut P, claims: &mut kho::claims::Claims) {
        claims.release(c.bulk, 1);
    }
}
// end

// ---------------------------------------------------------------------
// Two kernels.

/// What the first kernel hands over: the blob's bytes and where they lie.
struct Handed {
    blob: Vec<u8>,
    at: Range,
    bulk: u64,
}

// region: life cycle
/// The first kernel: a counter and a file in session `app`, frozen against
/// what the next kernel reads, and the blob written into frames of its own.
fn first_kernel(m: &mut Machine, next_reads: &[u8]) -> Result<Handed, kho::Error> {
    let mut k = Kernel::boot(m, [IMAGE].into_iter());
    let scratch = kho::scratch::cold_boot(&[RAM], IMAGE, RAM.start, 3 * MIB)?;
    k.mark(Range::new(RAM.start, scratch.areas()[0].end), true);
    let mut out = Outgoing::new(scratch)?;
    let counters = out.register(CounterHandler {
        reads: vec![V2, V1],
    })?;
    let files = out.register(MemfdHandler::default())?;
    out.create_session("app")?;
    let bulk = k.alloc_frames(0).unwrap();
    k.frame_mut(bulk).unwrap().fill(7);
    out.preserve(counters, "app", 1, Counter { value: 41, bulk }, &mut k)?;
    let mut f = Memfd::new(true);
    f.write(&mut k, 0, b"state that must survive")?;
    out.preserve(files, "app", 2, f, &mut k)?;
    let next = kho::luo::ReadList::parse(next_reads).unwrap();
    let mut out = out.freeze(&mut k, Freeze::NoLoss(&next))?;
    let mut buf = vec![0u8; 64 << 10];
    let len = out.write(&mut k, &mut buf, 0, Stamps::default())?.len;
    let at = k.alloc_frames(4).unwrap();
    assert!(k.write_bytes(at, &buf[..len]));
    Ok(Handed {
        blob: buf[..len].to_vec(),
        at: Range::new(at, at + len as u64),
        bulk,
    })
}

/// The next kernel: restore, take both objects, finish.
fn next_kernel(
    m: &mut Machine,
    h: &Handed,
    reads: &[Version],
) -> Result<(u64, Vec<u8>), kho::Error> {
    let (mut reserved, k) = (ReserveLog::new(), Kernel::boot(m, [].into_iter()));
    let mut inc = Incoming::new(&k, &h.blob, h.at, &[RAM], &mut reserved)?;
    let reads = reads.to_vec();
    let counters = inc.register(CounterHandler { reads })?;
    let files = inc.register(MemfdHandler::default())?;
    let mut k = Kernel::boot(m, reserved.ranges.iter().map(|(r, _)| *r).chain([IMAGE]));
    let mut inc = inc.restore(&mut k); // every object, now
    let (c, _version) = inc.take(&counters.key("app", 1), &mut k)?;
    assert_eq!(sum(&k, c.bulk), 7 * 4096);
    let (f, _) = inc.take(&files.key("app", 2), &mut k)?;
    let mut text = vec![0u8; f.size() as usize];
    f.read(&k, 0, &mut text);
    let done = inc.finish(&mut k)?;
    assert!(done.lost.is_empty() && done.unread.is_none());
    Ok((c.value + 1, text))
}
// end

/// A kernel that reads files but no counter version at all: it takes the
/// file and carries the counter, untouched, into its own handoff.
fn middle_kernel(m: &mut Machine, h: &Handed, next_reads: &[u8]) -> Handed {
    let mut reserved = ReserveLog::new();
    let k = Kernel::boot(m, [].into_iter());
    let mut inc = Incoming::new(&k, &h.blob, h.at, &[RAM], &mut reserved).unwrap();
    let files = inc.register(MemfdHandler::default()).unwrap();
    let mut k = Kernel::boot(m, reserved.ranges.iter().map(|(r, _)| *r).chain([IMAGE]));
    let mut inc = inc.restore(&mut k);
    let (f, _) = inc.take(&files.key("app", 2), &mut k).unwrap();
    let (scratch, hop) = (*inc.scratch(), inc.next_hop());
    // What this kernel preserves must come from outside scratch.
    k.mark(Range::new(RAM.start, scratch.areas()[0].end), true);
    let done = inc.finish(&mut k).unwrap();
    assert!(done.lost.is_empty(), "{:?}", done.lost);
    assert_eq!(done.carried.len(), 1, "the counter is carried, not lost");
    let mut out = Outgoing::new(scratch).unwrap();
    let files = out.register(MemfdHandler::default()).unwrap();
    assert!(out.carry(done.carried, &mut k).is_empty());
    out.create_session("app").unwrap();
    out.preserve(files, "app", 2, f, &mut k).unwrap();
    let next = kho::luo::ReadList::parse(next_reads).unwrap();
    let mut out = out.freeze(&mut k, Freeze::NoLoss(&next)).unwrap();
    let mut buf = vec![0u8; 64 << 10];
    let len = out
        .write(&mut k, &mut buf, hop, Stamps::default())
        .unwrap()
        .len;
    let at = k.alloc_frames(4).unwrap();
    assert!(k.write_bytes(at, &buf[..len]));
    Handed {
        blob: buf[..len].to_vec(),
        at: Range::new(at, at + len as u64),
        bulk: h.bulk,
    }
}

fn main() {
    let mut m = Machine {
        frames: vec![[0u8; 4096]; (RAM.len() / 4096) as usize],
    };
    // 1. A next kernel that reads both versions: everything arrives.
    let all = b"counter-v2\0counter-v1\0memfd-v2\0kho-luo-v2\0";
    let h = first_kernel(&mut m, all).unwrap();
    let (value, text) = next_kernel(&mut m, &h, &[V2, V1]).unwrap();
    assert_eq!(
        (value, text.as_slice()),
        (42, &b"state that must survive"[..])
    );
    // 2. An older next kernel (reads counter-v1 only) gets the v1 payload.
    let h = first_kernel(&mut m, b"counter-v1\0memfd-v1\0kho-luo-v2\0").unwrap();
    assert_eq!(next_kernel(&mut m, &h, &[V1]).unwrap().0, 42);
    // 3. A next kernel that reads no counter version carries it, bulk page
    //    and all, to a third kernel that reads it.
    let h = first_kernel(&mut m, b"memfd-v2\0kho-luo-v2\0").unwrap();
    let h = middle_kernel(&mut m, &h, all);
    assert_eq!(next_kernel(&mut m, &h, &[V2, V1]).unwrap().0, 42);
    // 4. A next kernel with no kho orchestrator: the freeze refuses, and
    //    says that is why (all objects, one cause).
    let e = first_kernel(&mut m, b"memfd-v2\0").err().unwrap();
    assert!(matches!(
        e,
        kho::Error::Luo(LuoError::NextReadsNoNode { objects: 2 })
    ));
    // 5. Bulk data changed under a v2 payload: a typed error names it.
    let h = first_kernel(&mut m, b"counter-v2\0memfd-v2\0kho-luo-v2\0").unwrap();
    m.frames[((h.bulk - RAM.start) / 4096) as usize][0] ^= 1;
    match next_kernel(&mut m, &h, &[V2]) {
        Err(kho::Error::Luo(LuoError::Handler { family, error })) => {
            assert_eq!(family, "counter");
            assert_eq!(
                error.downcast_ref::<CounterError>(),
                Some(&CounterError::BadSum)
            );
        }
        other => panic!("expected a bad sum, got {other:?}"),
    }
    // 6. A flipped byte in the blob: refused whole, nothing reserved.
    let mut h = first_kernel(&mut m, all).unwrap();
    h.blob[100] ^= 0x40;
    let mut reserved = ReserveLog::new();
    let k = Kernel::boot(&mut m, [].into_iter());
    assert!(Incoming::<Kernel>::new(&k, &h.blob, h.at, &[RAM], &mut reserved).is_err());
    assert!(reserved.of(Kept::Preserved).next().is_none());
    // 7. A v1 index page with a stray byte after its three words: the
    //    v1-only reader refuses it by name, and adopts nothing.
    let h = first_kernel(&mut m, b"counter-v1\0memfd-v1\0kho-luo-v2\0").unwrap();
    let handoff = kho::handoff::Handoff::parse(&h.blob, &[RAM]).unwrap();
    let view = kho::luo::NodeView::read(&handoff).unwrap();
    let index = view
        .objects()
        .find(|o| o.family == "counter")
        .and_then(|o| o.payloads.iter().find(|p| p.version == V1.name).copied())
        .and_then(|p| p.data.try_into().ok())
        .map(u64::from_le_bytes)
        .unwrap();
    m.frames[((index - RAM.start) / 4096) as usize][100] = 1;
    match next_kernel(&mut m, &h, &[V1]) {
        Err(kho::Error::Luo(e @ LuoError::Handler { .. })) => {
            assert_eq!(e.kind(), kho::ErrorKind::Handler);
            let LuoError::Handler { error, .. } = e else {
                unreachable!()
            };
            assert_eq!(error.downcast_ref(), Some(&CounterError::Short));
        }
        other => panic!("expected a short index page, got {other:?}"),
    }
    println!("embed: 7 scenarios passed");
}
