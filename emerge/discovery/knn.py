"""Exact cosine k-nearest neighbours by blocked matrix products.

Labelling places every dense span by its nearest fit spans, and UMAP's fit needs the kNN graph
of the fit sample: both are (queries x keys) cosine products with a top-k. Done here with torch
(all cores, `topk` instead of numpy's `argpartition`, which was 40x slower on a 4096 x 10k
block) and, on CPUs with native bfloat16, a bf16 product (faster; see BENCHMARKS.md). With `refine=True`
(the fit's kNN graph) the bf16 product only shortlists k + 8 candidates whose cosines are
recomputed in float32: a neighbour can only be missed when its cosine is within bf16 rounding
(~4e-3) of the k-th one's. With `refine=False` (placing millions of spans) the bf16 cosines
are used as they are: half the time again, and the placement is a weighted mean over the
neighbours, which such rounding hardly moves.
"""

from __future__ import annotations

import numpy as np

from emerge.vectors import l2_normalise

_MARGIN = 8  # extra bf16 shortlist candidates per query


class CosineIndex:
    """Brute-force cosine index over `keys` (rows need not be unit length)."""

    def __init__(self, keys: np.ndarray, shortlist_in_bf16: bool | None = None):
        import torch

        from emerge.encoder import native_bf16_cpu

        self.keys = torch.from_numpy(np.ascontiguousarray(l2_normalise(keys)))
        self.keys_t = self.keys.T.contiguous()
        self.shortlist_in_bf16 = native_bf16_cpu() if shortlist_in_bf16 is None else shortlist_in_bf16
        self._keys_t_bf16 = self.keys_t.bfloat16() if self.shortlist_in_bf16 else None

    def __len__(self) -> int:
        return int(self.keys.shape[0])

    def search(self, queries: np.ndarray, k: int, block: int = 2048, self_first: bool = False,
               refine: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """(indices, cosines), each (len(queries), k), best first.

        `self_first=True` when `queries` are the keys themselves (a kNN graph): row i's first
        neighbour is i even when exact duplicates tie with it, as UMAP expects.
        """
        import torch

        k = min(k, len(self))
        n = len(queries)
        idx_out = np.empty((n, k), np.int64)
        sim_out = np.empty((n, k), np.float32)
        bf16 = self._keys_t_bf16 is not None and (not refine or k + _MARGIN < len(self))
        with torch.inference_mode():
            for lo in range(0, n, block):
                q = torch.from_numpy(np.ascontiguousarray(l2_normalise(queries[lo:lo + block])))
                rows = torch.arange(len(q))
                # cosines to every key: bf16 where it pays, else float32 (exact)
                sims = q.bfloat16() @ self._keys_t_bf16 if bf16 else q @ self.keys_t
                if self_first:
                    sims[rows, rows + lo] = 2.0
                if bf16 and refine:  # recompute a k + _MARGIN shortlist in float32
                    cand = torch.topk(sims, k + _MARGIN, dim=1).indices
                    exact = torch.bmm(self.keys[cand], q[:, :, None])[:, :, 0]
                    if self_first:
                        exact[cand == (rows + lo)[:, None]] = 2.0
                    sim, pos = torch.topk(exact, k, dim=1)
                    idx = torch.gather(cand, 1, pos)
                else:
                    sim, idx = torch.topk(sims, k, dim=1)
                    sim = sim.float()
                if self_first:
                    sim[:, 0] = 1.0
                idx_out[lo:lo + len(q)] = idx.numpy()
                sim_out[lo:lo + len(q)] = sim.clamp(-1.0, 1.0).numpy()
        return idx_out, sim_out


def knn_graph(vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(indices, cosine distances) of each row's k nearest rows, itself first: UMAP's
    `precomputed_knn`, exact, in seconds for the <= 10k-span fit sample (UMAP's own NN-descent
    took ~26 s there, most of it numba compilation in every new process)."""
    idx, sim = CosineIndex(vectors).search(vectors, k, self_first=True)
    return idx, np.maximum(1.0 - sim, 0.0).astype(np.float32)
