//! Page sets as sorted byte ranges: joining, subtracting, and fitting page-sized sets to a
//! snapshot's block size. Public as `snapshot_format::page_sets`.

use std::ops::Range;

use crate::error::{Error, Result};

/// Checks each range (block-aligned, `start <= end <= size`), then returns them sorted with
/// overlapping and touching ranges joined and empty ones dropped. The input is not modified.
pub(crate) fn coalesce(
    set: &'static str,
    block_size: u64,
    size: u64,
    ranges: &[Range<u64>],
) -> Result<Vec<Range<u64>>> {
    let mask = block_size - 1;
    for range in ranges {
        let reason = if range.start > range.end {
            Some("start is after end")
        } else if range.end > size {
            Some("runs past the image size")
        } else if range.start & mask != 0 || range.end & mask != 0 {
            Some("not aligned to the block size")
        } else {
            None
        };
        if let Some(reason) = reason {
            return Err(Error::InvalidRange {
                set,
                start: range.start,
                end: range.end,
                reason,
            });
        }
    }
    Ok(join(ranges.to_vec()))
}

/// Sorts `ranges`, joins those that overlap or touch, and drops empty ones.
pub fn join(mut ranges: Vec<Range<u64>>) -> Vec<Range<u64>> {
    ranges.retain(|r| r.start < r.end);
    ranges.sort_unstable_by_key(|r| r.start);
    let mut joined: Vec<Range<u64>> = Vec::with_capacity(ranges.len());
    for range in ranges {
        match joined.last_mut() {
            Some(last) if range.start <= last.end => last.end = last.end.max(range.end),
            _ => joined.push(range),
        }
    }
    joined
}

/// Fits page sets to blocks of `block` bytes for a diff, keeping every byte right when pages
/// are smaller than blocks:
///
/// - a block holding any dirty byte is dirty (its bytes are read from guest memory, which
///   holds the right bytes for its clean and zero pages too);
/// - a block wholly empty is empty;
/// - a block partly empty is dirty as well (read from memory, where its empty pages read as
///   zeros).
///
/// Returns joined, disjoint `(dirty, empty)` sets. With pages at least as large as blocks
/// nothing changes.
pub fn fit_to_blocks(
    dirty: &[Range<u64>],
    empty: &[Range<u64>],
    block: u64,
) -> (Vec<Range<u64>>, Vec<Range<u64>>) {
    let down = |x: u64| x / block * block;
    let up = |x: u64| x.div_ceil(block) * block;
    let mut dirty_out: Vec<Range<u64>> = dirty.iter().map(|r| down(r.start)..up(r.end)).collect();
    let mut empty_in = Vec::new();
    for r in join(empty.to_vec()) {
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
    let dirty_out = join(dirty_out);
    let empty_out = subtract(&join(empty_in), &dirty_out);
    (dirty_out, empty_out)
}

/// `from` minus `remove`; both sorted, disjoint and joined.
pub fn subtract(from: &[Range<u64>], remove: &[Range<u64>]) -> Vec<Range<u64>> {
    let mut out = Vec::with_capacity(from.len());
    let mut cut = remove.iter().peekable();
    for range in from {
        let mut start = range.start;
        // Skip removals that end before this range.
        while cut.peek().is_some_and(|r| r.end <= start) {
            cut.next();
        }
        let mut rest = cut.clone();
        while let Some(r) = rest.peek() {
            if r.start >= range.end {
                break;
            }
            if r.start > start {
                out.push(start..r.start);
            }
            start = start.max(r.end);
            if r.end >= range.end {
                break;
            }
            rest.next();
        }
        if start < range.end {
            out.push(start..range.end);
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::single_range_in_vec_init, clippy::reversed_empty_ranges)]
mod tests {
    use super::*;

    #[test]
    fn coalesce_sorts_joins_and_drops_empty() {
        let got = coalesce("dirty", 4, 64, &[8..12, 0..4, 4..8, 20..20, 16..24, 20..28]).unwrap();
        assert_eq!(got, vec![0..12, 16..28]);
    }

    #[test]
    fn coalesce_rejects_bad_ranges() {
        for bad in [4..0, 0..68, 2..4, 0..6] {
            assert!(matches!(
                coalesce("empty", 4, 64, &[bad]),
                Err(Error::InvalidRange { set: "empty", .. })
            ));
        }
    }

    #[test]
    fn subtract_cuts_holes() {
        let from = vec![0..40, 50..60, 70..80];
        let remove = vec![10..20, 30..55, 75..100];
        assert_eq!(
            subtract(&from, &remove),
            vec![0..10, 20..30, 55..60, 70..75]
        );
        assert_eq!(subtract(&from, &[]), from);
        assert!(subtract(&from, &[0..100]).is_empty());
    }

    #[test]
    fn join_sorts_joins_and_drops_empty() {
        assert_eq!(join(vec![5..7, 0..2, 2..3, 6..9, 4..4]), vec![0..3, 5..9]);
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
        // Dirty page 1; pages 4..10 empty (block 1 and half of block 2); page 14 empty.
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
