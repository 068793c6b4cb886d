//! Block reads: which requests read a device's points.
//!
//! Points of one table and poll group that lie close together are read in
//! one request: a block grows while the next point starts at most
//! `merge_gap` items after the block's end and the block stays within the
//! table's limit (125 registers or 2000 bits a read). A device that has no
//! registers in a gap answers such a read with exception 2 (illegal data
//! address); the link then [`split`]s the block into its contiguous runs for
//! good and says which items were the gap.

use super::codec::Table;

/// Where one point lies: its table, first item (wire address, zero-based)
/// and width in items.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    /// The table.
    pub table: Table,
    /// First register or bit.
    pub start: u16,
    /// Registers or bits.
    pub width: u16,
}

impl Span {
    /// One past its last item.
    pub fn end(&self) -> u32 {
        u32::from(self.start) + u32::from(self.width)
    }
}

/// One read request and the points it serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Block {
    /// The table read.
    pub table: Table,
    /// First item.
    pub start: u16,
    /// Items read.
    pub count: u16,
    /// The points served (indices into the span list given to [`plan`]).
    pub points: Vec<usize>,
}

impl Block {
    /// One past its last item.
    pub fn end(&self) -> u32 {
        u32::from(self.start) + u32::from(self.count)
    }
}

/// The blocks that read `points` (index into `spans`), merging across gaps
/// of at most `merge_gap` items. Blocks come in table, then address order.
pub fn plan(spans: &[Span], points: &[usize], merge_gap: u16) -> Vec<Block> {
    let mut order: Vec<usize> = points.to_vec();
    order.sort_by_key(|&i| (spans[i].table, spans[i].start, spans[i].width));
    let mut blocks: Vec<Block> = Vec::new();
    for i in order {
        let s = spans[i];
        if let Some(b) = blocks.last_mut() {
            let end = b.end().max(s.end());
            if b.table == s.table
                && u32::from(s.start) <= b.end() + u32::from(merge_gap)
                && end - u32::from(b.start) <= u32::from(s.table.max_read())
            {
                b.count = (end - u32::from(b.start)) as u16;
                b.points.push(i);
                continue;
            }
        }
        blocks.push(Block {
            table: s.table,
            start: s.start,
            count: s.width,
            points: vec![i],
        });
    }
    blocks
}

/// A block split at its gaps: the contiguous runs, and the gaps between
/// them as (start, count).
pub type Split = (Vec<Block>, Vec<(u16, u16)>);

/// `block` split into its contiguous runs, with the gaps between them, or
/// `None` if it has no gap (the exception was not about a gap).
pub fn split(block: &Block, spans: &[Span]) -> Option<Split> {
    let runs = plan(spans, &block.points, 0);
    if runs.len() < 2 {
        return None;
    }
    let gaps = runs
        .windows(2)
        .map(|w| (w[0].end() as u16, (u32::from(w[1].start) - w[0].end()) as u16))
        .collect();
    Some((runs, gaps))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(start: u16, width: u16) -> Span {
        Span {
            table: Table::Input,
            start,
            width,
        }
    }

    #[test]
    fn neighbours_merge_and_a_gap_splits_into_its_runs() {
        // The welder of the integration tests: 0..6, a gap 6..10, then 10..25.
        let spans = [
            reg(0, 2),
            reg(2, 2),
            reg(4, 2),
            reg(10, 2),
            reg(12, 4),
            reg(23, 1),
            reg(23, 1),
        ];
        let all: Vec<usize> = (0..spans.len()).collect();
        let blocks = plan(&spans, &all, 8);
        assert_eq!(blocks.len(), 1);
        assert_eq!((blocks[0].start, blocks[0].count), (0, 24));
        let (runs, gaps) = split(&blocks[0], &spans).unwrap();
        let got: Vec<(u16, u16)> = runs.iter().map(|b| (b.start, b.count)).collect();
        assert_eq!(got, [(0, 6), (10, 6), (23, 1)]);
        assert_eq!(gaps, [(6, 4), (16, 7)]);
        assert_eq!(runs[2].points, [5, 6], "two points on one register share a read");
        assert!(split(&runs[0], &spans).is_none(), "a contiguous block has no gap");
        assert_eq!(
            plan(&spans, &all, 3).len(),
            3,
            "gaps wider than merge_gap split at once"
        );
    }

    #[test]
    fn a_block_stays_within_a_read_and_within_its_table() {
        let mut spans: Vec<Span> = (0..100).map(|i| reg(i * 2, 2)).collect();
        spans.push(Span {
            table: Table::Holding,
            start: 0,
            width: 2,
        });
        spans.push(Span {
            table: Table::Coil,
            start: 0,
            width: 1,
        });
        let all: Vec<usize> = (0..spans.len()).collect();
        let blocks = plan(&spans, &all, 0);
        let got: Vec<(Table, u16, u16)> = blocks.iter().map(|b| (b.table, b.start, b.count)).collect();
        assert_eq!(
            got,
            [
                (Table::Coil, 0, 1),
                (Table::Input, 0, 124),
                (Table::Input, 124, 76),
                (Table::Holding, 0, 2)
            ],
            "a 2-register value is never cut: the first block stops at 124"
        );
        let bits: Vec<Span> = (0..2500)
            .map(|i| Span {
                table: Table::Discrete,
                start: i,
                width: 1,
            })
            .collect();
        let all: Vec<usize> = (0..bits.len()).collect();
        let got: Vec<u16> = plan(&bits, &all, 0).iter().map(|b| b.count).collect();
        assert_eq!(got, [2000, 500]);
    }

    #[test]
    fn every_point_is_read_by_exactly_one_block_within_limits() {
        bolero::check!()
            .with_type::<(Vec<(u8, u16, u8)>, u8)>()
            .for_each(|(raw, gap)| {
                let spans: Vec<Span> = raw
                    .iter()
                    .map(|&(t, start, w)| {
                        let table = [Table::Coil, Table::Discrete, Table::Input, Table::Holding][usize::from(t % 4)];
                        let width = if table.is_bits() {
                            1
                        } else {
                            [1, 2, 4][usize::from(w % 3)]
                        };
                        Span {
                            table,
                            start: start.min(u16::MAX - width),
                            width,
                        }
                    })
                    .collect();
                let all: Vec<usize> = (0..spans.len()).collect();
                let blocks = plan(&spans, &all, u16::from(*gap));
                let mut seen = vec![0; spans.len()];
                for b in &blocks {
                    assert!(b.count <= b.table.max_read() && b.count > 0);
                    for &p in &b.points {
                        seen[p] += 1;
                        let s = spans[p];
                        assert!(s.table == b.table && s.start >= b.start && s.end() <= b.end());
                    }
                }
                assert!(seen.iter().all(|&n| n == 1));
            });
    }
}
