//! Byte-range sets: sorting and joining, and fitting page sets to a snapshot's block size.

use std::ops::Range;

/// Sorts `ranges` and joins those that overlap or touch; empty ranges are dropped.
pub(crate) fn normalise(mut ranges: Vec<Range<u64>>) -> Vec<Range<u64>> {
    ranges.retain(|r| r.start < r.end);
    ranges.sort_by_key(|r| r.start);
    let mut out: Vec<Range<u64>> = Vec::with_capacity(ranges.len());
    for range in ranges {
        match out.last_mut() {
            Some(last) if range.start <= last.end => last.end = last.end.max(range.end),
            _ => out.push(range),
        }
    }
    out
}

/// `ranges` minus `holes` (both normalised).
pub(crate) fn subtract(ranges: &[Range<u64>], holes: &[Range<u64>]) -> Vec<Range<u64>> {
    let mut out = Vec::new();
    let mut h = 0;
    for range in ranges {
        let mut start = range.start;
        while h < holes.len() && holes[h].end <= start {
            h += 1;
        }
        let mut i = h;
        while start < range.end {
            match holes.get(i) {
                Some(hole) if hole.start < range.end => {
                    if hole.start > start {
                        out.push(start..hole.start);
                    }
                    start = start.max(hole.end);
                    i += 1;
                }
                _ => {
                    out.push(start..range.end);
                    break;
                }
            }
        }
    }
    out
}

/// Total bytes of normalised ranges.
pub(crate) fn total(ranges: &[Range<u64>]) -> u64 {
    ranges.iter().map(|r| r.end - r.start).sum()
}

/// Fits page sets to blocks of `block` bytes for a diff, keeping every byte right:
///
/// - a block holding any dirty byte is dirty (its bytes are read from the VMM's memory, which
///   holds the right bytes for its clean and zero pages too);
/// - a block wholly empty is empty;
/// - a block partly empty is dirty as well (read from memory, where its empty pages read as
///   zeros).
///
/// Returns normalised, disjoint `(dirty, empty)` sets. With pages at least as large as blocks
/// (the common case) nothing changes.
pub(crate) fn fit_to_blocks(
    dirty: &[Range<u64>],
    empty: &[Range<u64>],
    block: u64,
) -> (Vec<Range<u64>>, Vec<Range<u64>>) {
    let down = |x: u64| x / block * block;
    let up = |x: u64| x.div_ceil(block) * block;
    let mut dirty_out: Vec<Range<u64>> = dirty.iter().map(|r| down(r.start)..up(r.end)).collect();
    let mut empty_in = Vec::new();
    for r in normalise(empty.to_vec()) {
        let (inner_start, inner_end) = (up(r.start), down(r.end));
        if inner_start < inner_end {
            empty_in.push(inner_start..inner_end);
            if r.start < inner_start {
                dirty_out.push(down(r.start)..inner_start);
            }
            if inner_end < r.end {
                dirty_out.push(inner_end..up(r.end));
            }
        } else {
            dirty_out.push(down(r.start)..up(r.end));
        }
    }
    let dirty_out = normalise(dirty_out);
    let empty_out = subtract(&normalise(empty_in), &dirty_out);
    (dirty_out, empty_out)
}

#[cfg(test)]
#[allow(clippy::single_range_in_vec_init)]
mod tests {
    use super::*;

    #[test]
    fn normalise_and_subtract() {
        assert_eq!(
            normalise(vec![5..7, 0..2, 2..3, 6..9, 4..4]),
            vec![0..3, 5..9]
        );
        assert_eq!(
            subtract(&[0..10, 20..30], &[2..4, 8..22, 25..26]),
            vec![0..2, 4..8, 22..25, 26..30]
        );
        assert_eq!(subtract(&[0..10], &[]), vec![0..10]);
        assert_eq!(subtract(&[5..6], &[0..10]), Vec::<Range<u64>>::new());
    }

    #[test]
    fn block_sized_pages_are_unchanged() {
        let (d, e) = fit_to_blocks(&[0..4096, 8192..12288], &[4096..8192], 4096);
        assert_eq!(d, vec![0..4096, 8192..12288]);
        assert_eq!(e, vec![4096..8192]);
    }

    #[test]
    fn pages_smaller_than_blocks_round_out_dirty_and_in_empty() {
        let block = 4 * 4096;
        // Dirty page 1; pages 4..12 empty (block 1 and half of block 2); page 14 empty.
        let page = |p: u64| p * 4096;
        let (d, e) = fit_to_blocks(
            &[page(1)..page(2)],
            &[page(4)..page(10), page(14)..page(15)],
            block,
        );
        assert_eq!(d, vec![0..block, 2 * block..4 * block]);
        assert_eq!(e, vec![block..2 * block]);
        // Dirty wins over empty.
        let (d, e) = fit_to_blocks(&[page(5)..page(6)], &[page(4)..page(8)], block);
        assert_eq!(d, vec![block..2 * block]);
        assert!(e.is_empty());
    }
}
