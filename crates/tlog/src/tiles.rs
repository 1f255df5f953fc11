//! C2SP `tlog-tiles`: paths and contents of hash tiles and entry bundles.
//!
//! A tile at level `L`, index `N` holds up to 256 consecutive hashes of tree
//! level `8L`; an entry bundle holds up to 256 entries, each prefixed by its
//! length as a big-endian u16. Paths are `tile/<L>/<N>[.p/<W>]` and
//! `tile/entries/<N>[.p/<W>]`, with `N` in zero-padded groups of three digits,
//! all but the last prefixed by `x`.

use crate::merkle::Tree;

/// Hashes (or entries) per full tile.
pub const TILE_WIDTH: u64 = 256;
/// Tree levels per tile level.
pub const TILE_HEIGHT: u32 = 8;

/// What a tile path names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TileKind {
    /// Merkle tree hashes at this tile level (0..=63).
    Hashes(u8),
    /// An entry bundle.
    Entries,
}

/// A tile: kind, index within its level, and width (256 for a full tile).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tile {
    /// Hash tile level or entry bundle.
    pub kind: TileKind,
    /// Index within the level.
    pub index: u64,
    /// Number of hashes or entries, 1..=256.
    pub width: u16,
}

/// A path that is not a tile path.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("not a tile path: {0}")]
pub struct TilePathError(pub String);

/// Encodes a tile index as `x001/x234/067`.
pub fn encode_index(mut n: u64) -> String {
    let mut groups = vec![format!("{:03}", n % 1000)];
    n /= 1000;
    while n > 0 {
        groups.push(format!("x{:03}", n % 1000));
        n /= 1000;
    }
    groups.reverse();
    groups.join("/")
}

impl Tile {
    /// The path relative to the log prefix, e.g. `tile/0/x001/234.p/7`.
    pub fn path(&self) -> String {
        let level = match self.kind {
            TileKind::Hashes(l) => l.to_string(),
            TileKind::Entries => "entries".to_string(),
        };
        let mut p = format!("tile/{level}/{}", encode_index(self.index));
        if u64::from(self.width) < TILE_WIDTH {
            p.push_str(&format!(".p/{}", self.width));
        }
        p
    }

    /// Parses a path relative to the log prefix (with or without a leading `/`).
    pub fn parse(path: &str) -> Result<Self, TilePathError> {
        let err = || TilePathError(path.to_string());
        let rest = path
            .trim_start_matches('/')
            .strip_prefix("tile/")
            .ok_or_else(err)?;
        let (level, rest) = rest.split_once('/').ok_or_else(err)?;
        let kind = if level == "entries" {
            TileKind::Entries
        } else {
            // Decimal digits only: `u8::from_str` also takes a leading `+`,
            // which gave one tile a second path.
            if level.is_empty()
                || !level.bytes().all(|b| b.is_ascii_digit())
                || (level.len() > 1 && level.starts_with('0'))
            {
                return Err(err());
            }
            let l: u8 = level.parse().map_err(|_| err())?;
            if l > 63 {
                return Err(err());
            }
            TileKind::Hashes(l)
        };
        let (index_part, width) = match rest.split_once(".p/") {
            Some((i, w)) => {
                if w.is_empty() || w.starts_with('0') || !w.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(err());
                }
                let w: u16 = w.parse().map_err(|_| err())?;
                if !(1..=255).contains(&w) {
                    return Err(err());
                }
                (i, w)
            }
            None => (rest, TILE_WIDTH as u16),
        };
        let groups: Vec<&str> = index_part.split('/').collect();
        let mut index: u64 = 0;
        for (i, g) in groups.iter().enumerate() {
            let digits = if i + 1 < groups.len() {
                g.strip_prefix('x').ok_or_else(err)?
            } else {
                g
            };
            if digits.len() != 3 || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(err());
            }
            let d: u64 = digits.parse().map_err(|_| err())?;
            index = index
                .checked_mul(1000)
                .and_then(|x| x.checked_add(d))
                .ok_or_else(err)?;
        }
        // Canonical form only: no leading zero groups.
        if groups.len() > 1 && groups[0] == "x000" {
            return Err(err());
        }
        let tile = Tile { kind, index, width };
        // A tile no tree of u64 size can hold is out of range, not missing:
        // its arithmetic would overflow.
        tile.leaf_end().ok_or_else(err)?;
        Ok(tile)
    }

    /// Tree level of the hashes this tile holds (0 for entry bundles).
    fn tree_level(&self) -> u32 {
        match self.kind {
            TileKind::Hashes(l) => u32::from(l) * TILE_HEIGHT,
            TileKind::Entries => 0,
        }
    }

    /// Index range of the entries (level 0) or tree nodes this tile covers
    /// at its own tree level; None if it overflows.
    pub fn node_range(&self) -> Option<(u64, u64)> {
        let start = self.index.checked_mul(TILE_WIDTH)?;
        Some((start, start.checked_add(u64::from(self.width))?))
    }

    /// Number of leaves a tree needs for this tile to be complete, or None
    /// if that is beyond any u64 tree size.
    fn leaf_end(&self) -> Option<u64> {
        let (_, end) = self.node_range()?;
        end.checked_mul(1u64.checked_shl(self.tree_level())?)
    }

    /// Whether the tile exists in a tree of `size` leaves: every hash in it
    /// must be a complete subtree.
    pub fn exists_at(&self, size: u64) -> bool {
        self.leaf_end().is_some_and(|leaves| leaves <= size)
    }

    /// The tiles a client needs for a tree of `size` leaves: the full hash
    /// tiles of every level, the partial ones at the right edge, and the
    /// matching entry bundles.
    pub fn all_for_size(size: u64) -> Vec<Tile> {
        let mut tiles = Vec::new();
        let mut level: u8 = 0;
        let mut nodes = size; // nodes at tree level 8*level
        while nodes > 0 {
            let full = nodes / TILE_WIDTH;
            let partial = (nodes % TILE_WIDTH) as u16;
            let kinds: &[TileKind] = if level == 0 {
                &[TileKind::Hashes(0), TileKind::Entries]
            } else {
                &[TileKind::Hashes(level)]
            };
            for &kind in kinds {
                tiles.extend((0..full).map(|index| Tile {
                    kind,
                    index,
                    width: TILE_WIDTH as u16,
                }));
                if partial > 0 {
                    tiles.push(Tile {
                        kind,
                        index: full,
                        width: partial,
                    });
                }
            }
            nodes /= TILE_WIDTH;
            level += 1;
        }
        tiles
    }
}

/// The bytes of a hash tile from `tree`, or None if it does not exist yet.
pub fn hash_tile(tree: &Tree, tile: &Tile) -> Option<Vec<u8>> {
    let TileKind::Hashes(level) = tile.kind else {
        return None;
    };
    if !tile.exists_at(tree.size()) {
        return None;
    }
    let (start, end) = tile.node_range()?;
    let mut out = Vec::with_capacity(32 * (end - start) as usize);
    for k in start..end {
        out.extend_from_slice(&tree.stored(usize::from(level) * TILE_HEIGHT as usize, k)?.0);
    }
    Some(out)
}

/// Appends `entry` to an entry bundle being built. Entries are at most
/// 65,535 bytes, which the log enforces on append.
pub fn push_bundle_entry(bundle: &mut Vec<u8>, entry: &[u8]) {
    debug_assert!(entry.len() <= usize::from(u16::MAX));
    bundle.extend_from_slice(&(entry.len() as u16).to_be_bytes());
    bundle.extend_from_slice(entry);
}

/// Splits an entry bundle into its entries, or None if it is malformed.
pub fn parse_bundle(mut bytes: &[u8]) -> Option<Vec<&[u8]>> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        if bytes.len() < 2 {
            return None;
        }
        let len = usize::from(u16::from_be_bytes([bytes[0], bytes[1]]));
        let rest = &bytes[2..];
        if rest.len() < len {
            return None;
        }
        out.push(&rest[..len]);
        bytes = &rest[len..];
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::merkle::{leaf_hash, node_hash};

    #[test]
    fn index_encoding_from_spec() {
        assert_eq!(encode_index(1234067), "x001/x234/067");
        assert_eq!(encode_index(0), "000");
        assert_eq!(encode_index(1000), "x001/000");
        let t = Tile::parse("tile/0/x001/x234/067.p/7").unwrap();
        assert_eq!(
            t,
            Tile {
                kind: TileKind::Hashes(0),
                index: 1234067,
                width: 7
            }
        );
        assert_eq!(t.path(), "tile/0/x001/x234/067.p/7");
        let e = Tile::parse("/tile/entries/005").unwrap();
        assert_eq!(e.kind, TileKind::Entries);
        assert_eq!(e.width, 256);
    }

    /// Malformed paths and indices whose arithmetic overflows are refused at
    /// parse time (a 400), never wrapped around to an existing tile.
    #[test]
    fn malformed_and_out_of_range_paths_are_refused() {
        for bad in [
            // 2^56: index * 256 wraps to 0, which served tile 0.
            "tile/0/x072/x057/x594/x037/x927/936",
            "tile/entries/x072/x057/x594/x037/x927/936",
            "tile/0/x072/x057/x594/x037/x927/936.p/1",
            // Beyond u64 while parsing.
            "tile/0/x018/x446/x744/x073/x709/x551/616",
            "tile/0/x999/x999/x999/x999/x999/x999/x999/999",
            // Full tiles that need a tree of 2^64 leaves or more.
            "tile/0/x072/x057/x594/x037/x927/935",
            "tile/6/255",
            "tile/1/x281/x474/x976/x710/656",
            // No u64 tree has a full level-7 tile or any level 8 node.
            "tile/7/000",
            "tile/8/000.p/1",
            "tile/63/000",
            "tile/64/000",
            "tile/255/000",
            "tile/256/000",
            "tile/-1/000",
            "tile/01/000",
            // Found by the fuzzer: `+0` parsed as level 0.
            "tile/+0/000",
            "tile/+1/x072/x057/x594/x027/935",
            "tile//000",
            "tile/0/1",
            "tile/0/0001",
            "tile/0/00a",
            "tile/0/+01",
            "tile/0/ 01",
            "tile/0/",
            "tile/0",
            "tile/0/x001",
            "tile/0/x000/001",
            "tile/0/001/002",
            "tile/0/y001/002",
            "tile/0/x01/002",
            "tile/0/001.p/0",
            "tile/0/001.p/256",
            "tile/0/001.p/65536",
            "tile/0/001.p/07",
            "tile/0/001.p/",
            "tile/0/001.p/1/",
            "tile/0/001.p/+1",
            "tile/0/001.p/1.p/1",
            "tile/0/001.p",
            "tile/0/001.q/1",
            "tile/entries/001.p/0",
            "tile/entry/001",
            "tiles/0/000",
            "",
        ] {
            assert!(Tile::parse(bad).is_err(), "{bad:?}");
        }
        // The largest tiles that still fit are accepted and round-trip.
        for good in [
            "tile/0/x072/x057/x594/x037/x927/935.p/255",
            "tile/6/254",
            "tile/7/000.p/255",
            "tile/entries/x072/x057/x594/x037/x927/935.p/3",
        ] {
            let t = Tile::parse(good).unwrap();
            assert_eq!(t.path(), good);
            assert!(!t.exists_at(1 << 40));
        }
    }

    /// The spec's example: a tree of 70,000 leaves has 273 full level-0
    /// tiles, a partial one of width 112, one full level-1 tile, a partial
    /// level-1 tile of width 17 and a partial level-2 tile of width 1.
    #[test]
    fn tile_set_for_70000() {
        let tiles = Tile::all_for_size(70_000);
        let hashes = |l| {
            tiles
                .iter()
                .filter(|t| t.kind == TileKind::Hashes(l))
                .map(|t| (t.index, t.width))
                .collect::<Vec<_>>()
        };
        let l0 = hashes(0);
        assert_eq!(l0.len(), 274);
        assert_eq!(l0[273], (273, 112));
        assert_eq!(hashes(1), vec![(0, 256), (1, 17)]);
        assert_eq!(hashes(2), vec![(0, 1)]);
        assert!(tiles.iter().all(|t| t.exists_at(70_000)));
        assert_eq!(Tile::all_for_size(256).len(), 3);
    }

    #[test]
    fn level_one_tile_holds_roots_of_level_zero_tiles() {
        let mut tree = Tree::new();
        let leaves: Vec<_> = (0..600u64).map(|i| leaf_hash(&i.to_be_bytes())).collect();
        for l in &leaves {
            tree.push(*l);
        }
        let t0 = hash_tile(&tree, &Tile::parse("tile/0/001").unwrap()).unwrap();
        assert_eq!(&t0[..32], &leaves[256].0);
        let t1 = hash_tile(&tree, &Tile::parse("tile/1/000.p/2").unwrap()).unwrap();
        assert_eq!(&t1[32..], &tree.stored(8, 1).unwrap().0);
        assert_eq!(
            node_hash(tree.stored(8, 0).unwrap(), tree.stored(8, 1).unwrap()),
            tree.root(512).unwrap()
        );
        assert!(hash_tile(&tree, &Tile::parse("tile/1/000.p/3").unwrap()).is_none());
        assert!(hash_tile(&tree, &Tile::parse("tile/0/002").unwrap()).is_none());
        assert!(hash_tile(&tree, &Tile::parse("tile/0/002.p/88").unwrap()).is_some());
    }

    #[test]
    fn bundles_roundtrip() {
        let mut b = Vec::new();
        push_bundle_entry(&mut b, b"");
        push_bundle_entry(&mut b, b"abc");
        assert_eq!(parse_bundle(&b).unwrap(), vec![&b""[..], b"abc"]);
        assert!(parse_bundle(&b[..b.len() - 1]).is_none());
    }
}
