//! Tracker: preserve cost, bytes handed over and restore-walk cost, against
//! a model of Linux's radix tracker and a BTreeMap of ranges.

use crate::timing::{Stat, ns_per_call, ns_per_call_pair};
use crate::{Figure, Target};
use kho::platform::host::HostMem;
use kho::ranges::Range;
use kho::tracker::Tracker;
use kho::tracker::chain::{self, Reader};
use std::collections::BTreeMap;
use std::hint::black_box;

/// A model of Linux's KHO radix tracker (kho-v4), from the documented
/// design: one tree for all orders, every node a 4 KiB page, inner nodes of
/// 512 child addresses, leaves of 32768 bits, key
/// `(1 << (52 - order)) | (phys >> (12 + order))`, five inner levels above
/// the leaf. No lock (the real one takes a mutex per call), no double-
/// preserve check, nodes never freed while the tree lives.
struct LinuxModel {
    /// Node arena; slot 0 is the root. Inner entries hold child index + 1.
    /// Each node is its own 4 KiB page, zeroed when taken, as in the kernel.
    nodes: Vec<Box<[u64; 512]>>,
    /// Which nodes are leaves (bitmaps) rather than inner nodes.
    leaf: Vec<bool>,
}

const LEAF_BITS: u32 = 15;

thread_local! {
    /// Pages of dropped trees, for the next: like the kernel's page
    /// allocator, a node costs zeroing a page that is already mapped, not a
    /// fresh allocation and its page faults (which made an earlier version
    /// of this model twice as slow as the reference on isolated
    /// pages).
    static PAGES: std::cell::RefCell<Vec<Box<[u64; 512]>>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

impl Drop for LinuxModel {
    fn drop(&mut self) {
        PAGES.with(|p| p.borrow_mut().append(&mut self.nodes));
    }
}

impl LinuxModel {
    fn new() -> Self {
        Self {
            nodes: vec![Self::node()],
            leaf: vec![false],
        }
    }

    /// A zeroed 4 KiB node: a page from the pool (zeroed here, as
    /// `get_zeroed_page` does), or a new zeroed allocation.
    fn node() -> Box<[u64; 512]> {
        if let Some(mut n) = PAGES.with(|p| p.borrow_mut().pop()) {
            n.fill(0);
            return n;
        }
        vec![0u64; 512]
            .into_boxed_slice()
            .try_into()
            .expect("512 entries")
    }

    fn key(phys: u64, order: u32) -> u64 {
        (1u64 << (52 - order)) | (phys >> (12 + order))
    }

    #[inline(always)]
    fn preserve(&mut self, phys: u64, order: u32) {
        let key = Self::key(phys, order);
        let mut n = 0usize;
        for level in (0..5).rev() {
            let idx = ((key >> (LEAF_BITS + 9 * level)) & 511) as usize;
            let child = self.nodes[n][idx];
            n = if child == 0 {
                self.nodes.push(Self::node());
                self.leaf.push(level == 0);
                let c = self.nodes.len() - 1;
                self.nodes[n][idx] = c as u64 + 1;
                c
            } else {
                child as usize - 1
            };
        }
        let bit = (key & ((1 << LEAF_BITS) - 1)) as usize;
        self.nodes[n][bit / 64] |= 1 << (bit % 64);
    }

    fn bytes(&self) -> usize {
        self.nodes.len() * 4096
    }

    /// Visits every preserved block, as the next kernel's early walk does.
    fn walk(&self, f: &mut impl FnMut(u64, u32)) {
        self.walk_node(0, 4, 0, f);
    }

    fn walk_node(&self, n: usize, level: u32, prefix: u64, f: &mut impl FnMut(u64, u32)) {
        for (i, &w) in self.nodes[n].iter().enumerate() {
            if w == 0 {
                continue;
            }
            if self.leaf[n] {
                leaf_word(prefix, i, w, f);
            } else {
                let child = w as usize - 1;
                let next = (prefix << 9) | i as u64;
                if level == 0 {
                    self.walk_node(child, 0, next, f);
                } else {
                    self.walk_node(child, level - 1, next, f);
                }
            }
        }
    }
}

/// Reports the blocks of word `i` of a leaf (bits `w`) under `prefix`, as
/// both models' walks decode them from the key.
#[inline(always)]
fn leaf_word(prefix: u64, i: usize, w: u64, f: &mut impl FnMut(u64, u32)) {
    let mut b = w;
    while b != 0 {
        let bit = b.trailing_zeros() as u64;
        b &= b - 1;
        let key = (prefix << LEAF_BITS) | (i as u64 * 64 + bit);
        let order = 52 - (63 - key.leading_zeros());
        let phys = (key & ((1u64 << (52 - order)) - 1)) << (12 + order);
        f(phys, order);
    }
}

/// A faithful model of the same Linux radix tracker: laid out as the
/// kernel lays it out. Every node is a 4 KiB page of one contiguous,
/// pre-faulted arena (the kernel's page allocator: a node costs zeroing a
/// page that is already mapped); an inner entry holds its child's
/// "physical address" (its byte offset in the arena, page 0 never used, so
/// 0 means none), reached as `phys_to_virt` reaches it, by an add; whether
/// a node is a leaf follows from its depth, as in the kernel (no side
/// table). What it leaves out: the per-call mutex of the real
/// `kho_preserve_*` and its `might_sleep`, and the double-preserve check.
struct FaithfulModel {
    /// The arena; `used` pages of it are in the tree (page 1 the root).
    nodes: Vec<[u64; 512]>,
    used: usize,
}

thread_local! {
    /// The arena between builds: pages stay mapped, as the kernel's do.
    static ARENA: std::cell::RefCell<Vec<[u64; 512]>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

impl Drop for FaithfulModel {
    fn drop(&mut self) {
        ARENA.with(|a| *a.borrow_mut() = core::mem::take(&mut self.nodes));
    }
}

impl FaithfulModel {
    /// A tree whose arena holds `pages` pre-faulted pages (more are added
    /// if needed).
    fn new(pages: usize) -> Self {
        let mut nodes = ARENA.with(|a| core::mem::take(&mut *a.borrow_mut()));
        if nodes.len() < pages + 2 {
            nodes.resize(pages + 2, [0; 512]);
        }
        let mut m = Self { nodes, used: 1 };
        m.take();
        m
    }

    /// A zeroed page (`get_zeroed_page`), by its index.
    #[inline(always)]
    fn take(&mut self) -> usize {
        let c = self.used;
        if c == self.nodes.len() {
            self.nodes.push([0; 512]);
        } else {
            self.nodes[c].fill(0);
        }
        self.used = c + 1;
        c
    }

    #[inline(always)]
    fn preserve(&mut self, phys: u64, order: u32) {
        let key = LinuxModel::key(phys, order);
        let mut n = 1usize;
        for level in (0..5).rev() {
            let idx = ((key >> (LEAF_BITS + 9 * level)) & 511) as usize;
            let child = self.nodes[n][idx];
            n = if child == 0 {
                let c = self.take();
                self.nodes[n][idx] = (c as u64) << 12;
                c
            } else {
                (child >> 12) as usize
            };
        }
        let bit = (key & ((1 << LEAF_BITS) - 1)) as usize;
        self.nodes[n][bit / 64] |= 1 << (bit % 64);
    }

    /// Visits every preserved block, as the next kernel's early walk does
    /// (the leaves at depth 5).
    fn walk(&self, f: &mut impl FnMut(u64, u32)) {
        self.walk_node(1, 5, 0, f);
    }

    fn walk_node(&self, n: usize, depth: u32, prefix: u64, f: &mut impl FnMut(u64, u32)) {
        for (i, &w) in self.nodes[n].iter().enumerate() {
            if w == 0 {
                continue;
            }
            if depth == 0 {
                leaf_word(prefix, i, w, f);
            } else {
                self.walk_node((w >> 12) as usize, depth - 1, (prefix << 9) | i as u64, f);
            }
        }
    }
}

/// The obvious baseline: a BTreeMap from start to end, checked for overlap.
#[derive(Default)]
struct MapModel {
    map: BTreeMap<u64, u64>,
}

impl MapModel {
    fn preserve(&mut self, phys: u64, order: u32) -> bool {
        let end = phys + (4096u64 << order);
        if let Some((_, &e)) = self.map.range(..end).next_back()
            && e > phys
        {
            return false;
        }
        self.map.insert(phys, end);
        true
    }
}

/// Chain pages: the host's fake physical memory, a pool from 2^50 up.
fn chain_mem() -> HostMem {
    HostMem::with_pool(Range::new(1 << 50, (1 << 50) + (1 << 40)))
}

/// A workload: sequential blocks are generated in the loop (as a kernel
/// preserving a buffer would), scattered ones come from a list.
struct Case {
    name: &'static str,
    seq: Option<(u64, u64, u32)>,
    blocks: Vec<(u64, u32)>,
}

impl Case {
    fn len(&self) -> usize {
        self.seq.map_or(self.blocks.len(), |(_, n, _)| n as usize)
    }
}

/// Runs `$body` for each block `($p, $o)` of case `$c`. A macro rather than
/// a method taking a closure: every tracker measured gets its body inlined
/// in the same loops (a closure called from four loops was not inlined,
/// which charged a call per block to whichever tracker it fell on), and
/// the order is a literal where the case has one, as in a kernel that
/// preserves pages or folios of a known size.
macro_rules! each_block {
    ($c:expr, |$p:ident, $o:ident| $body:expr) => {
        match $c.seq {
            Some((base, n, 0)) => {
                for i in 0..n {
                    let ($p, $o) = (base + (i << 12), 0u32);
                    $body;
                }
            }
            Some((base, n, 9)) => {
                for i in 0..n {
                    let ($p, $o) = (base + (i << 21), 9u32);
                    $body;
                }
            }
            Some((base, n, order)) => {
                for i in 0..n {
                    let ($p, $o) = (base + (i << (12 + order)), order);
                    $body;
                }
            }
            None => {
                for &($p, $o) in &$c.blocks {
                    $body;
                }
            }
        }
    };
}

fn xorshift(s: &mut u64) -> u64 {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    *s
}

fn cases() -> Vec<Case> {
    let gib = 1u64 << 30;
    // 100,000 distinct random pages over 1 TiB, in random order.
    let mut s = 0x2545_f491_4f6c_dd1d;
    let mut seen = std::collections::HashSet::new();
    let mut isolated = Vec::new();
    while isolated.len() < 100_000 {
        let pfn = xorshift(&mut s) % (1 << 28);
        if seen.insert(pfn)
            && !seen.contains(&(pfn + 1))
            && (pfn == 0 || !seen.contains(&(pfn - 1)))
        {
            isolated.push((pfn << 12, 0));
        }
    }
    // A realistic mix: a VM's 2 MiB-backed memory, memfd folios of orders 0
    // to 4 scattered in 8 GiB, device pages, and two 1 GiB huge pages.
    let mut mix = Vec::new();
    for i in 0..256u64 {
        mix.push((16 * gib + (i << 21), 9));
    }
    let mut used = std::collections::HashSet::new();
    while mix.len() < 256 + 30_000 {
        let order = (xorshift(&mut s) % 5) as u32;
        let slot = xorshift(&mut s) % ((8 * gib) >> 16); // 64 KiB slots: no overlap
        if used.insert(slot) {
            mix.push((32 * gib + (slot << 16), order));
        }
    }
    for i in 0..2u64 {
        mix.push((64 * gib + i * gib, 18));
    }
    vec![
        Case {
            name: "dense 1 GiB of 4 KiB pages",
            seq: Some((4 * gib, gib >> 12, 0)),
            blocks: vec![],
        },
        Case {
            name: "1 GiB as 2 MiB folios",
            seq: Some((4 * gib, 512, 9)),
            blocks: vec![],
        },
        Case {
            name: "100k isolated 4 KiB pages over 1 TiB",
            seq: None,
            blocks: isolated,
        },
        Case {
            name: "mix: 2 MiB, order 0-4, 1 GiB",
            seq: None,
            blocks: mix,
        },
    ]
}

// The three builders have the same shape, and each is measured as
// `black_box(build(black_box(case)))`.

fn build_ours(c: &Case) -> Tracker {
    let mut t = Tracker::new(&[]).unwrap();
    each_block!(c, |p, o| t.preserve(p, o).unwrap());
    t
}

fn build_linux(c: &Case) -> LinuxModel {
    let mut m = LinuxModel::new();
    each_block!(c, |p, o| m.preserve(p, o));
    m
}

fn build_faithful(c: &Case, pages: usize) -> FaithfulModel {
    let mut m = FaithfulModel::new(pages);
    each_block!(c, |p, o| m.preserve(p, o));
    m
}

fn build_map(c: &Case) -> MapModel {
    let mut m = MapModel::default();
    each_block!(c, |p, o| assert!(m.preserve(p, o)));
    m
}

/// Runs the tracker benchmarks and returns their figures.
/// The tracker's share of a freeze for 16 GiB of preserved 4 KiB pages,
/// against the same for 1 GiB: the target is a freeze whose
/// tracker work does not grow with the preserved set (within 1.1x). The
/// tracker's pages settle as they are made (a lending platform's owner
/// settles after each change: here, once after building), so a freeze
/// lists nothing new and writes only the root. The chain written at
/// freeze (where nothing is lent) is shown beside it.
fn freeze_scaling() -> Vec<Figure> {
    let build = |gib: u64| {
        // Page by page, as a kernel preserving 4 KiB pages would leave it:
        // every other page, so that no region coalesces to one block.
        let mut t = Tracker::new(&[]).unwrap();
        for i in 0..(gib << 30) >> 13 {
            t.preserve((1 << 32) + (i << 13), 0).unwrap();
        }
        t
    };
    let (mut small, mut large) = (build(1), build(16));
    let (mut m1, mut m16) = (chain_mem(), chain_mem());
    let write = |t: &Tracker, mem: &mut HostMem| {
        let root = chain::write(t, mem).unwrap();
        chain::free(mem, black_box(&root));
    };
    let (c1, c16) = ns_per_call_pair(|| write(&small, &mut m1), || write(&large, &mut m16));
    let (mut l1, mut l16) = (chain_mem(), chain_mem());
    l1.lend_frames();
    l16.lend_frames();
    small.in_place(&mut l1).unwrap();
    large.in_place(&mut l16).unwrap();
    let (t1, t16) = ns_per_call_pair(
        || {
            black_box(small.in_place(&mut l1).unwrap());
        },
        || {
            black_box(large.in_place(&mut l16).unwrap());
        },
    );
    vec![
        Figure::new(
            "tracker freeze work in place (pages settled as made; root written): 16 GiB of every other 4 KiB page".into(),
            t16 / 1e3,
            "us",
            "the same for 1 GiB",
            t1 / 1e3,
        )
        .with_target(Target::Ratio(1.1)),
        Figure::new(
            "tracker freeze work as a chain (written and freed; where nothing is lent): 16 GiB of every other 4 KiB page".into(),
            c16 / 1e3,
            "us",
            "the same for 1 GiB",
            c1 / 1e3,
        ),
    ]
}

pub fn run() -> Vec<Figure> {
    let mut figs = Vec::new();
    let ram = [Range::new(0, 1 << 52)];
    for c in cases() {
        let n = c.len() as f64;
        // Sanity: everyone holds the same blocks.
        let ours = build_ours(&c);
        let lm = build_linux(&c);
        let mm = build_map(&c);
        let mut walked = 0u64;
        lm.walk(&mut |_, o| walked += 1 << o);
        assert_eq!(
            walked,
            ours.pages(),
            "{}: the Linux model holds other pages",
            c.name
        );
        // The faithful model: the same tree, as the kernel lays it out.
        let pages = lm.nodes.len();
        let model_pages = pages;
        let fm = build_faithful(&c, pages);
        let mut walked = 0u64;
        fm.walk(&mut |_, o| walked += 1 << o);
        assert_eq!(
            walked,
            ours.pages(),
            "{}: the faithful model differs",
            c.name
        );
        assert_eq!(
            fm.used - 1,
            pages,
            "{}: the two models' trees differ",
            c.name
        );

        // Preserve: ns per call, building the whole set each time; ours
        // and the Linux model's samples interleaved.
        let (t_ours, t_linux) = ns_per_call_pair(
            || {
                black_box(build_ours(black_box(&c)));
            },
            || {
                black_box(build_linux(black_box(&c)));
            },
        );
        let (t_ours, t_linux) = (t_ours / n, t_linux / n);
        drop(fm);
        let (t_ours2, t_faithful) = ns_per_call_pair(
            || {
                black_box(build_ours(black_box(&c)));
            },
            || {
                black_box(build_faithful(black_box(&c), pages));
            },
        );
        let (t_ours2, t_faithful) = (t_ours2 / n, t_faithful / n);
        let fm = build_faithful(&c, pages);
        let t_map = ns_per_call(|| {
            black_box(build_map(black_box(&c)));
        }) / n;

        // Handover: our chain; the Linux tree is handed over as it is, so
        // its preserve is the whole cost our preserve plus write compares
        // with.
        let mut pages = chain_mem();
        let root = chain::write(&ours, &mut pages).unwrap();
        let ours_bytes = root.pages.get() as f64 * 4096.0 + 32.0;
        // One fake memory for every write, its chain pages freed after
        // each (a fresh fake per write cost more than the write).
        let mut wmem = chain_mem();
        let t_write = ns_per_call(|| {
            let root = chain::write(&ours, &mut wmem).unwrap();
            chain::free(&mut wmem, &root);
            black_box(root);
        }) / n;

        // In place: the same preserves, then what freeze does when the
        // tracker's pages were not settled as they were made (a lending
        // platform settles them after each object's preserve; here all
        // at once): every page into a lent frame, listed, and the root.
        // The host fake copies each page home again when it is released
        // (a kernel does not), which this figure pays too.
        let mut lmem = chain_mem();
        lmem.lend_frames();
        let (t_inplace, t_faithful3) = ns_per_call_pair(
            || {
                let mut t = build_ours(black_box(&c));
                black_box(t.in_place(&mut lmem).unwrap());
                t.release(&mut lmem);
            },
            || {
                black_box(build_faithful(black_box(&c), model_pages));
            },
        );
        let (t_inplace, t_faithful3) = (t_inplace / n, t_faithful3 / n);

        // Restore walk: one checked pass over the chain, every range
        // reported into a reservation that only counts; the Linux model
        // walks its tree (interleaved).
        let reader = Reader::new(&pages, root, &ram, &[]);
        let mut log = kho::reserve::ReserveLog::new();
        reader.restore(&mut log).unwrap();
        assert_eq!(log.bytes(kho::reserve::Kept::Preserved) >> 12, ours.pages());
        // Ours, interleaved with each model's walk in turn.
        let restore = || {
            let mut c = kho::reserve::ReserveCount::default();
            black_box(reader.restore(&mut c).unwrap());
            black_box(c.bytes);
        };
        let (t_restore, t_lwalk) = ns_per_call_pair(restore, || {
            let mut s = 0u64;
            lm.walk(&mut |p, _| s += p);
            black_box(s);
        });
        let (t_restore, t_lwalk) = (t_restore / n, t_lwalk / n);
        // The faithful model's walk, the peer of both our walks.
        let fwalk = || {
            let mut s = 0u64;
            fm.walk(&mut |p, _| s += p);
            black_box(s);
        };
        let (t_restore2, t_fwalk) = ns_per_call_pair(restore, fwalk);
        let (t_restore2, t_fwalk) = (t_restore2 / n, t_fwalk / n);
        // The same walk of the tracker handed over in place: every page
        // summed, every slot and leaf decoded.
        let mut imem = chain_mem();
        imem.lend_frames();
        let mut it = build_ours(&c);
        let iroot = it.in_place(&mut imem).unwrap();
        it.hand_back(&mut imem);
        let (t_irestore, t_fwalk2) = ns_per_call_pair(
            || {
                let mut c = kho::reserve::ReserveCount::default();
                black_box(
                    kho::tracker::inplace::restore(&imem, &iroot, &ram, &[], &mut c).unwrap(),
                );
                black_box(c.bytes);
            },
            fwalk,
        );
        let (t_irestore, t_fwalk2) = (t_irestore / n, t_fwalk2 / n);
        let t_mwalk = ns_per_call(|| {
            let mut s = 0u64;
            for &a in mm.map.keys() {
                s += a;
            }
            black_box(s);
        }) / n;

        println!(
            "tracker {}: {} blocks; ours {:.2} ns/preserve, {} B handed over ({:.2} B/block), write {:.2} ns/block, restore {:.3} ns/block; tracker memory {} KiB",
            c.name,
            c.len(),
            t_ours,
            ours_bytes,
            ours_bytes / n,
            t_write,
            t_restore,
            ours.memory_bytes() / 1024
        );
        let f = |what: &str, v: Stat, unit: &'static str, peer: &str, pv: Stat| {
            Figure::new(format!("tracker {}: {what}", c.name), v, unit, peer, pv)
        };
        figs.push(
            f(
                "preserve + handover write",
                t_ours2 + t_write,
                "ns/block",
                "faithful linux model preserve (nodes as the kernel lays them out; its tree is handed over as is)",
                t_faithful,
            )
            .with_target(Target::Ratio(1.0)),
        );
        figs.push(
            f(
                "preserve + hand over in place (pages settled, listed, root)",
                t_inplace,
                "ns/block",
                "faithful linux model preserve (nodes as the kernel lays them out; its tree is handed over as is)",
                t_faithful3,
            )
            .with_target(Target::Ratio(1.0)),
        );
        figs.push(f(
            "preserve",
            t_ours2,
            "ns/block",
            "faithful linux model",
            t_faithful,
        ));
        figs.push(f(
            "preserve + handover write",
            t_ours + t_write,
            "ns/block",
            "old linux model (boxed nodes and a leaf table: slower than the kernel's layout; kept for comparison)",
            t_linux,
        ));
        figs.push(f(
            "preserve",
            t_ours,
            "ns/block",
            "old linux model (boxed nodes and a leaf table)",
            t_linux,
        ));
        figs.push(f("preserve", t_ours, "ns/block", "btreemap", t_map));
        let exact = Stat::exact;
        figs.push(f(
            "bytes handed over",
            exact(ours_bytes),
            "bytes",
            "linux-model",
            exact(lm.bytes() as f64),
        ));
        figs.push(f(
            "bytes handed over",
            exact(ours_bytes),
            "bytes",
            "btreemap (16 bytes a block)",
            exact(mm.map.len() as f64 * 16.0),
        ));
        figs.push(f(
            "bytes handed over per block",
            exact(ours_bytes / n),
            "bytes/block",
            "linux-model",
            exact(lm.bytes() as f64 / n),
        ));
        figs.push(
            f(
                "restore walk",
                t_restore2,
                "ns/block",
                "faithful linux model walk",
                t_fwalk,
            )
            .with_target(Target::Ratio(1.0)),
        );
        figs.push(f(
            "restore walk",
            t_restore,
            "ns/block",
            "old linux model (boxed nodes and a leaf table)",
            t_lwalk,
        ));
        figs.push(f(
            "restore walk",
            t_restore,
            "ns/block",
            "btreemap: visiting its keys, nothing checked (a bound, not a peer)",
            t_mwalk,
        ));
        figs.push(
            f(
                "restore walk in place (every page summed, every slot decoded)",
                t_irestore,
                "ns/block",
                "faithful linux model walk",
                t_fwalk2,
            )
            .with_target(Target::Ratio(1.0)),
        );
    }
    figs.extend(freeze_scaling());
    figs
}
