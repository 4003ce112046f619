//! ggml-alloc's dynamic allocator (`ggml_dyn_tallocr` in ggml-alloc.c).

use super::*;

/// Allocation size of a weight copied into a backend's compute buffer
/// (op offload): CUDA row padding included.
pub(super) fn weight_copy_size(w: &Weight, kind: Option<BackendKind>) -> u64 {
    let mut size = w.nbytes;
    if let Some(rp) = kind.and_then(|k| k.quant_row_padding()) {
        if w.ty.is_quantized() && w.dims[0] % rp != 0 {
            size += w.ty.row_size(rp - w.dims[0] % rp).unwrap_or(0);
        }
    }
    size
}

/// ggml-alloc's dynamic allocator (`ggml_dyn_tallocr`): best fit among the
/// free blocks except the last, else the (unbounded) last block; freed
/// blocks merge with their neighbours.
pub(super) struct DynAlloc {
    pub(super) align: u64,
    pub(super) free: Vec<(u64, u64)>,
    pub(super) max: u64,
}

impl DynAlloc {
    pub(super) fn new(align: u64) -> DynAlloc {
        DynAlloc {
            align,
            free: vec![(0, u64::MAX / 2)],
            max: 0,
        }
    }

    pub(super) fn alloc(&mut self, size: u64) -> u64 {
        let size = pad(size, self.align);
        let n = self.free.len();
        let mut best: Option<usize> = None;
        let mut best_size = u64::MAX;
        for i in 0..n - 1 {
            let s = self.free[i].1;
            if s >= size && s <= best_size {
                best = Some(i);
                best_size = s;
            }
        }
        let i = best.unwrap_or(n - 1);
        let off = self.free[i].0;
        self.free[i].0 += size;
        self.free[i].1 -= size;
        if self.free[i].1 == 0 && i != n - 1 {
            self.free.remove(i);
        }
        self.max = self.max.max(off + size);
        off
    }

    pub(super) fn release(&mut self, off: u64, size: u64) {
        // A zero-size free (a 0-element tensor, e.g. build_rs's gather of
        // the extra states in a reserve ubatch) is not a no-op in
        // ggml_dyn_tallocr_free_bytes: with no block ending or starting at
        // its offset it inserts an empty block, which later stops two
        // neighbours from merging (only index neighbours are merged).
        let size = pad(size, self.align);
        for i in 0..self.free.len() {
            let (bo, bs) = self.free[i];
            if bo + bs == off {
                self.free[i].1 += size;
                if i + 1 < self.free.len() && self.free[i].0 + self.free[i].1 == self.free[i + 1].0
                {
                    self.free[i].1 += self.free[i + 1].1;
                    self.free.remove(i + 1);
                }
                return;
            }
            if off + size == bo {
                self.free[i].0 = off;
                self.free[i].1 += size;
                if i > 0 && self.free[i - 1].0 + self.free[i - 1].1 == off {
                    self.free[i - 1].1 += self.free[i].1;
                    self.free.remove(i);
                }
                return;
            }
        }
        let pos = self
            .free
            .iter()
            .position(|&(bo, _)| bo >= off)
            .unwrap_or(self.free.len());
        self.free.insert(pos, (off, size));
    }
}
