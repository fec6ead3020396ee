//! The guest's memory layout as the VMM describes it: regions of its address space and where
//! each one's bytes live in the memory image.

use uffd_core::{PageSize, Range};

/// One contiguous region of guest memory in the VMM's address space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GuestRegion {
    /// Start of the region in the VMM's address space.
    pub host_addr: u64,
    /// Length in bytes.
    pub size: u64,
    /// Where the region's bytes start in the memory image.
    pub offset: u64,
    /// The region's page size (hugetlbfs regions use 2 MiB).
    pub page_size: PageSize,
}

impl GuestRegion {
    /// The region as a checked address range.
    pub fn range(&self) -> Result<Range, LayoutError> {
        Range::new(self.host_addr, self.size, self.page_size)
            .map_err(|_| LayoutError::Misaligned { region: *self })
    }

    /// One past the last address.
    pub fn end(&self) -> u64 {
        self.host_addr + self.size
    }
}

/// Why a layout was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    /// No regions at all.
    #[error("the layout has no regions")]
    Empty,
    /// A region of zero bytes.
    #[error("region at {:#x} is empty", region.host_addr)]
    EmptyRegion {
        /// The region.
        region: GuestRegion,
    },
    /// Start, size or offset not a multiple of the page size, or the end overflows.
    #[error(
        "region at {:#x} (size {:#x}, offset {:#x}) is not aligned to its {}-byte pages",
        region.host_addr, region.size, region.offset, region.page_size.bytes()
    )]
    Misaligned {
        /// The region.
        region: GuestRegion,
    },
    /// Regions with different page sizes.
    #[error("regions mix page sizes {first} and {other}")]
    MixedPageSizes {
        /// The first region's page size in bytes.
        first: u64,
        /// A different one.
        other: u64,
    },
    /// Two regions overlap in the VMM's address space.
    #[error("regions at {a:#x} and {b:#x} overlap")]
    Overlap {
        /// One region's start.
        a: u64,
        /// The other's.
        b: u64,
    },
    /// Two regions' bytes overlap in the memory image.
    #[error("regions at {a:#x} and {b:#x} overlap in the memory image")]
    ImageOverlap {
        /// One region's start.
        a: u64,
        /// The other's.
        b: u64,
    },
    /// A region's bytes lie past the end of the memory image.
    #[error("region at {:#x} needs image bytes up to {:#x} but the image is {image_size:#x} bytes", region.host_addr, region.offset.saturating_add(region.size))]
    PastImage {
        /// The region.
        region: GuestRegion,
        /// The image size.
        image_size: u64,
    },
    /// The regions' sizes do not add up to the memory image's size.
    #[error("regions cover {covered:#x} bytes but the memory image is {image_size:#x} bytes")]
    SizeMismatch {
        /// Sum of region sizes.
        covered: u64,
        /// The image size.
        image_size: u64,
    },
}

/// A validated set of regions: non-empty, aligned, one page size, no overlap in the address
/// space or in the image, and covering the whole image exactly. Sorted by host address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestLayout {
    regions: Vec<GuestRegion>,
    image_size: u64,
}

impl GuestLayout {
    /// Validates `regions` against a memory image of `image_size` bytes.
    pub fn new(mut regions: Vec<GuestRegion>, image_size: u64) -> Result<Self, LayoutError> {
        let first = regions.first().ok_or(LayoutError::Empty)?;
        let page_size = first.page_size;
        let mut covered = 0u64;
        for region in &regions {
            if region.size == 0 {
                return Err(LayoutError::EmptyRegion { region: *region });
            }
            if region.page_size != page_size {
                return Err(LayoutError::MixedPageSizes {
                    first: page_size.bytes(),
                    other: region.page_size.bytes(),
                });
            }
            region.range()?;
            if !page_size.is_aligned(region.offset) {
                return Err(LayoutError::Misaligned { region: *region });
            }
            match region.offset.checked_add(region.size) {
                Some(end) if end <= image_size => {}
                _ => {
                    return Err(LayoutError::PastImage {
                        region: *region,
                        image_size,
                    });
                }
            }
            covered = covered.saturating_add(region.size);
        }
        regions.sort_by_key(|r| r.host_addr);
        for pair in regions.windows(2) {
            if pair[0].end() > pair[1].host_addr {
                return Err(LayoutError::Overlap {
                    a: pair[0].host_addr,
                    b: pair[1].host_addr,
                });
            }
        }
        let mut by_offset: Vec<&GuestRegion> = regions.iter().collect();
        by_offset.sort_by_key(|r| r.offset);
        for pair in by_offset.windows(2) {
            if pair[0].offset + pair[0].size > pair[1].offset {
                return Err(LayoutError::ImageOverlap {
                    a: pair[0].host_addr,
                    b: pair[1].host_addr,
                });
            }
        }
        if covered != image_size {
            return Err(LayoutError::SizeMismatch {
                covered,
                image_size,
            });
        }
        Ok(GuestLayout {
            regions,
            image_size,
        })
    }

    /// The regions, sorted by host address.
    pub fn regions(&self) -> &[GuestRegion] {
        &self.regions
    }

    /// The memory image's size (the sum of the region sizes).
    pub fn image_size(&self) -> u64 {
        self.image_size
    }

    /// The page size shared by every region.
    pub fn page_size(&self) -> PageSize {
        self.regions[0].page_size
    }

    /// The region containing host address `addr`.
    #[inline]
    pub fn region_of(&self, addr: u64) -> Option<&GuestRegion> {
        let i = self
            .regions
            .partition_point(|r| r.host_addr <= addr)
            .checked_sub(1)?;
        let region = &self.regions[i];
        (addr < region.end()).then_some(region)
    }

    /// The image offset of host address `addr`, if a region contains it.
    #[inline]
    pub fn image_offset(&self, addr: u64) -> Option<u64> {
        self.region_of(addr)
            .map(|r| r.offset + (addr - r.host_addr))
    }

    /// Moves the region that starts at `from` and is `len` bytes long to `to` (an `mremap`
    /// of a whole region). Returns false, changing nothing, if no region matches exactly or
    /// the moved region would overlap another.
    pub fn move_region(&mut self, from: u64, to: u64, len: u64) -> bool {
        let Some(i) = self
            .regions
            .iter()
            .position(|r| r.host_addr == from && r.size == len)
        else {
            return false;
        };
        let mut moved = self.regions.clone();
        moved[i].host_addr = to;
        match GuestLayout::new(moved, self.image_size) {
            Ok(layout) => {
                *self = layout;
                true
            }
            Err(_) => false,
        }
    }

    /// The host address of image offset `offset`, and the region holding it.
    pub fn host_addr(&self, offset: u64) -> Option<(u64, &GuestRegion)> {
        self.regions
            .iter()
            .find(|r| offset >= r.offset && offset - r.offset < r.size)
            .map(|r| (r.host_addr + (offset - r.offset), r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: PageSize = PageSize::Base4K;

    fn region(host_addr: u64, size: u64, offset: u64) -> GuestRegion {
        GuestRegion {
            host_addr,
            size,
            offset,
            page_size: P,
        }
    }

    #[test]
    fn valid_layout_resolves_addresses_both_ways() {
        let layout = GuestLayout::new(
            vec![
                region(0x20_0000, 0x2000, 0x1000),
                region(0x10_0000, 0x1000, 0),
            ],
            0x3000,
        )
        .unwrap();
        assert_eq!(layout.regions()[0].host_addr, 0x10_0000);
        assert_eq!(layout.image_offset(0x20_1234), Some(0x2234));
        assert_eq!(layout.image_offset(0x10_1000), None);
        assert_eq!(layout.host_addr(0x2234).map(|(a, _)| a), Some(0x20_1234));
        assert_eq!(layout.host_addr(0x3000), None);
    }

    #[test]
    fn bad_layouts_are_named() {
        use LayoutError::*;
        assert_eq!(GuestLayout::new(vec![], 0), Err(Empty));
        assert!(matches!(
            GuestLayout::new(vec![region(0x1000, 0, 0)], 0),
            Err(EmptyRegion { .. })
        ));
        assert!(matches!(
            GuestLayout::new(vec![region(0x1001, 0x1000, 0)], 0x1000),
            Err(Misaligned { .. })
        ));
        assert!(matches!(
            GuestLayout::new(vec![region(0x1000, 0x1000, 0x10)], 0x2000),
            Err(Misaligned { .. })
        ));
        assert!(matches!(
            GuestLayout::new(
                vec![region(0x1000, 0x2000, 0), region(0x2000, 0x1000, 0x2000)],
                0x3000
            ),
            Err(Overlap {
                a: 0x1000,
                b: 0x2000
            })
        ));
        assert!(matches!(
            GuestLayout::new(
                vec![region(0x1000, 0x1000, 0), region(0x8000, 0x1000, 0)],
                0x2000
            ),
            Err(ImageOverlap { .. })
        ));
        assert!(matches!(
            GuestLayout::new(vec![region(0x1000, 0x1000, 0x1000)], 0x1000),
            Err(PastImage { .. })
        ));
        assert_eq!(
            GuestLayout::new(vec![region(0x1000, 0x1000, 0)], 0x2000),
            Err(SizeMismatch {
                covered: 0x1000,
                image_size: 0x2000
            })
        );
        let huge = GuestRegion {
            page_size: PageSize::Huge2M,
            ..region(0x20_0000, 0x20_0000, 0x1000)
        };
        assert!(matches!(
            GuestLayout::new(vec![region(0x1000, 0x1000, 0), huge], 0x20_2000),
            Err(MixedPageSizes { .. })
        ));
    }
}
