//! `kho-runner inspect FILE`: a handoff blob decoded by the crate's own
//! readers and layouts (`kho::handoff`, `kho::luo::NodeView`, `kho::abi`), so that no
//! format is decoded a second time anywhere.

use kho::abi::memfd::{FolioFlags, FolioWord, v1, v2};
use kho::handoff::Handoff;
use kho::luo::NodeView;
use kho::ranges::Range;
use std::fmt::Write;
use zerocopy::FromBytes;

#[path = "../../../qemu/src/demo_abi.rs"]
#[allow(dead_code)]
mod demo_abi;

/// The annotations for `blob`: what the next kernel would make of it.
/// A blob the readers refuse says why, with what could still be shown.
pub fn inspect(blob: &[u8]) -> String {
    let mut out = String::new();
    // The whole address space as RAM: the tool checks the blob, not a
    // machine's memory map.
    let ram = [Range::new(0, u64::MAX)];
    let h = match Handoff::parse(blob, &ram) {
        Ok(h) => h,
        Err(e) => {
            let _ = writeln!(out, "  REFUSED: {e} (a next kernel boots cold)");
            return out;
        }
    };
    let _ = writeln!(out, "  version:  {}", kho::abi::handoff::HANDOFF_VERSION);
    if let Some(sum) = h
        .fdt()
        .root()
        .property("kho,csum")
        .and_then(|p| <[u8; 8]>::try_from(p.value).ok())
    {
        let _ = writeln!(
            out,
            "  checksum: kho-sum64 {:#018x} (over the whole blob, this value read as 0): correct",
            u64::from_le_bytes(sum)
        );
    }
    let _ = writeln!(out, "  hop:      {} (kexecs before this handoff)", h.hop);
    let (s, w, j) = (
        h.stamps.start.get(),
        h.stamps.written.get(),
        h.stamps.jump.get(),
    );
    let jump = if j != 0 {
        format!("jump +{} ticks", j.wrapping_sub(s))
    } else {
        "jump not stamped yet (stamped in memory just before it)".to_owned()
    };
    let _ = writeln!(
        out,
        "  TSC:      handoff start {s}, blob written +{} ticks, {jump}",
        w.wrapping_sub(s)
    );
    match h.tracker {
        kho::tracker::Root::Chain(t) => {
            let _ = writeln!(
                out,
                "  tracker:  chain of {} page(s) from {:#x}, {} records, {} preserved pages ({} MiB)",
                t.pages.get(),
                t.first_page.get(),
                t.records.get(),
                t.preserved_pages.get(),
                (t.preserved_pages.get() * 4096) >> 20
            );
        }
        kho::tracker::Root::InPlace(t) => {
            let _ = writeln!(
                out,
                "  tracker:  in place, {} leaf and {} chunk page(s) listed by {} directory page(s) from {:#x}, {} preserved pages ({} MiB)",
                t.leaf_pages.get(),
                t.chunk_pages.get(),
                t.dir_pages.get(),
                t.dir.get(),
                t.preserved_pages.get(),
                (t.preserved_pages.get() * 4096) >> 20
            );
        }
    }
    for a in h.scratch.areas() {
        let _ = writeln!(out, "  scratch:  {a} {} MiB", a.len() >> 20);
    }
    for sub in h.subsystems() {
        if sub.name == kho::abi::luo::NODE {
            continue;
        }
        let versions: Vec<&str> = sub.compatible().collect();
        let _ = write!(
            out,
            "  subsystem {}: versions {}",
            sub.name,
            versions.join(", ")
        );
        if let Some(d) = sub.data {
            let _ = write!(out, "; data {d}");
        }
        if sub.name == demo_abi::NAME
            && let Some(recs) = sub
                .node
                .property("kho,blocks")
                .and_then(|p| p.as_slice_of::<demo_abi::BlockRecord>().ok())
        {
            let _ = write!(out, "; {} blocks:", recs.len());
            for r in recs {
                let _ = write!(
                    out,
                    "\n      {:#x} order {} generation {} checksum {:#018x}",
                    r.phys.get(),
                    r.order.get(),
                    r.generation.get(),
                    r.sum.get()
                );
            }
        }
        out.push('\n');
    }
    objects(&h, &mut out);
    out
}

/// The orchestrator's objects, one line per payload, memfd payloads
/// decoded (inline `memfd-v2` runs included).
fn objects(h: &Handoff<'_>, out: &mut String) {
    let view = match NodeView::read(h) {
        Ok(v) => v,
        Err(e) => {
            let _ = writeln!(
                out,
                "  luo: REFUSED: {e} (every object in it would be lost)"
            );
            return;
        }
    };
    for o in view.objects() {
        let (session, token, family, fp) = (o.session, o.token, o.family, o.footprint);
        let _ = write!(
            out,
            "  luo {session}/{token} {family}: first handed over at hop {}, carried {} time(s) since; ",
            o.origin.hop, o.origin.carried
        );
        if let Some(n) = o.footprint_array {
            let _ = writeln!(
                out,
                "footprint in a preserved array of {n} extent(s), {} more inline",
                fp.len()
            );
        } else if fp.is_empty() {
            let _ = writeln!(out, "no footprint (cannot be carried)");
        } else {
            let pages: u64 = fp.iter().map(|r| r.len() / 4096).sum();
            let _ = writeln!(
                out,
                "footprint {} extent(s), {} pages from {:#x}",
                fp.len(),
                pages,
                fp[0].start
            );
        }
        for p in &o.payloads {
            let _ = write!(
                out,
                "  luo {session}/{token} {family}: {}, {} bytes",
                p.version,
                p.data.len()
            );
            if p.required | p.optional != 0 {
                let _ = write!(
                    out,
                    " (features required {:#x}, optional {:#x})",
                    p.required, p.optional
                );
            }
            memfd(p.version, p.data, out);
            out.push('\n');
        }
    }
}

/// A memfd descriptor, if `version` is one.
fn memfd(version: &str, data: &[u8], out: &mut String) {
    if version == v1::VERSION {
        if let Ok((d, _)) = v1::Header::read_from_prefix(data) {
            let _ = write!(
                out,
                "; size {}, pos {}, {} folio records in an array of {} block(s), chain at {:#x}",
                d.size.get(),
                d.pos.get(),
                d.folios.get(),
                d.array.blocks.get(),
                d.array.first.get()
            );
        }
        return;
    }
    // memfd-v3 is the v2 layout under another name (a test stand-in).
    if version != v2::VERSION && version != "memfd-v3" {
        return;
    }
    let Ok((d, rest)) = v2::Header::read_from_prefix(data) else {
        return;
    };
    let _ = write!(
        out,
        "; size {}, pos {}, seals {:#x}, {} run records ",
        d.size.get(),
        d.pos.get(),
        d.seals.get(),
        d.records.get()
    );
    if d.array.blocks.get() != 0 {
        let _ = write!(
            out,
            "in an array of {} block(s), chain at {:#x}",
            d.array.blocks.get(),
            d.array.first.get()
        );
        return;
    }
    let _ = write!(out, "inline:");
    let n = usize::try_from(d.records.get()).unwrap_or(usize::MAX);
    for r in <[v2::Record]>::ref_from_bytes(rest)
        .map(|r| &r[..n.min(r.len())])
        .unwrap_or(&[])
    {
        let f = FolioWord(r.frame.get());
        let run = r.run.get();
        let _ = write!(
            out,
            "\n      pages from {} of the file: {} folio(s) of order {} from {:#x}{}",
            v2::run_index(run),
            v2::run_count(run),
            f.order(),
            f.phys(),
            if f.flags().contains(FolioFlags::UPTODATE) {
                ""
            } else {
                " (not up to date: zeroed on restore)"
            }
        );
    }
}

#[cfg(test)]
mod tests {
    use super::inspect;

    fn golden(name: &str) -> Vec<u8> {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../golden")
            .join(name);
        std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    /// The golden orchestrator blob, decoded: exact lines, so a change in
    /// a layout or a reader shows here.
    #[test]
    fn the_golden_luo_blob_decodes_to_its_objects_and_runs() {
        let out = inspect(&golden("luo-v2.dtb"));
        for line in [
            "  luo vm-1/2 memfd: first handed over at hop 0, carried 0 time(s) since; footprint 2 extent(s), 18 pages from 0x1004c000",
            "  version:  kho-handoff-v2",
            "  luo vm-1/2 memfd: memfd-v2, 88 bytes; size 70000, pos 0, seals 0x8, 2 run records inline:",
            "      pages from 16 of the file: 2 folio(s) of order 0 from 0x1004c000",
            "  luo vm-2/1 memfd: memfd-v1, 48 bytes; size 3145728, pos 0, 17 folio records in an array of 1 block(s), chain at 0x1004f000",
        ] {
            assert!(out.lines().any(|l| l == line), "no line {line:?} in\n{out}");
        }
        assert!(out.contains("checksum: kho-sum64 0x"), "{out}");
    }

    /// The previous node version still decodes (without origins or
    /// footprints).
    #[test]
    fn the_golden_v1_blob_still_decodes() {
        let out = inspect(&golden("luo-v1.dtb"));
        assert!(out.contains("; no footprint (cannot be carried)"), "{out}");
        assert!(
            out.contains("  luo vm-2/1 memfd: memfd-v2, 88 bytes;"),
            "{out}"
        );
    }

    /// A flipped byte: refused, with the reason, and nothing decoded.
    #[test]
    fn a_damaged_blob_is_refused_with_its_reason() {
        let mut b = golden("luo-v2.dtb");
        let n = b.len();
        b[n / 2] ^= 0x10;
        let out = inspect(&b);
        assert!(out.starts_with("  REFUSED: "), "{out}");
        assert!(!out.contains("luo vm-"), "{out}");
    }
}
