//! Normalising a mapping: joining adjacent runs that are really one run.

use crate::model::Mapping;

/// Returns `entries` with adjacent runs joined where that changes no byte: zero runs always
/// join; runs of one build join only when the second starts in storage exactly where the first
/// ends (joining across a storage gap would serve the wrong bytes). Zero runs come out with
/// storage offset 0. The input is left as it was.
pub fn normalise(entries: &[Mapping]) -> Vec<Mapping> {
    let mut out: Vec<Mapping> = Vec::with_capacity(entries.len());
    for entry in entries {
        let entry = if entry.is_zero() {
            Mapping::zero(entry.offset, entry.length)
        } else {
            *entry
        };
        match out.last_mut() {
            Some(last) if continues(last, &entry) => last.length += entry.length,
            _ => out.push(entry),
        }
    }
    out
}

/// True when `next` carries on `last` with no change of source: adjacent, same build, and (for
/// data) storage that continues exactly where `last`'s ends.
pub(crate) fn continues(last: &Mapping, next: &Mapping) -> bool {
    last.end() == next.offset
        && last.build_id == next.build_id
        && (next.is_zero()
            || last.storage_offset.checked_add(last.length) == Some(next.storage_offset))
}
