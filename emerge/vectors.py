"""Unit vectors: every cosine in Emerge is a dot product of rows normalised here, so one rule
(float32, a 1e-12 floor for all-zero rows) holds everywhere."""

from __future__ import annotations

import numpy as np


def l2_normalise(x: np.ndarray) -> np.ndarray:
    """`x` (one vector or a matrix of row vectors) scaled to unit length, as float32."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 1:
        return x / max(float(np.sqrt(x @ x)), 1e-12)
    norms = np.sqrt(np.einsum("ij,ij->i", x, x))[:, None]
    return x / np.maximum(norms, 1e-12)
