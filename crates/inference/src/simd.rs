//! Kernel families for the integer matrix products, chosen at run time.
//!
//! Every kernel computes a tile of `P` packed panels ([`PANEL`] weight rows
//! each) × `C` quantised columns and performs, for every (row, column) pair,
//! exactly the operations of [`quant::dot_panel`]: the same exact integer
//! block sums (formed with `vpdpbusd`, or `vpmaddubsw` + `vpmaddwd`, which
//! cannot change them) and the same fused multiply-adds in block order, one
//! row per f32 lane. A value is therefore the same whatever the family, the
//! tile shape or the thread that computes it; the unit tests check every
//! family and shape against the scalar definition bit for bit.
//!
//! The 512-bit and the AVX2 families read batched products from
//! [`Widened`] panels (4-bit weights unpacked to bytes once per chunk of
//! panels rather than once per column tile): the unpacking would otherwise
//! take a third of the vector operations of a kernel bound by its vector
//! ports. The AVX2 Q4 kernels compute both 8-row halves of a panel in one
//! pass, with tiles sized for the 16 YMM registers; their single-column
//! products (decode), bound by memory, walk one panel at a time so that the
//! weights stream in order. The 256-bit `vpdpbusd` kernels serve AVX-VNNI.
#![allow(unsafe_code)]

use crate::gguf::GgmlType;
use crate::pool::SharedOut;
use crate::quant::{self, QCol, PANEL, QK};

/// Which kernel family to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KernelKind {
    /// Portable scalar code.
    Scalar,
    /// AVX2 + FMA + F16C, 256-bit registers (x86-64 only).
    Avx2,
    /// AVX-VNNI `vpdpbusd` on 256-bit registers (x86-64 only).
    AvxVnni,
    /// AVX-512 (F, BW, VL) with VNNI on 512-bit registers (x86-64 only).
    Vnni512,
}

impl KernelKind {
    /// The fastest kernel family the running CPU supports. The environment
    /// variable `VERINFER_LLM_KERNELS` (`scalar`, `avx2`, `avxvnni`,
    /// `avx512vnni`) may select a slower supported family, for testing and
    /// benchmarks; results are identical either way.
    pub(crate) fn detect() -> Self {
        let all = Self::supported();
        let best = all.last().copied().unwrap_or(KernelKind::Scalar);
        match std::env::var("VERINFER_LLM_KERNELS").ok().as_deref() {
            Some(name) => all
                .iter()
                .copied()
                .find(|k| k.name() == name)
                .unwrap_or(best),
            None => best,
        }
    }

    /// Every family the running CPU supports, slowest first.
    pub(crate) fn supported() -> Vec<Self> {
        #[allow(unused_mut)]
        let mut v = vec![KernelKind::Scalar];
        #[cfg(target_arch = "x86_64")]
        {
            if x86::available_avx2() {
                v.push(KernelKind::Avx2);
            }
            if x86::available_avxvnni() {
                v.push(KernelKind::AvxVnni);
            }
            if x86::available_vnni512() {
                v.push(KernelKind::Vnni512);
            }
        }
        v
    }

    /// Short name (as accepted by `VERINFER_LLM_KERNELS`).
    pub(crate) fn name(self) -> &'static str {
        match self {
            KernelKind::Scalar => "scalar",
            KernelKind::Avx2 => "avx2",
            KernelKind::AvxVnni => "avxvnni",
            KernelKind::Vnni512 => "avx512vnni",
        }
    }
}

/// Defines `fn $name(kind, args..)` that runs the `#[inline(always)]`
/// function `$imp` compiled for AVX-512, for AVX2 + FMA, or for the baseline
/// target, as `kind` allows. Rust never reassociates or fuses float
/// operations, so the wider code gives the same bits; only the compiler's
/// vectorisation changes.
macro_rules! multiversion {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) => $imp:path) => {
        $(#[$m])*
        #[allow(unsafe_code)]
        $vis fn $name(kind: $crate::simd::KernelKind, $($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq")]
                fn avx512($($arg: $ty),*) {
                    $imp($($arg),*)
                }
                #[target_feature(enable = "avx2,fma,f16c")]
                fn avx2($($arg: $ty),*) {
                    $imp($($arg),*)
                }
                match kind {
                    // SAFETY: these kinds exist only on CPUs with the features
                    // (`KernelKind::supported`).
                    $crate::simd::KernelKind::Vnni512 => return unsafe { avx512($($arg),*) },
                    $crate::simd::KernelKind::Avx2 | $crate::simd::KernelKind::AvxVnni => {
                        // SAFETY: a non-scalar kind exists only on a CPU with its features (`KernelKind::supported`).
                        return unsafe { avx2($($arg),*) }
                    }
                    $crate::simd::KernelKind::Scalar => {}
                }
            }
            let _ = kind;
            $imp($($arg),*)
        }
    };
}
pub(crate) use multiversion;

/// Where a matrix product's results go: `out[c * rows + r]`.
pub(crate) struct Dest<'a, 'b> {
    /// The product, column-major (`rows` values per column).
    pub out: &'a SharedOut<'b>,
    /// Rows of the matrix.
    pub rows: usize,
}

impl Dest<'_, '_> {
    /// Pointer to the rows of panel `p` in column `c`, and how many there are.
    ///
    /// # Safety
    /// The caller writes at most that many values, and no other worker
    /// touches them during the same `Pool::run`.
    #[inline(always)]
    pub(crate) unsafe fn at(&self, p: usize, c: usize) -> (*mut f32, usize) {
        let r0 = p * PANEL;
        let len = PANEL.min(self.rows - r0);
        // SAFETY: forwarded contract.
        (unsafe { self.out.ptr(c * self.rows + r0, len) }, len)
    }

    /// Write the rows of panel `p` in column `c` from `v` (its first rows,
    /// as many as the panel has): the portable kernels' store.
    ///
    /// # Safety
    /// As for [`Dest::at`].
    pub(crate) unsafe fn put(&self, p: usize, c: usize, v: &[f32; PANEL]) {
        // SAFETY: `at` bounds the write to the panel's rows (at most
        // `PANEL`); the caller owns them (contract).
        unsafe {
            let (ptr, len) = self.at(p, c);
            std::ptr::copy_nonoverlapping(v.as_ptr(), ptr, len);
        }
    }

    /// [`Dest::at`] of the panels `p..p + P` in the columns `c..c + C`: a
    /// register tile's destinations. (Plain loops: built with nested
    /// `array::map` closures this was not inlined, and cost 5 % of a
    /// batched product.)
    ///
    /// # Safety
    /// As for [`Dest::at`].
    #[inline(always)]
    unsafe fn tile<const P: usize, const C: usize>(
        &self,
        p: usize,
        c: usize,
    ) -> [[(*mut f32, usize); C]; P] {
        let mut d = [[(std::ptr::null_mut(), 0); C]; P];
        for (i, row) in d.iter_mut().enumerate() {
            for (j, x) in row.iter_mut().enumerate() {
                // SAFETY: forwarded contract.
                *x = unsafe { self.at(p + i, c + j) };
            }
        }
        d
    }
}

/// Weight bytes of one chunk of panels a batched product keeps in L2
/// across its column tiles.
pub(crate) const PANEL_CHUNK_BYTES: usize = 256 * 1024;
/// Activation bytes of one column tile, kept in L1 across a chunk's panels.
pub(crate) const COL_TILE_BYTES: usize = 16 * 1024;

/// # Panics
/// If a column has fewer than `nb` blocks.
pub(crate) fn assert_cols_cover(cols: &[QCol<'_>], nb: usize) {
    for c in cols {
        assert!(
            c.qs.len() >= nb && c.d.len() >= nb && c.s.len() >= nb && c.qsum.len() >= nb,
            "activation column too short"
        );
    }
}

/// Integer matrix product of panels `p0..p1` of a packed matrix (`nb`
/// blocks of Q4_0, Q4_1 or Q8_0 per row, laid out as
/// [`quant::block_at`]) with the quantised columns `cols`, whose results
/// go to columns `c0..` of `dest`: every value is `quant::dot_panel`'s.
///
/// The rows of these panels must be written by this worker alone.
///
/// # Panics
/// If the matrix, a column or `dest` is too short.
#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul_panels(
    kind: KernelKind,
    ty: GgmlType,
    src: Panels<'_>,
    nb: usize,
    (p0, p1): (usize, usize),
    cols: &[QCol<'_>],
    c0: usize,
    dest: &Dest<'_, '_>,
) {
    let packed = match src {
        Panels::Packed(packed) => {
            assert!(
                packed.len() >= p1 * quant::panel_bytes(ty, nb),
                "packed matrix too short"
            );
            packed
        }
        Panels::Wide(w) => {
            assert!(
                widens(kind, ty) && w.ty == Some(ty) && w.nb == nb,
                "widened panels of another matrix or family"
            );
            assert!(w.covers(p0, p1), "panel not widened");
            &[]
        }
    };
    assert!(p1 <= dest.rows.div_ceil(PANEL), "panel out of range");
    assert_cols_cover(cols, nb);
    #[cfg(target_arch = "x86_64")]
    match kind {
        // SAFETY (all three): a non-scalar kind is only constructed by
        // `supported` after the matching `available*` check returned true;
        // the lengths were checked above, and `Dest::at` checks its bounds.
        KernelKind::Vnni512 => {
            // SAFETY: a non-scalar kind exists only on a CPU with its features (`KernelKind::supported`).
            return unsafe { x86::panels_zmm(ty, src, nb, (p0, p1), cols, c0, dest) };
        }
        KernelKind::AvxVnni => {
            // SAFETY: a non-scalar kind exists only on a CPU with its features (`KernelKind::supported`).
            return unsafe { x86::panels_avxvnni(ty, src, nb, (p0, p1), cols, c0, dest) };
        }
        KernelKind::Avx2 => {
            // SAFETY: a non-scalar kind exists only on a CPU with its features (`KernelKind::supported`).
            return unsafe { x86::panels_avx2(ty, src, nb, (p0, p1), cols, c0, dest) };
        }
        KernelKind::Scalar => {}
    }
    let _ = kind;
    let stride = quant::panel_bytes(ty, nb);
    for p in p0..p1 {
        let panel = &packed[p * stride..(p + 1) * stride];
        for (j, col) in cols.iter().enumerate() {
            let v = quant::dot_panel(ty, panel, nb, *col);
            // SAFETY: the rows are this worker's.
            unsafe { dest.put(p, c0 + j, &v) };
        }
    }
}

/// A kernel family's register tile: `P` panels × `C` columns of weight type
/// `T`, written to `dst`.
trait Tile {
    /// # Safety
    /// The CPU has the family's features, every panel and column covers `nb`
    /// blocks, and each `dst` pointer has room for its count of floats.
    unsafe fn tile<const T: u8, const P: usize, const C: usize>(
        panels: [&[u8]; P],
        nb: usize,
        a: [&QCol<'_>; C],
        dst: [[(*mut f32, usize); C]; P],
    );
}

const T_Q4_0: u8 = 0;
const T_Q4_1: u8 = 1;
const T_Q8_0: u8 = 2;
/// Q4_0 and Q4_1 panels in the widened layout ([`Widened`]).
const T_W4_0: u8 = 3;
const T_W4_1: u8 = 4;

const fn type_of(t: u8) -> GgmlType {
    match t {
        T_Q4_1 | T_W4_1 => GgmlType::Q4_1,
        T_Q4_0 | T_W4_0 => GgmlType::Q4_0,
        _ => GgmlType::Q8_0,
    }
}

/// Bytes of one block of one panel in the layout `t` reads.
/// Bytes of one panel of `nb` blocks of kernel type `t`.
const fn panel_stride(t: u8, nb: usize) -> usize {
    match t {
        T_W4_0 | T_W4_1 => nb * WIDE_BLOCK,
        _ => quant::panel_bytes(type_of(t), nb),
    }
}

/// Offsets of block `b` in a panel of kernel type `t`: `(scales, minimums,
/// quants)` ([`quant::block_at`], or [`WIDE_BLOCK`]'s layout).
#[inline(always)]
const fn block_offsets(t: u8, b: usize) -> (usize, usize, usize) {
    match t {
        T_W4_0 | T_W4_1 => (b * WIDE_BLOCK, b * WIDE_BLOCK + 64, b * WIDE_BLOCK + 128),
        _ => {
            let (s, q) = quant::block_at(type_of(t), b);
            (s, s + quant::MINS, q)
        }
    }
}

/// Bytes of a widened block: 16 f32 scales, 16 f32 minimums (Q4_1; zero
/// for Q4_0), then eight 64-byte chunks of quants, one byte each, chunk `v`
/// holding the rows' elements `4v..4v + 4` (the activation dword `v`).
const WIDE_BLOCK: usize = 640;

/// One widened block, aligned for 512-bit loads.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
pub(crate) struct WideBlock([u8; WIDE_BLOCK]);

/// Whether `kind` reads widened panels of type `ty` ([`Widened`]).
pub(crate) fn widens(kind: KernelKind, ty: GgmlType) -> bool {
    matches!(kind, KernelKind::Vnni512 | KernelKind::Avx2)
        && matches!(ty, GgmlType::Q4_0 | GgmlType::Q4_1)
}

/// A run of panels of a packed Q4 matrix with the nibbles widened to bytes
/// and the scales to f32. A batched product reads each panel once per
/// column tile; widening it once beforehand takes the nibble unpacking (a
/// third of the 512-bit kernel's vector operations) out of that loop. The
/// integer products and their sums are the same, so are the results.
#[derive(Default)]
pub(crate) struct Widened {
    ty: Option<GgmlType>,
    nb: usize,
    first: usize,
    blocks: Vec<WideBlock>,
}

impl Widened {
    /// Widen panels `p0..p1` of `packed` (type `ty`, `nb` blocks per row),
    /// reusing the allocation.
    ///
    /// # Panics
    /// If `kind` does not widen `ty` ([`widens`]), or `packed` is too short.
    pub(crate) fn fill(
        &mut self,
        kind: KernelKind,
        ty: GgmlType,
        packed: &[u8],
        nb: usize,
        (p0, p1): (usize, usize),
    ) {
        assert!(widens(kind, ty), "{kind:?} does not widen {ty:?}");
        let src = &packed[p0 * quant::panel_bytes(ty, nb)..p1 * quant::panel_bytes(ty, nb)];
        let n = (p1 - p0) * nb;
        self.blocks.clear();
        self.blocks.reserve(n);
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `widens` holds only for `Vnni512` and `Avx2`, which
        // `supported` gives only on a CPU with their features; `blocks` has
        // room for the `n` blocks written, all bytes of each.
        unsafe {
            if kind == KernelKind::Vnni512 {
                x86::widen_zmm(ty, src, nb, self.blocks.as_mut_ptr());
            } else {
                x86::widen_ymm(ty, src, nb, self.blocks.as_mut_ptr());
            }
            self.blocks.set_len(n);
        }
        (self.ty, self.nb, self.first) = (Some(ty), nb, p0);
    }

    fn covers(&self, p0: usize, p1: usize) -> bool {
        let panels = self.blocks.len().checked_div(self.nb).unwrap_or(0);
        p0 >= self.first && p1 <= self.first + panels && p0 <= p1
    }

    /// The widened blocks of panel `p` (an index of the whole matrix).
    fn panel(&self, p: usize) -> &[u8] {
        let b = &self.blocks[(p - self.first) * self.nb..(p - self.first + 1) * self.nb];
        // SAFETY: `WideBlock` is plain bytes with no padding.
        unsafe { std::slice::from_raw_parts(b.as_ptr().cast::<u8>(), b.len() * WIDE_BLOCK) }
    }
}

/// A matrix's panels as [`matmul_panels`] reads them.
#[derive(Clone, Copy)]
pub(crate) enum Panels<'a> {
    /// All panels, as [`quant::pack_matrix`] lays them out.
    Packed(&'a [u8]),
    /// Some panels widened (512-bit and AVX2 kernels only; [`widens`]).
    Wide(&'a Widened),
}

impl<'a> Panels<'a> {
    /// Panels `p..p + N` (`stride` bytes each when packed): a register
    /// tile's weights.
    #[inline(always)]
    fn run<const N: usize>(self, stride: usize, p: usize) -> [&'a [u8]; N] {
        let mut out: [&[u8]; N] = [&[]; N];
        for (k, o) in out.iter_mut().enumerate() {
            *o = match self {
                Panels::Packed(packed) => &packed[(p + k) * stride..(p + k + 1) * stride],
                Panels::Wide(w) => w.panel(p + k),
            };
        }
        out
    }
}

/// The loops of [`matmul_panels`] over `P × C` tiles (`PD × 1` for a single
/// column), then their tails; each (row, column) value has the same
/// arithmetic whatever tile computes it.
///
/// # Safety
/// As for [`Tile::tile`]; the lengths were checked by [`matmul_panels`].
#[inline(always)]
unsafe fn drive<K: Tile, const T: u8, const P: usize, const C: usize, const PD: usize>(
    src: Panels<'_>,
    nb: usize,
    (p0, p1): (usize, usize),
    cols: &[QCol<'_>],
    c0: usize,
    dest: &Dest<'_, '_>,
) {
    let stride = panel_stride(T, nb);
    // SAFETY: every call below forwards the contract; `Dest::at` gives each
    // tile its own rows.
    unsafe {
        if cols.len() == 1 {
            let mut p = p0;
            while p + PD <= p1 {
                K::tile::<T, PD, 1>(src.run(stride, p), nb, [&cols[0]], dest.tile(p, c0));
                p += PD;
            }
            for p in p..p1 {
                K::tile::<T, 1, 1>(src.run(stride, p), nb, [&cols[0]], dest.tile(p, c0));
            }
            return;
        }
        let mut p = p0;
        while p < p1 {
            let np = if p + P <= p1 { P } else { 1 };
            let mut c = 0;
            while c + C <= cols.len() {
                let a: [&QCol<'_>; C] = std::array::from_fn(|k| &cols[c + k]);
                if np == P {
                    K::tile::<T, P, C>(src.run(stride, p), nb, a, dest.tile(p, c0 + c));
                } else {
                    K::tile::<T, 1, C>(src.run(stride, p), nb, a, dest.tile(p, c0 + c));
                }
                c += C;
            }
            // The column tail in pairs, then one (single columns leave the
            // kernel a chain per panel, too few to fill its pipelines).
            while c + 2 <= cols.len() && C > 2 {
                let a = [&cols[c], &cols[c + 1]];
                if np == P {
                    K::tile::<T, P, 2>(src.run(stride, p), nb, a, dest.tile(p, c0 + c));
                } else {
                    K::tile::<T, 1, 2>(src.run(stride, p), nb, a, dest.tile(p, c0 + c));
                }
                c += 2;
            }
            for (c, col) in cols.iter().enumerate().skip(c) {
                if np == P {
                    K::tile::<T, P, 1>(src.run(stride, p), nb, [col], dest.tile(p, c0 + c));
                } else {
                    K::tile::<T, 1, 1>(src.run(stride, p), nb, [col], dest.tile(p, c0 + c));
                }
            }
            p += np;
        }
    }
}

/// [`drive`] for the weight type `ty`.
macro_rules! drive_ty {
    ($k:ty, $p:literal, $c:literal, $pd:literal, $ty:expr, $($arg:expr),*) => {
        match $ty {
            GgmlType::Q4_1 => drive::<$k, T_Q4_1, $p, $c, $pd>($($arg),*),
            GgmlType::Q4_0 => drive::<$k, T_Q4_0, $p, $c, $pd>($($arg),*),
            _ => drive::<$k, T_Q8_0, $p, $c, $pd>($($arg),*),
        }
    };
}
/// Sixteen f32 lanes: one 512-bit register, two 256-bit ones, or an array.
/// Each operation is lane-wise and exactly rounded, so every implementation
/// gives the same bits.
pub(crate) trait Lanes16: Copy {
    /// All `+0.0`.
    ///
    /// # Safety
    /// Every method needs the CPU features of its implementation.
    unsafe fn zero() -> Self;
    /// All `x`. (Safety: see [`Lanes16::zero`].)
    unsafe fn splat(x: f32) -> Self;
    /// Load. (Safety: see [`Lanes16::zero`].)
    unsafe fn load(p: &[f32; 16]) -> Self;
    /// Store. (Safety: see [`Lanes16::zero`].)
    unsafe fn store(self, p: &mut [f32; 16]);
    /// `self * b + c` with one rounding. (Safety: see [`Lanes16::zero`].)
    unsafe fn fma(self, b: Self, c: Self) -> Self;
    /// `self * b`. (Safety: see [`Lanes16::zero`].)
    unsafe fn mul(self, b: Self) -> Self;
    /// `if self > b { self } else { b }` per lane (NaN in `self` loses).
    /// (Safety: see [`Lanes16::zero`].)
    unsafe fn max(self, b: Self) -> Self;
    /// The lanes.
    fn to_array(self) -> [f32; 16] {
        let mut a = [0f32; 16];
        // SAFETY: storing needs the same features as producing `self` did.
        unsafe { self.store(&mut a) };
        a
    }
}

impl Lanes16 for [f32; 16] {
    #[inline(always)]
    unsafe fn zero() -> Self {
        [0.0; 16]
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> Self {
        [x; 16]
    }
    #[inline(always)]
    unsafe fn load(p: &[f32; 16]) -> Self {
        *p
    }
    #[inline(always)]
    unsafe fn store(self, p: &mut [f32; 16]) {
        *p = self;
    }
    #[inline(always)]
    unsafe fn fma(self, b: Self, c: Self) -> Self {
        std::array::from_fn(|l| self[l].mul_add(b[l], c[l]))
    }
    #[inline(always)]
    unsafe fn mul(self, b: Self) -> Self {
        std::array::from_fn(|l| self[l] * b[l])
    }
    #[inline(always)]
    unsafe fn max(self, b: Self) -> Self {
        std::array::from_fn(|l| if self[l] > b[l] { self[l] } else { b[l] })
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) use x86::{quantize_row_zmm, Ymm2, Zmm16};

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{block_offsets, drive, type_of, Dest, GgmlType, Panels, QCol, Tile, PANEL, QK};
    use super::{T_Q4_0, T_Q4_1, T_Q8_0, T_W4_0, T_W4_1};
    use crate::quant;

    /// AVX2 with FMA and F16C.
    pub(super) fn available_avx2() -> bool {
        is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
    }

    /// AVX-VNNI besides [`available_avx2`].
    pub(super) fn available_avxvnni() -> bool {
        available_avx2() && is_x86_feature_detected!("avxvnni")
    }

    /// AVX-512 F/BW/VL with VNNI besides [`available_avx2`].
    pub(super) fn available_vnni512() -> bool {
        available_avx2()
            && is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vl")
            && is_x86_feature_detected!("avx512vnni")
    }

    /// [`super::Lanes16`] in one 512-bit register (AVX-512 F).
    #[derive(Clone, Copy)]
    pub(crate) struct Zmm16(__m512);

    // SAFETY (all methods): the caller guarantees AVX-512 F (trait contract);
    // the pointers come from references to 16 floats.
    impl super::Lanes16 for Zmm16 {
        #[inline(always)]
        unsafe fn zero() -> Self {
            // SAFETY: the caller guarantees AVX-512 F (trait contract); pointers come from references to 16 floats.
            unsafe { Zmm16(_mm512_setzero_ps()) }
        }
        #[inline(always)]
        unsafe fn splat(x: f32) -> Self {
            // SAFETY: the caller guarantees AVX-512 F (trait contract); pointers come from references to 16 floats.
            unsafe { Zmm16(_mm512_set1_ps(x)) }
        }
        #[inline(always)]
        unsafe fn load(p: &[f32; 16]) -> Self {
            // SAFETY: the caller guarantees AVX-512 F (trait contract); pointers come from references to 16 floats.
            unsafe { Zmm16(_mm512_loadu_ps(p.as_ptr())) }
        }
        #[inline(always)]
        unsafe fn store(self, p: &mut [f32; 16]) {
            // SAFETY: the caller guarantees AVX-512 F (trait contract); pointers come from references to 16 floats.
            unsafe { _mm512_storeu_ps(p.as_mut_ptr(), self.0) }
        }
        #[inline(always)]
        unsafe fn fma(self, b: Self, c: Self) -> Self {
            // SAFETY: the caller guarantees AVX-512 F (trait contract); pointers come from references to 16 floats.
            unsafe { Zmm16(_mm512_fmadd_ps(self.0, b.0, c.0)) }
        }
        #[inline(always)]
        unsafe fn mul(self, b: Self) -> Self {
            // SAFETY: the caller guarantees AVX-512 F (trait contract); pointers come from references to 16 floats.
            unsafe { Zmm16(_mm512_mul_ps(self.0, b.0)) }
        }
        #[inline(always)]
        unsafe fn max(self, b: Self) -> Self {
            // `vmaxps a, b` is `a > b ? a : b`, NaN or equal zeros giving b.
            // SAFETY: the caller guarantees AVX-512 F (trait contract); pointers come from references to 16 floats.
            unsafe { Zmm16(_mm512_max_ps(self.0, b.0)) }
        }
    }

    /// [`super::Lanes16`] in two 256-bit registers (AVX2 and FMA).
    #[derive(Clone, Copy)]
    pub(crate) struct Ymm2(__m256, __m256);

    // SAFETY (all methods): the caller guarantees AVX2 and FMA (trait
    // contract); the pointers come from references to 16 floats.
    impl super::Lanes16 for Ymm2 {
        #[inline(always)]
        unsafe fn zero() -> Self {
            // SAFETY: the caller guarantees AVX2 and FMA (trait contract); pointers come from references to 16 floats.
            unsafe { Ymm2(_mm256_setzero_ps(), _mm256_setzero_ps()) }
        }
        #[inline(always)]
        unsafe fn splat(x: f32) -> Self {
            // SAFETY: the caller guarantees AVX2 and FMA (trait contract); pointers come from references to 16 floats.
            unsafe { Ymm2(_mm256_set1_ps(x), _mm256_set1_ps(x)) }
        }
        #[inline(always)]
        unsafe fn load(p: &[f32; 16]) -> Self {
            // SAFETY: the caller guarantees AVX2 and FMA (trait contract); pointers come from references to 16 floats.
            unsafe {
                Ymm2(
                    _mm256_loadu_ps(p.as_ptr()),
                    _mm256_loadu_ps(p.as_ptr().add(8)),
                )
            }
        }
        #[inline(always)]
        unsafe fn store(self, p: &mut [f32; 16]) {
            // SAFETY: the caller guarantees AVX2 and FMA (trait contract); pointers come from references to 16 floats.
            unsafe {
                _mm256_storeu_ps(p.as_mut_ptr(), self.0);
                _mm256_storeu_ps(p.as_mut_ptr().add(8), self.1);
            }
        }
        #[inline(always)]
        unsafe fn fma(self, b: Self, c: Self) -> Self {
            // SAFETY: the caller guarantees AVX2 and FMA (trait contract); pointers come from references to 16 floats.
            unsafe {
                Ymm2(
                    _mm256_fmadd_ps(self.0, b.0, c.0),
                    _mm256_fmadd_ps(self.1, b.1, c.1),
                )
            }
        }
        #[inline(always)]
        unsafe fn mul(self, b: Self) -> Self {
            // SAFETY: the caller guarantees AVX2 and FMA (trait contract); pointers come from references to 16 floats.
            unsafe { Ymm2(_mm256_mul_ps(self.0, b.0), _mm256_mul_ps(self.1, b.1)) }
        }
        #[inline(always)]
        unsafe fn max(self, b: Self) -> Self {
            // As for `Zmm::max`.
            // SAFETY: the caller guarantees AVX2 and FMA (trait contract); pointers come from references to 16 floats.
            unsafe { Ymm2(_mm256_max_ps(self.0, b.0), _mm256_max_ps(self.1, b.1)) }
        }
    }

    /// Activation dword `v` (bytes `4v..4v + 4`) of block `b` of column `a`.
    ///
    /// # Safety
    /// `b < a.qs.len()` and `v < 8`.
    #[inline(always)]
    unsafe fn act_dword(a: &QCol<'_>, b: usize, v: usize) -> i32 {
        // SAFETY: block b exists (contract), and 4v + 4 <= 32.
        unsafe { std::ptr::read_unaligned(a.qs.as_ptr().add(b).cast::<i32>().add(v)) }
    }

    /// Scalar per-block values of column `a`: (scale, exact sum, correction).
    ///
    /// # Safety
    /// `b` is a block of the column.
    #[inline(always)]
    unsafe fn act_block<const T: u8>(a: &QCol<'_>, b: usize) -> (f32, f32, i32) {
        // SAFETY: b < len of d, s and qsum (checked by `panel_tile`).
        unsafe {
            let qsum = *a.qsum.get_unchecked(b);
            // Q4_0 nibbles are w + 8, Q8_0 bytes w + 128 (unsigned for `vpdpbusd`).
            let corr = match T {
                T_Q4_0 | T_W4_0 => 8 * qsum,
                T_Q8_0 => 128 * qsum,
                _ => 0,
            };
            (*a.d.get_unchecked(b), *a.s.get_unchecked(b), corr)
        }
    }

    /// Widen the packed Q4 blocks `src` into `out` ([`super::Widened`]).
    ///
    /// # Safety
    /// [`available_vnni512`] holds; `out` has room for every block of `src`.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw")]
    pub(super) unsafe fn widen_zmm(
        ty: GgmlType,
        src: &[u8],
        nb: usize,
        out: *mut super::WideBlock,
    ) {
        let m4 = _mm512_set1_epi8(0x0f);
        let stride = quant::panel_bytes(ty, nb);
        for i in 0..src.len() / stride * nb {
            let (so, qo) = quant::block_at(ty, i % nb);
            // SAFETY: the scales, minimums and 256 quant bytes of block
            // i % nb lie in panel i / nb of `src`; block i of `out` has
            // room for 640 bytes (contract).
            unsafe {
                let o = out.add(i).cast::<u8>();
                let b = src.as_ptr().add(i / nb * stride);
                _mm512_storeu_ps(
                    o.cast(),
                    _mm512_cvtph_ps(_mm256_loadu_si256(b.add(so).cast())),
                );
                let m = if ty == GgmlType::Q4_1 {
                    _mm512_cvtph_ps(_mm256_loadu_si256(b.add(so + quant::MINS).cast()))
                } else {
                    _mm512_setzero_ps()
                };
                _mm512_storeu_ps(o.add(64).cast(), m);
                for v in 0..4 {
                    let raw = _mm512_loadu_si512(b.add(qo + 64 * v).cast());
                    let lo = _mm512_and_si512(raw, m4);
                    let hi = _mm512_and_si512(_mm512_srli_epi16(raw, 4), m4);
                    _mm512_storeu_si512(o.add(128 + 64 * v).cast(), lo);
                    _mm512_storeu_si512(o.add(384 + 64 * v).cast(), hi);
                }
            }
        }
    }

    /// [`super::matmul_panels`] on 512-bit registers (one panel per register).
    ///
    /// # Safety
    /// [`available_vnni512`] holds, and the checks of `matmul_panels` passed.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    pub(super) unsafe fn panels_zmm(
        ty: GgmlType,
        src: Panels<'_>,
        nb: usize,
        panels: (usize, usize),
        cols: &[QCol<'_>],
        c0: usize,
        dest: &Dest<'_, '_>,
    ) {
        // SAFETY: forwarded contract.
        unsafe {
            match (src, ty) {
                (Panels::Wide(_), GgmlType::Q4_1) => {
                    drive::<Zmm, T_W4_1, 2, 6, 1>(src, nb, panels, cols, c0, dest)
                }
                (Panels::Wide(_), _) => {
                    drive::<Zmm, T_W4_0, 2, 6, 1>(src, nb, panels, cols, c0, dest)
                }
                (_, GgmlType::Q8_0) => {
                    drive::<Zmm, T_Q8_0, 2, 6, 1>(src, nb, panels, cols, c0, dest)
                }
                _ => drive_ty!(Zmm, 2, 4, 1, ty, src, nb, panels, cols, c0, dest),
            }
        }
    }

    /// Bytes ahead of its loads that a single-column 512-bit product
    /// prefetches.
    const ZMM_AHEAD: usize = 256;

    /// The 512-bit kernels.
    pub(crate) struct Zmm;

    impl Tile for Zmm {
        #[inline(always)]
        unsafe fn tile<const T: u8, const P: usize, const C: usize>(
            panels: [&[u8]; P],
            nb: usize,
            a: [&QCol<'_>; C],
            dst: [[(*mut f32, usize); C]; P],
        ) {
            // SAFETY: forwarded contract.
            unsafe { zmm::<T, P, C>(panels, nb, a, dst) }
        }
    }

    // Index loops over the register tile read more plainly than iterators here.
    #[allow(clippy::needless_range_loop)]
    #[inline(always)]
    unsafe fn zmm<const T: u8, const P: usize, const C: usize>(
        panels: [&[u8]; P],
        nb: usize,
        a: [&QCol<'_>; C],
        dst: [[(*mut f32, usize); C]; P],
    ) {
        let wide = T == T_W4_0 || T == T_W4_1;
        let q4_1 = type_of(T) == GgmlType::Q4_1;
        let m4 = _mm512_set1_epi8(0x0f);
        let mut acc = [[_mm512_setzero_ps(); C]; P];
        let base: [*const u8; P] = panels.map(<[u8]>::as_ptr);
        for b in 0..nb {
            // Block b of every panel lies inside it (contract).
            let (so, mo, qo) = block_offsets(T, b);
            // SAFETY: the scales (and minimums) are in the block: 16 halves,
            // or 16 floats when widened.
            let dw: [__m512; P] = std::array::from_fn(|p| unsafe {
                if wide {
                    _mm512_loadu_ps(base[p].add(so).cast())
                } else {
                    _mm512_cvtph_ps(_mm256_loadu_si256(base[p].add(so).cast()))
                }
            });
            let mw: [__m512; P] = std::array::from_fn(|p| {
                // SAFETY: as above.
                unsafe {
                    if !q4_1 {
                        _mm512_setzero_ps()
                    } else if wide {
                        _mm512_loadu_ps(base[p].add(mo).cast())
                    } else {
                        _mm512_cvtph_ps(_mm256_loadu_si256(base[p].add(mo).cast()))
                    }
                }
            });
            if C == 1 && !wide {
                // Decode streams each weight once: fetch ahead of the loads.
                let (s0, s1) = quant::block_span(type_of(T), b);
                for p in 0..P {
                    for l in (s0..s1).step_by(64) {
                        // A prefetch never faults, wherever it points.
                        _mm_prefetch::<_MM_HINT_T0>(base[p].wrapping_add(ZMM_AHEAD + l).cast());
                    }
                }
            }
            let mut isum = [[_mm512_setzero_si512(); C]; P];
            if T == T_Q8_0 || wide {
                // With one or two products in flight, a second chain of
                // integer sums (odd chunks) halves the dependent latency;
                // integer sums are exact, so their order does not matter.
                let mut odd = [[_mm512_setzero_si512(); C]; P];
                for v in 0..8 {
                    // SAFETY: chunk v is inside the block.
                    let w: [__m512i; P] = std::array::from_fn(|p| unsafe {
                        _mm512_loadu_si512(base[p].add(qo + 64 * v).cast())
                    });
                    for c in 0..C {
                        // SAFETY: b < nb, v < 8.
                        let av = _mm512_set1_epi32(unsafe { act_dword(a[c], b, v) });
                        for p in 0..P {
                            if P * C <= 2 && v % 2 == 1 {
                                odd[p][c] = _mm512_dpbusd_epi32(odd[p][c], w[p], av);
                            } else {
                                isum[p][c] = _mm512_dpbusd_epi32(isum[p][c], w[p], av);
                            }
                        }
                    }
                }
                if P * C <= 2 {
                    for p in 0..P {
                        for c in 0..C {
                            isum[p][c] = _mm512_add_epi32(isum[p][c], odd[p][c]);
                        }
                    }
                }
            } else {
                for v in 0..4 {
                    // SAFETY: chunk v is inside the block.
                    let raw: [__m512i; P] = std::array::from_fn(|p| unsafe {
                        _mm512_loadu_si512(base[p].add(qo + 64 * v).cast())
                    });
                    let lo: [__m512i; P] = std::array::from_fn(|p| _mm512_and_si512(raw[p], m4));
                    let hi: [__m512i; P] =
                        std::array::from_fn(|p| _mm512_and_si512(_mm512_srli_epi16(raw[p], 4), m4));
                    for c in 0..C {
                        // SAFETY: b < nb, v + 4 < 8.
                        let (alo, ahi) = unsafe {
                            (
                                _mm512_set1_epi32(act_dword(a[c], b, v)),
                                _mm512_set1_epi32(act_dword(a[c], b, v + 4)),
                            )
                        };
                        for p in 0..P {
                            isum[p][c] = _mm512_dpbusd_epi32(
                                _mm512_dpbusd_epi32(isum[p][c], lo[p], alo),
                                hi[p],
                                ahi,
                            );
                        }
                    }
                }
            }
            for c in 0..C {
                // SAFETY: b < nb.
                let (d, s, corr) = unsafe { act_block::<T>(a[c], b) };
                let da = _mm512_set1_ps(d);
                let sa = _mm512_set1_ps(s);
                let corr = _mm512_set1_epi32(corr);
                for p in 0..P {
                    let i = if q4_1 {
                        isum[p][c]
                    } else {
                        _mm512_sub_epi32(isum[p][c], corr)
                    };
                    let f = _mm512_cvtepi32_ps(i);
                    acc[p][c] = _mm512_fmadd_ps(_mm512_mul_ps(dw[p], da), f, acc[p][c]);
                    if q4_1 {
                        acc[p][c] = _mm512_fmadd_ps(mw[p], sa, acc[p][c]);
                    }
                }
            }
        }
        for (accp, dstp) in acc.iter().zip(&dst) {
            for (&x, &(ptr, len)) in accp.iter().zip(dstp) {
                // SAFETY: `ptr` has room for `len` <= 16 floats (contract).
                unsafe {
                    if len == PANEL {
                        _mm512_storeu_ps(ptr, x);
                    } else {
                        _mm512_mask_storeu_ps(ptr, (1u16 << len) - 1, x);
                    }
                }
            }
        }
    }

    /// [`crate::quant::quantize_row`] on 512-bit registers (same results:
    /// the same operations per element, integer sums, and the exact sum `s`
    /// in the contract's eight lanes and reduction tree).
    ///
    /// # Safety
    /// [`available_vnni512`] holds.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq")]
    pub(crate) unsafe fn quantize_row_zmm(
        x: &[f32],
        qs: &mut [[i8; QK]],
        d: &mut [f32],
        s: &mut [f32],
        qsum: &mut [i32],
    ) {
        let absmask = _mm512_set1_epi32(0x7fff_ffff);
        let inf = _mm512_set1_epi32(0x7f80_0000);
        let magic = _mm512_set1_ps(12_582_912.0);
        let lo = _mm512_set1_ps(-127.0);
        let hi = _mm512_set1_ps(127.0);
        for ((((xb, qb), db), sb), ib) in x
            .chunks_exact(QK)
            .zip(qs.iter_mut())
            .zip(d.iter_mut())
            .zip(s.iter_mut())
            .zip(qsum.iter_mut())
        {
            // SAFETY: xb holds 32 floats, qb 32 bytes.
            unsafe {
                let v = [
                    _mm512_loadu_ps(xb.as_ptr()),
                    _mm512_loadu_ps(xb.as_ptr().add(16)),
                ];
                // amax: magnitudes' bits, NaN as 0, integer maximum.
                let bits = v.map(|x| {
                    let b = _mm512_and_si512(_mm512_castps_si512(x), absmask);
                    _mm512_maskz_mov_epi32(_mm512_cmple_epi32_mask(b, inf), b)
                });
                let amax = f32::from_bits(_mm512_reduce_max_epi32(_mm512_max_epi32(
                    bits[0], bits[1],
                )) as u32);
                let dd = amax / 127.0;
                let id = if dd > 0.0 { 1.0 / dd } else { 0.0 };
                let vid = _mm512_set1_ps(id);
                let q = v.map(|x| {
                    // round_even_f32(x * id): (x * id + M) - M, three roundings.
                    let r = _mm512_sub_ps(_mm512_add_ps(_mm512_mul_ps(x, vid), magic), magic);
                    let r = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(r, r, _CMP_ORD_Q), r);
                    _mm512_cvtps_epi32(_mm512_min_ps(_mm512_max_ps(r, lo), hi))
                });
                _mm_storeu_si128(qb.as_mut_ptr().cast(), _mm512_cvtepi32_epi8(q[0]));
                _mm_storeu_si128(qb.as_mut_ptr().add(16).cast(), _mm512_cvtepi32_epi8(q[1]));
                *ib = _mm512_reduce_add_epi32(_mm512_add_epi32(q[0], q[1]));
                // s: eight lanes from +0.0 over the four chunks, then hsum8's tree.
                let mut l8 = _mm256_setzero_ps();
                for c in 0..4 {
                    l8 = _mm256_add_ps(l8, _mm256_loadu_ps(xb.as_ptr().add(8 * c)));
                }
                let t = _mm_add_ps(_mm256_castps256_ps128(l8), _mm256_extractf128_ps(l8, 1));
                let u = _mm_add_ps(t, _mm_movehl_ps(t, t));
                *sb = _mm_cvtss_f32(_mm_add_ss(u, _mm_shuffle_ps(u, u, 1)));
                *db = dd;
            }
        }
    }

    /// [`super::matmul_panels`] on 256-bit registers with AVX2 (`vpmaddubsw`).
    ///
    /// # Safety
    /// [`available_avx2`] holds, and the checks of `matmul_panels` passed.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn panels_avx2(
        ty: GgmlType,
        src: Panels<'_>,
        nb: usize,
        panels: (usize, usize),
        cols: &[QCol<'_>],
        c0: usize,
        dest: &Dest<'_, '_>,
    ) {
        // SAFETY: forwarded contract. A single column runs one panel at a
        // time ([`ymm_gemv`]).
        unsafe {
            match (src, ty) {
                (Panels::Wide(_), GgmlType::Q4_1) => {
                    drive::<YmmQ4, T_W4_1, 1, 2, 2>(src, nb, panels, cols, c0, dest)
                }
                (Panels::Wide(_), _) => {
                    drive::<YmmQ4, T_W4_0, 1, 3, 2>(src, nb, panels, cols, c0, dest)
                }
                (_, GgmlType::Q4_1) => {
                    drive::<YmmQ4, T_Q4_1, 1, 2, 1>(src, nb, panels, cols, c0, dest)
                }
                (_, GgmlType::Q4_0) => {
                    drive::<YmmQ4, T_Q4_0, 1, 2, 1>(src, nb, panels, cols, c0, dest)
                }
                _ => drive::<YmmQ8, T_Q8_0, 1, 4, 1>(src, nb, panels, cols, c0, dest),
            }
        }
    }

    /// Widen the packed Q4 blocks `src` into `out` ([`super::Widened`]),
    /// with AVX2: the same bytes as [`widen_zmm`].
    ///
    /// # Safety
    /// [`available_avx2`] holds; `out` has room for every block of `src`.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn widen_ymm(
        ty: GgmlType,
        src: &[u8],
        nb: usize,
        out: *mut super::WideBlock,
    ) {
        let m4 = _mm256_set1_epi8(0x0f);
        let stride = quant::panel_bytes(ty, nb);
        for i in 0..src.len() / stride * nb {
            let (so, qo) = quant::block_at(ty, i % nb);
            // SAFETY: the scales, minimums and 256 quant bytes of block
            // i % nb lie in panel i / nb of `src`; block i of `out` has
            // room for 640 bytes (contract).
            unsafe {
                let o = out.add(i).cast::<u8>();
                let b = src.as_ptr().add(i / nb * stride);
                for h in 0..2 {
                    let d = _mm256_cvtph_ps(_mm_loadu_si128(b.add(so + 16 * h).cast()));
                    _mm256_storeu_ps(o.add(32 * h).cast(), d);
                    let m = if ty == GgmlType::Q4_1 {
                        let mo = so + quant::MINS;
                        _mm256_cvtph_ps(_mm_loadu_si128(b.add(mo + 16 * h).cast()))
                    } else {
                        _mm256_setzero_ps()
                    };
                    _mm256_storeu_ps(o.add(64 + 32 * h).cast(), m);
                }
                for v in 0..8 {
                    let raw = _mm256_loadu_si256(b.add(qo + 32 * v).cast::<__m256i>());
                    let lo = _mm256_and_si256(raw, m4);
                    let hi = _mm256_and_si256(_mm256_srli_epi16(raw, 4), m4);
                    // Bytes 32v.. of the packed quants are half v % 2 of chunk v / 2.
                    _mm256_storeu_si256(o.add(128 + 32 * v).cast(), lo);
                    _mm256_storeu_si256(o.add(384 + 32 * v).cast(), hi);
                }
            }
        }
    }

    /// The AVX2 kernels for Q4 panels, packed or widened.
    pub(crate) struct YmmQ4;

    impl Tile for YmmQ4 {
        #[inline(always)]
        unsafe fn tile<const T: u8, const P: usize, const C: usize>(
            panels: [&[u8]; P],
            nb: usize,
            a: [&QCol<'_>; C],
            dst: [[(*mut f32, usize); C]; P],
        ) {
            // SAFETY: forwarded contract.
            unsafe {
                if C == 1 && (T == T_Q4_0 || T == T_Q4_1) {
                    for (panel, d) in panels.into_iter().zip(dst) {
                        ymm_gemv::<T>(panel, nb, a[0], d[0]);
                    }
                } else {
                    ymm_q4::<T, P, C>(panels, nb, a, dst);
                }
            }
        }
    }

    /// Both halves of each panel (rows 0..8 and 8..16, one register each)
    /// in one pass over its blocks, so the weights and activations are
    /// loaded once per tile. Per (half, column) the tile holds an f32
    /// accumulator and the block's i16 sums: a 1 × 3 tile of widened
    /// panels fills the 16 registers (12 of them, two weight halves, the
    /// broadcast activation and a product). Q4_1, whose minimums add a
    /// broadcast sum per column, spills from them, and its 1 × 2 tiles
    /// took 8 % less CPU time for a prefill than 1 × 3 (Q4_0: no change).
    #[allow(clippy::needless_range_loop)]
    #[inline(always)]
    unsafe fn ymm_q4<const T: u8, const P: usize, const C: usize>(
        panels: [&[u8]; P],
        nb: usize,
        a: [&QCol<'_>; C],
        dst: [[(*mut f32, usize); C]; P],
    ) {
        let wide = T == T_W4_0 || T == T_W4_1;
        let q4_1 = type_of(T) == GgmlType::Q4_1;
        let m4 = _mm256_set1_epi8(0x0f);
        let ones = _mm256_set1_epi16(1);
        // Plain loops rather than closures: a closure does not inherit the
        // target features, and its intrinsics would stay calls.
        let mut acc = [[[_mm256_setzero_ps(); C]; 2]; P];
        let base: [*const u8; P] = panels.map(<[u8]>::as_ptr);
        let mut w = [[_mm256_setzero_si256(); 2]; P];
        for b in 0..nb {
            // Block b of every panel lies inside it (contract).
            let (so, mo, qo) = block_offsets(T, b);
            // With `vpmaddubsw` each i16 lane sums 16 products of a nibble
            // and an activation over the block: at most 16 * 15 * 127 =
            // 30480, so i16 is exact.
            let mut s16 = [[[_mm256_setzero_si256(); C]; 2]; P];
            if wide {
                for v in 0..8 {
                    for p in 0..P {
                        for h in 0..2 {
                            // SAFETY: chunk v (both halves) is inside the block.
                            w[p][h] = unsafe {
                                _mm256_loadu_si256(base[p].add(qo + 64 * v + 32 * h).cast())
                            };
                        }
                    }
                    for c in 0..C {
                        // SAFETY: b < nb, v < 8.
                        let av = _mm256_set1_epi32(unsafe { act_dword(a[c], b, v) });
                        for p in 0..P {
                            for h in 0..2 {
                                let pr = _mm256_maddubs_epi16(w[p][h], av);
                                s16[p][h][c] = _mm256_add_epi16(s16[p][h][c], pr);
                            }
                        }
                    }
                }
            } else {
                for v in 0..4 {
                    for p in 0..P {
                        for h in 0..2 {
                            // SAFETY: chunk v (both halves) is inside the block.
                            w[p][h] = unsafe {
                                _mm256_loadu_si256(base[p].add(qo + 64 * v + 32 * h).cast())
                            };
                        }
                    }
                    for c in 0..C {
                        // SAFETY: b < nb, v + 4 < 8.
                        let (alo, ahi) = unsafe {
                            (
                                _mm256_set1_epi32(act_dword(a[c], b, v)),
                                _mm256_set1_epi32(act_dword(a[c], b, v + 4)),
                            )
                        };
                        for p in 0..P {
                            for h in 0..2 {
                                let lo = _mm256_and_si256(w[p][h], m4);
                                let hi = _mm256_and_si256(_mm256_srli_epi16(w[p][h], 4), m4);
                                let pr = _mm256_add_epi16(
                                    _mm256_maddubs_epi16(lo, alo),
                                    _mm256_maddubs_epi16(hi, ahi),
                                );
                                s16[p][h][c] = _mm256_add_epi16(s16[p][h][c], pr);
                            }
                        }
                    }
                }
            }
            for c in 0..C {
                // SAFETY: b < nb.
                let (d, s, corr) = unsafe { act_block::<T>(a[c], b) };
                let (da, sa, corr) = (
                    _mm256_set1_ps(d),
                    _mm256_set1_ps(s),
                    _mm256_set1_epi32(corr),
                );
                for p in 0..P {
                    for h in 0..2 {
                        // SAFETY: the half's 8 scales (minimums) are in the
                        // block: halves, or floats when widened.
                        let (dw, mw) = unsafe {
                            if wide {
                                (
                                    _mm256_loadu_ps(base[p].add(so + 32 * h).cast()),
                                    _mm256_loadu_ps(base[p].add(mo + 32 * h).cast()),
                                )
                            } else {
                                (
                                    _mm256_cvtph_ps(_mm_loadu_si128(
                                        base[p].add(so + 16 * h).cast(),
                                    )),
                                    _mm256_cvtph_ps(_mm_loadu_si128(
                                        base[p].add(mo + 16 * h).cast(),
                                    )),
                                )
                            }
                        };
                        let i = _mm256_madd_epi16(s16[p][h][c], ones);
                        let i = if q4_1 { i } else { _mm256_sub_epi32(i, corr) };
                        let f = _mm256_cvtepi32_ps(i);
                        let mut x = _mm256_fmadd_ps(_mm256_mul_ps(dw, da), f, acc[p][h][c]);
                        if q4_1 {
                            x = _mm256_fmadd_ps(mw, sa, x);
                        }
                        acc[p][h][c] = x;
                    }
                }
            }
        }
        for (accp, dstp) in acc.iter().zip(&dst) {
            for (c, &(ptr, len)) in dstp.iter().enumerate() {
                for h in 0..2 {
                    let n = len.saturating_sub(8 * h).min(8);
                    // SAFETY: `ptr` has room for `len` floats (contract), of
                    // which these are 8h..8h + n; `o` holds 8.
                    unsafe {
                        if n == 8 {
                            _mm256_storeu_ps(ptr.add(8 * h), accp[h][c]);
                        } else {
                            let mut o = [0f32; 8];
                            _mm256_storeu_ps(o.as_mut_ptr(), accp[h][c]);
                            std::ptr::copy_nonoverlapping(o.as_ptr(), ptr.add(8 * h), n);
                        }
                    }
                }
            }
        }
    }

    /// The AVX2 kernels for Q8_0 panels.
    pub(crate) struct YmmQ8;

    impl Tile for YmmQ8 {
        #[inline(always)]
        unsafe fn tile<const T: u8, const P: usize, const C: usize>(
            panels: [&[u8]; P],
            nb: usize,
            a: [&QCol<'_>; C],
            dst: [[(*mut f32, usize); C]; P],
        ) {
            // SAFETY: forwarded contract.
            unsafe {
                if C == 1 {
                    for (panel, d) in panels.into_iter().zip(dst) {
                        ymm_gemv::<T>(panel, nb, a[0], d[0]);
                    }
                } else {
                    ymm_q8::<P, C>(panels, nb, a, dst);
                }
            }
        }
    }

    /// Q8_0 with `vpmaddubsw`, which multiplies unsigned by signed bytes:
    /// the weights' magnitudes by the activations carrying the weights'
    /// signs (`|w| <= 128`, `|a| <= 127`: a pair sums within i16), each
    /// chunk's pairs widened by `vpmaddwd`. The halves of each panel (rows
    /// 0..8 and 8..16) are computed one after the other, so a 16-register
    /// file holds a 1 × 4 tile. (Splitting the bytes into nibbles, whose
    /// 16-bit sums are exact over a block, takes as many multiplies and
    /// measured slower: docs/benchmarks.md.)
    #[allow(clippy::needless_range_loop)]
    #[inline(always)]
    unsafe fn ymm_q8<const P: usize, const C: usize>(
        panels: [&[u8]; P],
        nb: usize,
        a: [&QCol<'_>; C],
        dst: [[(*mut f32, usize); C]; P],
    ) {
        let ones = _mm256_set1_epi16(1);
        let flip = _mm256_set1_epi8(-128);
        for h in 0..2 {
            let mut acc = [[_mm256_setzero_ps(); C]; P];
            for b in 0..nb {
                // Block b lies inside the panel (contract).
                let (so, _, qo) = block_offsets(T_Q8_0, b);
                for p in 0..P {
                    let base = panels[p].as_ptr();
                    // SAFETY: the 8 scales of half h are in the block.
                    let dw =
                        unsafe { _mm256_cvtph_ps(_mm_loadu_si128(base.add(so + 16 * h).cast())) };
                    let mut isum = [_mm256_setzero_si256(); C];
                    for v in 0..8 {
                        // SAFETY: the half's 32 bytes of chunk v are in the block.
                        let raw =
                            unsafe { _mm256_loadu_si256(base.add(qo + 64 * v + 32 * h).cast()) };
                        let w = _mm256_xor_si256(raw, flip);
                        let wabs = _mm256_abs_epi8(w);
                        for c in 0..C {
                            // SAFETY: b < nb, v < 8.
                            let av = _mm256_set1_epi32(unsafe { act_dword(a[c], b, v) });
                            let pr = _mm256_maddubs_epi16(wabs, _mm256_sign_epi8(av, w));
                            isum[c] = _mm256_add_epi32(isum[c], _mm256_madd_epi16(pr, ones));
                        }
                    }
                    for c in 0..C {
                        // SAFETY: b < nb. The sums are of the signed weights:
                        // no correction.
                        let d = unsafe { *a[c].d.get_unchecked(b) };
                        let f = _mm256_cvtepi32_ps(isum[c]);
                        let dd = _mm256_mul_ps(dw, _mm256_set1_ps(d));
                        acc[p][c] = _mm256_fmadd_ps(dd, f, acc[p][c]);
                    }
                }
            }
            // Rows 8h..8h + 8 of each panel, as far as it has them.
            for (accp, dstp) in acc.iter().zip(&dst) {
                for (&x, &(ptr, len)) in accp.iter().zip(dstp) {
                    let n = len.saturating_sub(8 * h).min(8);
                    let mut o = [0f32; 8];
                    // SAFETY: `o` holds 8 floats; `ptr` has room for `len`
                    // floats (contract), of which these are 8h..8h + n.
                    unsafe {
                        _mm256_storeu_ps(o.as_mut_ptr(), x);
                        std::ptr::copy_nonoverlapping(o.as_ptr(), ptr.add(8 * h), n);
                    }
                }
            }
        }
    }

    /// Bytes ahead of its loads that [`ymm_gemv`] prefetches: two lines
    /// ahead measured a few per cent faster than the hardware prefetchers
    /// alone on Q8_0 and Q4_0 (the same on Q4_1); 512 bytes or more ahead
    /// measured slower.
    const GEMV_AHEAD: usize = 128;

    /// One column (decode) of one packed Q4_0, Q4_1 or Q8_0 panel. The
    /// product reads each weight once, so it is bound by memory. The panels
    /// of a matrix are contiguous, so computing them one after the other
    /// reads one sequential stream, which the hardware prefetchers follow
    /// best: four panels side by side (four streams, as the batched tiles
    /// read them) measured a third slower. Both halves of the panel are
    /// computed in one pass over its blocks (the batched Q8_0 kernel walks
    /// them twice), each line prefetched [`GEMV_AHEAD`] bytes ahead. The
    /// integer sums are those of [`ymm_q4`] (i16 nibble products, exact over
    /// a block) and [`ymm_q8`] (the sign trick), the float steps the
    /// contract's.
    #[allow(clippy::needless_range_loop)]
    #[inline(always)]
    unsafe fn ymm_gemv<const T: u8>(panel: &[u8], nb: usize, a: &QCol<'_>, dst: (*mut f32, usize)) {
        let q4_1 = T == T_Q4_1;
        let m4 = _mm256_set1_epi8(0x0f);
        let ones = _mm256_set1_epi16(1);
        let flip = _mm256_set1_epi8(-128);
        let mut acc = [_mm256_setzero_ps(); 2];
        let base = panel.as_ptr();
        for b in 0..nb {
            // Block b lies inside the panel (contract).
            let (so, mo, qo) = block_offsets(T, b);
            let (s0, s1) = quant::block_span(type_of(T), b);
            for l in (s0..s1).step_by(64) {
                // A prefetch never faults, wherever it points.
                _mm_prefetch::<_MM_HINT_T0>(base.wrapping_add(GEMV_AHEAD + l).cast());
            }
            // A macro, not a closure: a closure does not inherit the target
            // features, and the load would stay a call.
            macro_rules! chunk {
                ($v:expr, $h:expr) => {
                    // SAFETY: the half's 32 bytes of every chunk are in the block.
                    unsafe { _mm256_loadu_si256(base.add(qo + 64 * $v + 32 * $h).cast()) }
                };
            }
            // SAFETY: b < nb.
            let (d, s, corr) = unsafe { act_block::<T>(a, b) };
            let (da, sa, corr) = (
                _mm256_set1_ps(d),
                _mm256_set1_ps(s),
                _mm256_set1_epi32(corr),
            );
            for h in 0..2 {
                let mut isum = _mm256_setzero_si256();
                if T == T_Q8_0 {
                    for v in 0..8 {
                        let w = _mm256_xor_si256(chunk!(v, h), flip);
                        // SAFETY: b < nb, v < 8.
                        let av = _mm256_set1_epi32(unsafe { act_dword(a, b, v) });
                        let pr = _mm256_maddubs_epi16(_mm256_abs_epi8(w), _mm256_sign_epi8(av, w));
                        isum = _mm256_add_epi32(isum, _mm256_madd_epi16(pr, ones));
                    }
                } else {
                    let mut s16 = _mm256_setzero_si256();
                    for v in 0..4 {
                        let raw = chunk!(v, h);
                        let lo = _mm256_and_si256(raw, m4);
                        let hi = _mm256_and_si256(_mm256_srli_epi16(raw, 4), m4);
                        // SAFETY: b < nb, v + 4 < 8.
                        let (alo, ahi) = unsafe {
                            (
                                _mm256_set1_epi32(act_dword(a, b, v)),
                                _mm256_set1_epi32(act_dword(a, b, v + 4)),
                            )
                        };
                        let pr = _mm256_add_epi16(
                            _mm256_maddubs_epi16(lo, alo),
                            _mm256_maddubs_epi16(hi, ahi),
                        );
                        s16 = _mm256_add_epi16(s16, pr);
                    }
                    isum = _mm256_madd_epi16(s16, ones);
                    if !q4_1 {
                        isum = _mm256_sub_epi32(isum, corr);
                    }
                }
                // SAFETY: the half's 8 scales (and minimums) are in the block.
                let dw = unsafe { _mm256_cvtph_ps(_mm_loadu_si128(base.add(so + 16 * h).cast())) };
                let f = _mm256_cvtepi32_ps(isum);
                acc[h] = _mm256_fmadd_ps(_mm256_mul_ps(dw, da), f, acc[h]);
                if q4_1 {
                    // SAFETY: as above.
                    let mw =
                        unsafe { _mm256_cvtph_ps(_mm_loadu_si128(base.add(mo + 16 * h).cast())) };
                    acc[h] = _mm256_fmadd_ps(mw, sa, acc[h]);
                }
            }
        }
        let (ptr, len) = dst;
        for (h, x) in acc.into_iter().enumerate() {
            let n = len.saturating_sub(8 * h).min(8);
            // SAFETY: `ptr` has room for `len` floats (contract), of which
            // these are 8h..8h + n; `o` holds 8.
            unsafe {
                if n == 8 {
                    _mm256_storeu_ps(ptr.add(8 * h), x);
                } else {
                    let mut o = [0f32; 8];
                    _mm256_storeu_ps(o.as_mut_ptr(), x);
                    std::ptr::copy_nonoverlapping(o.as_ptr(), ptr.add(8 * h), n);
                }
            }
        }
    }

    /// [`super::matmul_panels`] on 256-bit registers with AVX-VNNI (`vpdpbusd`).
    ///
    /// # Safety
    /// [`available_avxvnni`] holds, and the checks of `matmul_panels` passed.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma,f16c,avxvnni")]
    pub(super) unsafe fn panels_avxvnni(
        ty: GgmlType,
        src: Panels<'_>,
        nb: usize,
        panels: (usize, usize),
        cols: &[QCol<'_>],
        c0: usize,
        dest: &Dest<'_, '_>,
    ) {
        // SAFETY: forwarded contract.
        unsafe { drive_ty!(YmmVnni, 1, 2, 1, ty, src, nb, panels, cols, c0, dest) }
    }

    /// The AVX-VNNI kernels.
    pub(crate) struct YmmVnni;

    impl Tile for YmmVnni {
        #[inline(always)]
        unsafe fn tile<const T: u8, const P: usize, const C: usize>(
            panels: [&[u8]; P],
            nb: usize,
            a: [&QCol<'_>; C],
            dst: [[(*mut f32, usize); C]; P],
        ) {
            // SAFETY: forwarded contract.
            unsafe { ymm_vnni::<T, P, C>(panels, nb, a, dst) }
        }
    }

    /// `acc` plus the four-byte dot products of unsigned `w` and signed `x`
    /// per 32-bit lane.
    ///
    /// # Safety
    /// The CPU has AVX-VNNI.
    #[inline(always)]
    unsafe fn dp(acc: __m256i, w: __m256i, x: __m256i) -> __m256i {
        // SAFETY: only reached from `panels_avxvnni`, compiled with AVX-VNNI.
        unsafe { _mm256_dpbusd_avx_epi32(acc, w, x) }
    }

    /// The two halves of each panel (rows 0..8 and 8..16) are computed one
    /// after the other.
    #[allow(clippy::needless_range_loop)]
    #[inline(always)]
    unsafe fn ymm_vnni<const T: u8, const P: usize, const C: usize>(
        panels: [&[u8]; P],
        nb: usize,
        a: [&QCol<'_>; C],
        dst: [[(*mut f32, usize); C]; P],
    ) {
        let m4 = _mm256_set1_epi8(0x0f);
        for h in 0..2 {
            let mut acc = [[_mm256_setzero_ps(); C]; P];
            for b in 0..nb {
                // Block b lies inside the panel (contract).
                let (so, mo, qo) = block_offsets(T, b);
                for p in 0..P {
                    let base = panels[p].as_ptr();
                    // SAFETY: 8 scales (minimums) of half h are in the block.
                    let dw =
                        unsafe { _mm256_cvtph_ps(_mm_loadu_si128(base.add(so + 16 * h).cast())) };
                    let mw = if T == T_Q4_1 {
                        // SAFETY: as above.
                        unsafe { _mm256_cvtph_ps(_mm_loadu_si128(base.add(mo + 16 * h).cast())) }
                    } else {
                        _mm256_setzero_ps()
                    };
                    let mut isum = [_mm256_setzero_si256(); C];
                    // A macro, not a closure: a closure does not inherit the
                    // target features, and the load would stay a call.
                    macro_rules! chunk {
                        ($v:expr) => {
                            // SAFETY: the half's 32 bytes of every chunk are in the block.
                            unsafe { _mm256_loadu_si256(base.add(qo + 64 * $v + 32 * h).cast()) }
                        };
                    }
                    if T == T_Q8_0 {
                        for v in 0..8 {
                            let raw = chunk!(v);
                            for c in 0..C {
                                // SAFETY: b < nb, v < 8.
                                let av = _mm256_set1_epi32(unsafe { act_dword(a[c], b, v) });
                                // SAFETY: AVX-VNNI (contract).
                                isum[c] = unsafe { dp(isum[c], raw, av) };
                            }
                        }
                    } else {
                        for v in 0..4 {
                            let raw = chunk!(v);
                            let lo = _mm256_and_si256(raw, m4);
                            let hi = _mm256_and_si256(_mm256_srli_epi16(raw, 4), m4);
                            for c in 0..C {
                                // SAFETY: b < nb, v + 4 < 8.
                                let (alo, ahi) = unsafe {
                                    (
                                        _mm256_set1_epi32(act_dword(a[c], b, v)),
                                        _mm256_set1_epi32(act_dword(a[c], b, v + 4)),
                                    )
                                };
                                // SAFETY: AVX-VNNI (contract).
                                isum[c] = unsafe { dp(dp(isum[c], lo, alo), hi, ahi) };
                            }
                        }
                    }
                    for c in 0..C {
                        // SAFETY: b < nb.
                        let (d, s, corr) = unsafe { act_block::<T>(a[c], b) };
                        let i = if T == T_Q4_1 {
                            isum[c]
                        } else {
                            _mm256_sub_epi32(isum[c], _mm256_set1_epi32(corr))
                        };
                        let f = _mm256_cvtepi32_ps(i);
                        let dd = _mm256_mul_ps(dw, _mm256_set1_ps(d));
                        let mut x = _mm256_fmadd_ps(dd, f, acc[p][c]);
                        if T == T_Q4_1 {
                            x = _mm256_fmadd_ps(mw, _mm256_set1_ps(s), x);
                        }
                        acc[p][c] = x;
                    }
                }
            }
            // Rows 8h..8h + 8 of each panel, as far as it has them.
            for (accp, dstp) in acc.iter().zip(&dst) {
                for (&x, &(ptr, len)) in accp.iter().zip(dstp) {
                    let n = len.saturating_sub(8 * h).min(8);
                    let mut o = [0f32; 8];
                    // SAFETY: `o` holds 8 floats; `ptr` has room for `len`
                    // floats (contract), of which these are 8h..8h + n.
                    unsafe {
                        _mm256_storeu_ps(o.as_mut_ptr(), x);
                        std::ptr::copy_nonoverlapping(o.as_ptr(), ptr.add(8 * h), n);
                    }
                }
            }
        }
    }

    const _: () = assert!(super::QK == 32 && PANEL == 16);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::{dequantize_row, dot_f32, quantize_row, quantize_weights};

    fn data(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|i| {
                s = s
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                let v = ((s >> 33) as f32 / (1u64 << 31) as f32) * 2.0 - 1.0;
                // A few outliers, as in real activations.
                if i % 97 == 0 {
                    v * 40.0
                } else {
                    v
                }
            })
            .collect()
    }

    struct Col {
        qs: Vec<[i8; 32]>,
        d: Vec<f32>,
        s: Vec<f32>,
        qsum: Vec<i32>,
    }
    impl Col {
        fn new(x: &[f32]) -> Self {
            let nb = x.len() / QK;
            let mut c = Col {
                qs: vec![[0; 32]; nb],
                d: vec![0.0; nb],
                s: vec![0.0; nb],
                qsum: vec![0; nb],
            };
            quantize_row(x, &mut c.qs, &mut c.d, &mut c.s, &mut c.qsum);
            c
        }
        fn q(&self) -> QCol<'_> {
            QCol {
                qs: &self.qs,
                d: &self.d,
                s: &self.s,
                qsum: &self.qsum,
            }
        }
    }

    /// The arithmetic contract evaluated on the file's block layout (the
    /// definition before repacking).
    fn reference(ty: GgmlType, raw: &[u8], x: &Col) -> f32 {
        let bs = ty.block_bytes();
        let mut acc = 0f32;
        for (b, blk) in raw.chunks_exact(bs).enumerate() {
            let a = &x.qs[b];
            let mut isum = 0i32;
            match ty {
                GgmlType::Q8_0 => {
                    for j in 0..32 {
                        isum += i32::from(blk[2 + j] as i8) * i32::from(a[j]);
                    }
                }
                _ => {
                    let (h, off) = if ty == GgmlType::Q4_1 { (4, 0) } else { (2, 8) };
                    for j in 0..16 {
                        isum += (i32::from(blk[h + j] & 15) - off) * i32::from(a[j]);
                        isum += (i32::from(blk[h + j] >> 4) - off) * i32::from(a[j + 16]);
                    }
                }
            }
            acc = (quant::rd_f16(blk, 0) * x.d[b]).mul_add(isum as f32, acc);
            if ty == GgmlType::Q4_1 {
                acc = quant::rd_f16(blk, 2).mul_add(x.s[b], acc);
            }
        }
        acc
    }

    /// All rows × columns through one family, the panels cut at `pcut` and
    /// the columns at `ccut` (as workers and column tiles cut them), from
    /// the packed or the widened panels.
    #[allow(clippy::too_many_arguments)]
    fn run(
        kind: KernelKind,
        ty: GgmlType,
        packed: &[u8],
        rows: usize,
        nb: usize,
        xs: &[Col],
        (pcut, ccut): (usize, usize),
        widened: bool,
    ) -> Vec<Vec<f32>> {
        let cols: Vec<QCol<'_>> = xs.iter().map(Col::q).collect();
        let n = cols.len();
        let panels = rows.div_ceil(PANEL);
        let (pcut, ccut) = (pcut.min(panels), ccut.min(n));
        let mut out = vec![f32::NAN; rows * n];
        {
            let so = SharedOut::new(&mut out);
            let dest = Dest { out: &so, rows };
            let mut wide = Widened::default();
            for ps in [(0, pcut), (pcut, panels)] {
                let src = if widened {
                    wide.fill(kind, ty, packed, nb, ps);
                    Panels::Wide(&wide)
                } else {
                    Panels::Packed(packed)
                };
                for (c0, c1) in [(0, ccut), (ccut, n)] {
                    matmul_panels(kind, ty, src, nb, ps, &cols[c0..c1], c0, &dest);
                }
            }
        }
        (0..rows)
            .map(|r| (0..n).map(|c| out[c * rows + r]).collect())
            .collect()
    }

    fn check_type(ty: GgmlType, rows: usize, cols: usize, extreme: bool) {
        let nb = cols / 32;
        let mut w = quantize_weights(ty, &data(rows * cols, 1));
        let row_bytes = w.len() / rows;
        let mut xs: Vec<Col> = (0..7).map(|c| Col::new(&data(cols, 10 + c))).collect();
        if extreme {
            // Saturation limits: largest nibbles, Q8_0 bytes -128 and 127,
            // activations all +-127.
            let bs = ty.block_bytes();
            for (i, blk) in w.chunks_exact_mut(bs).enumerate() {
                let h = bs - if ty == GgmlType::Q8_0 { 32 } else { 16 };
                for (j, q) in blk[h..].iter_mut().enumerate() {
                    *q = match ty {
                        GgmlType::Q8_0 if (i + j) % 3 == 0 => 0x80,
                        GgmlType::Q8_0 => 0x7f,
                        _ if i % 2 == 0 => 0xff,
                        _ => 0x00,
                    };
                }
            }
            let pos: Vec<f32> = (0..cols)
                .map(|j| if j % 5 == 0 { -1.0 } else { 1.0 })
                .collect();
            let neg: Vec<f32> = pos.iter().map(|v| -v).collect();
            xs[0] = Col::new(&pos);
            xs[1] = Col::new(&neg);
            xs[2] = Col::new(&vec![1.0; cols]);
            xs[3] = Col::new(&vec![-1.0; cols]);
        }
        let packed = quant::pack_matrix(ty, &w, rows, nb);
        let want: Vec<Vec<f32>> = (0..rows)
            .map(|r| {
                let raw = &w[r * row_bytes..(r + 1) * row_bytes];
                xs.iter().map(|x| reference(ty, raw, x)).collect()
            })
            .collect();
        let bits = |m: &Vec<Vec<f32>>| -> Vec<Vec<u32>> {
            m.iter()
                .map(|r| r.iter().map(|v| v.to_bits()).collect())
                .collect()
        };
        for kind in KernelKind::supported() {
            let what = format!("{ty:?} {rows}x{cols} extreme {extreme} {kind:?}");
            // Cuts that leave single columns (decode tiles), odd panel
            // counts (tile tails) and column tails.
            for cuts in [(0, 0), (1, 1), (3, 6), (2, 5), (5, 3), (1, 2)] {
                for widened in [false, true] {
                    if widened && !widens(kind, ty) {
                        continue;
                    }
                    let got = run(kind, ty, &packed, rows, nb, &xs, cuts, widened);
                    assert_eq!(bits(&want), bits(&got), "{what} cuts {cuts:?} {widened}");
                }
            }
        }
        if !extreme {
            // And close to the float reference.
            let raw = &w[..row_bytes];
            let mut wd = vec![0f32; cols];
            dequantize_row(ty, raw, &mut wd);
            let x0 = data(cols, 10);
            let exact = dot_f32(&wd, &x0);
            let scale: f32 = wd.iter().zip(&x0).map(|(a, b)| (a * b).abs()).sum();
            assert!(
                (exact - want[0][0]).abs() < 0.05 * scale,
                "{exact} vs {}",
                want[0][0]
            );
        }
    }

    #[test]
    fn simd_and_scalar_kernels_are_bit_identical() {
        eprintln!("kernel families: {:?}", KernelKind::supported());
        for ty in [GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q8_0] {
            for (rows, cols) in [
                (16, 32),
                (37, 256),
                (64, 576),
                (20, 1536),
                (9, 96),
                (50, 160),
            ] {
                check_type(ty, rows, cols, false);
                check_type(ty, rows, cols, true);
            }
        }
    }

    /// Single-column (decode) throughput of each family over matrices
    /// larger than the last-level cache, beside a plain read of the same
    /// bytes: `cargo test --workspace --lib -- --ignored --nocapture
    /// gemv_throughput` (`GEMV_REPS` sets the repetitions). Not run in CI.
    #[test]
    #[ignore]
    fn gemv_throughput() {
        let reps: usize = std::env::var("GEMV_REPS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(15)
            .max(1);
        let (cols, nb) = (576, 18);
        // Rows per call as in decode: a layer's matrix, the whole head.
        for (ty, rows, call) in [
            (GgmlType::Q4_1, 147_456, 96),
            (GgmlType::Q4_0, 147_456, 96),
            (GgmlType::Q8_0, 65_536, 4096),
        ] {
            let part = quantize_weights(ty, &data(1536 * cols, 1));
            let n = part.len() * rows / 1536;
            let raw: Vec<u8> = part.iter().copied().cycle().take(n).collect();
            let packed = quant::pack_matrix(ty, &raw, rows, nb);
            let x = Col::new(&data(cols, 10));
            let mut out = vec![0f32; rows];
            let gbs = |run: &mut dyn FnMut()| {
                let mut t: Vec<f64> = (0..reps)
                    .map(|_| {
                        let t0 = std::time::Instant::now();
                        run();
                        t0.elapsed().as_secs_f64()
                    })
                    .collect();
                t.sort_by(f64::total_cmp);
                let g = |s: f64| packed.len() as f64 / s / 1e9;
                format!("{:.1} GB/s (best {:.1})", g(t[t.len() / 2]), g(t[0]))
            };
            let read = gbs(&mut || {
                let words = packed.chunks_exact(8);
                let x = words.fold(0u64, |a, c| {
                    a ^ u64::from_le_bytes(c.try_into().unwrap_or_default())
                });
                std::hint::black_box(x);
            });
            eprintln!("{ty:?} read: {read}");
            for kind in KernelKind::supported().into_iter().skip(1) {
                let so = SharedOut::new(&mut out);
                let dest = Dest { out: &so, rows };
                let panels = rows / PANEL;
                let got = gbs(&mut || {
                    for p in (0..panels).step_by(call) {
                        let ps = (p, (p + call).min(panels));
                        let src = Panels::Packed(&packed);
                        matmul_panels(kind, ty, src, nb, ps, &[x.q()], 0, &dest);
                    }
                });
                eprintln!("{ty:?} {kind:?}: {got}");
            }
        }
    }

    #[test]
    fn simd_quantisation_matches_the_scalar_definition() {
        let mut x = data(32 * 40, 5);
        // Special values: NaN, infinities, signed zeros, ties, tiny values.
        let special = [
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            -0.0,
            0.0,
            0.5,
            -1.5,
            1e-30,
            -3e38,
            f32::MIN_POSITIVE / 4.0,
        ];
        for (i, v) in special.iter().enumerate() {
            x[37 * i + 3] = *v;
            x[32 * 30 + i] = *v * 1e-3;
        }
        for v in &mut x[32 * 35..32 * 36] {
            *v = 0.0;
        }
        for v in &mut x[32 * 36..32 * 37] {
            *v = -0.0;
        }
        let nb = x.len() / QK;
        let mut want = Col {
            qs: vec![[0; 32]; nb],
            d: vec![0.0; nb],
            s: vec![0.0; nb],
            qsum: vec![0; nb],
        };
        quantize_row(&x, &mut want.qs, &mut want.d, &mut want.s, &mut want.qsum);
        #[cfg(target_arch = "x86_64")]
        if KernelKind::supported().contains(&KernelKind::Vnni512) {
            let mut got = Col {
                qs: vec![[9; 32]; nb],
                d: vec![9.0; nb],
                s: vec![9.0; nb],
                qsum: vec![9; nb],
            };
            // SAFETY: the CPU has AVX-512 (checked above).
            unsafe { quantize_row_zmm(&x, &mut got.qs, &mut got.d, &mut got.s, &mut got.qsum) };
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(want.qs, got.qs);
            assert_eq!(want.qsum, got.qsum);
            assert_eq!(bits(&want.d), bits(&got.d));
            assert_eq!(bits(&want.s), bits(&got.s));
        }
    }

    #[test]
    fn dequantize_round_trips_approximately() {
        let x = data(512, 3);
        for ty in [
            GgmlType::F32,
            GgmlType::F16,
            GgmlType::Q4_0,
            GgmlType::Q4_1,
            GgmlType::Q8_0,
            GgmlType::Q4K,
        ] {
            let b = quantize_weights(ty, &x);
            assert_eq!(b.len(), 512 / ty.block_elems() * ty.block_bytes());
            let mut y = vec![0f32; 512];
            dequantize_row(ty, &b, &mut y);
            let err: f32 = x.iter().zip(&y).map(|(a, b)| (a - b).abs()).sum::<f32>() / 512.0;
            assert!(err < 1.5, "{ty:?} mean abs error {err}");
            if ty == GgmlType::F32 {
                assert_eq!(x, y);
            }
        }
    }
}
