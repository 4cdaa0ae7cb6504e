//! The QEMU kernel's timing record: what the kernel measured, as one typed
//! line that the kernel prints and the benches read back.
//!
//! The kernel builds a [`Record`] (a hop, the bench mode if any, and up to
//! [`MAX_FIELDS`] values, each named by a [`Field`]) and prints it with
//! `{}`; `kho-bench` parses each such line of the serial log with
//! [`Record::parse`]. Both sides name the quantities by the same enum, so a
//! renamed or mistyped field fails the build, not the bench. The line is
//! `kho-timing hop=H [bench=B] name=value ...`, values in decimal (TSC
//! ticks, counts, or TSC readings, as each field's doc says).
#![no_std]

use core::fmt;

/// The first word of every timing line.
pub const PREFIX: &str = "kho-timing";

/// Most fields one record holds.
pub const MAX_FIELDS: usize = 12;

macro_rules! fields {
    ($($(#[doc = $doc:literal])+ $v:ident = $name:literal,)*) => {
        /// A quantity the kernel measures.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Field {
            $($(#[doc = $doc])+ $v,)*
        }

        impl Field {
            /// Every field, in declaration order.
            pub const ALL: &'static [Field] = &[$(Field::$v,)*];

            /// Its name on the line.
            pub const fn name(self) -> &'static str {
                match self {
                    $(Field::$v => $name,)*
                }
            }

            /// The field named `name` on a line.
            pub fn from_name(name: &str) -> Option<Field> {
                match name {
                    $($name => Some(Field::$v),)*
                    _ => None,
                }
            }
        }
    };
}

fields! {
    /// TSC ticks per second.
    Hz = "hz",
    /// Ticks from entry to RAM open, booting cold.
    ColdOpenTicks = "cold_open_ticks",
    /// Ticks to preserve the bench's blocks.
    PreserveTicks = "preserve_ticks",
    /// Blocks preserved.
    Blocks = "blocks",
    /// Ticks of the first kernel's hand-over work (freeze to blob written).
    HandoffTicks = "handoff_ticks",
    /// Ticks from the blob written to the jump.
    PrepTicks = "prep_ticks",
    /// Ticks from the jump to the next kernel's entry.
    JumpTicks = "jump_ticks",
    /// Ticks from entry to every preserved range reserved.
    ReserveTicks = "reserve_ticks",
    /// Ticks from entry to RAM open.
    OpenTicks = "open_ticks",
    /// Ticks of the fastest of five restores of the same handoff, warm.
    WarmRestoreTicks = "warm_restore_ticks",
    /// Preserved ranges the restore reported.
    Ranges = "ranges",
    /// The TSC when the trampoline started copying the image.
    CopyStartTsc = "copy_start_tsc",
    /// The TSC when it finished.
    CopyEndTsc = "copy_end_tsc",
    /// The TSC at the next kernel's entry.
    EntryTsc = "entry_tsc",
    /// The TSC when staging the next image began.
    StageTsc = "stage_tsc",
    /// Ticks of the kexec's prepare (placement, keep list, staging).
    PrepareTicks = "prepare_ticks",
    /// Bytes the memcpy floor copied.
    FloorBytes = "floor_bytes",
    /// Ticks of that copy (the warmer of two passes).
    FloorTicks = "floor_ticks",
    /// Ticks of the freeze.
    FreezeTicks = "freeze_ticks",
    /// Ticks to copy the bench's data out (the peer of a live update).
    CopyOutTicks = "copy_out_ticks",
    /// Ticks to copy it back.
    CopyBackTicks = "copy_back_ticks",
    /// Folios in the bench's file.
    Folios = "folios",
    /// Extents in it.
    Extents = "extents",
    /// Ticks from the next kernel's entry to its main.
    BootTicks = "boot_ticks",
    /// Ticks to retrieve the bench's objects.
    RetrieveTicks = "retrieve_ticks",
}

/// One timing line: a hop, the bench mode it belongs to (if any) and its
/// values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record<'a> {
    /// Kexecs before the kernel that measured it.
    pub hop: u32,
    /// The `kho.bench=` mode, if the kernel ran one.
    pub bench: Option<&'a str>,
    fields: [(Field, u64); MAX_FIELDS],
    len: usize,
}

/// Why a line is not a timing record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseError {
    /// It does not start with [`PREFIX`] and a `hop=`.
    NotTiming,
    /// A word that is not `name=value`, or a value that is not a number.
    Malformed,
    /// A field name no [`Field`] has.
    UnknownField,
    /// A field given twice.
    Twice(Field),
    /// More than [`MAX_FIELDS`] fields.
    TooMany,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::NotTiming => write!(f, "not a `{PREFIX} hop=` line"),
            ParseError::Malformed => f.write_str("a word is not name=number"),
            ParseError::UnknownField => f.write_str("a field no kernel prints"),
            ParseError::Twice(x) => write!(f, "{} given twice", x.name()),
            ParseError::TooMany => write!(f, "more than {MAX_FIELDS} fields"),
        }
    }
}

impl core::error::Error for ParseError {}

impl<'a> Record<'a> {
    /// An empty record of `hop`.
    pub const fn new(hop: u32) -> Self {
        Record {
            hop,
            bench: None,
            fields: [(Field::Hz, 0); MAX_FIELDS],
            len: 0,
        }
    }

    /// The same, for the bench mode `bench`.
    pub const fn bench(mut self, bench: &'a str) -> Self {
        self.bench = Some(bench);
        self
    }

    /// The same with `field` set to `value` (replacing an earlier value).
    ///
    /// # Panics
    /// If the record holds [`MAX_FIELDS`] other fields already: the
    /// kernel's lines are fixed, so a test catches it.
    pub fn with(mut self, field: Field, value: u64) -> Self {
        if let Some(slot) = self.fields[..self.len]
            .iter_mut()
            .find(|(f, _)| *f == field)
        {
            slot.1 = value;
            return self;
        }
        assert!(
            self.len < MAX_FIELDS,
            "a timing record holds {MAX_FIELDS} fields"
        );
        self.fields[self.len] = (field, value);
        self.len += 1;
        self
    }

    /// The value of `field`, if set.
    pub fn get(&self, field: Field) -> Option<u64> {
        self.fields().find(|(f, _)| *f == field).map(|(_, v)| v)
    }

    /// Every field set, in the order set.
    pub fn fields(&self) -> impl Iterator<Item = (Field, u64)> + '_ {
        self.fields[..self.len].iter().copied()
    }

    /// The record `line` prints, as [`Record`]'s `Display` writes it.
    pub fn parse(line: &'a str) -> Result<Self, ParseError> {
        let mut words = line.split_ascii_whitespace();
        if words.next() != Some(PREFIX) {
            return Err(ParseError::NotTiming);
        }
        let hop = words
            .next()
            .and_then(|w| w.strip_prefix("hop="))
            .and_then(|h| h.parse().ok())
            .ok_or(ParseError::NotTiming)?;
        let mut r = Record::new(hop);
        for w in words {
            let (name, value) = w.split_once('=').ok_or(ParseError::Malformed)?;
            if name == "bench" && r.bench.is_none() && r.len == 0 {
                r.bench = Some(value);
                continue;
            }
            let field = Field::from_name(name).ok_or(ParseError::UnknownField)?;
            let value = value.parse().map_err(|_| ParseError::Malformed)?;
            if r.get(field).is_some() {
                return Err(ParseError::Twice(field));
            }
            if r.len == MAX_FIELDS {
                return Err(ParseError::TooMany);
            }
            r = r.with(field, value);
        }
        Ok(r)
    }
}

impl fmt::Display for Record<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PREFIX} hop={}", self.hop)?;
        if let Some(b) = self.bench {
            write!(f, " bench={b}")?;
        }
        for (field, v) in self.fields() {
            write!(f, " {}={v}", field.name())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::string::ToString;

    #[test]
    fn a_record_reads_back_as_printed() {
        let r = Record::new(1)
            .bench("4k")
            .with(Field::ReserveTicks, 3)
            .with(Field::Hz, 10)
            .with(Field::ReserveTicks, 4);
        let line = r.to_string();
        assert_eq!(line, "kho-timing hop=1 bench=4k reserve_ticks=4 hz=10");
        assert_eq!(Record::parse(&line), Ok(r));
        let plain = Record::new(0).with(Field::ColdOpenTicks, 5);
        assert_eq!(Record::parse(&plain.to_string()), Ok(plain));
        assert_eq!(plain.bench, None);
    }

    #[test]
    fn every_name_is_its_own() {
        for &f in Field::ALL {
            assert_eq!(Field::from_name(f.name()), Some(f));
        }
        let mut names: std::vec::Vec<&str> = Field::ALL.iter().map(|f| f.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Field::ALL.len());
    }

    #[test]
    fn what_is_not_a_record_says_why() {
        assert_eq!(Record::parse("kho hop 1"), Err(ParseError::NotTiming));
        assert_eq!(Record::parse("kho-timing hz=1"), Err(ParseError::NotTiming));
        assert_eq!(
            Record::parse("kho-timing hop=0 nope=1"),
            Err(ParseError::UnknownField)
        );
        assert_eq!(
            Record::parse("kho-timing hop=0 hz=x"),
            Err(ParseError::Malformed)
        );
        assert_eq!(
            Record::parse("kho-timing hop=0 hz=1 hz=2"),
            Err(ParseError::Twice(Field::Hz))
        );
        let many: std::string::String = Field::ALL[..MAX_FIELDS + 1]
            .iter()
            .map(|f| std::format!(" {}=1", f.name()))
            .collect();
        assert_eq!(
            Record::parse(&std::format!("kho-timing hop=0{many}")),
            Err(ParseError::TooMany)
        );
    }
}
