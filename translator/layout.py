"""Pure NCHW -> NHWC weight transforms: transposes and permutations, never a reshape that reorders."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the emitters import this module; translating without weights never loads numpy
    import numpy as np


@dataclass(frozen=True)
class FortranArray:
    """An array of ``shape`` in Fortran order whose bytes are ``view`` read in C order.

    Lets a permuted InnerProduct kernel be written straight from the caffemodel's memory map
    without materializing a transposed copy.
    """

    view: np.ndarray
    shape: tuple[int, ...]

    def materialize(self) -> np.ndarray:
        return self.view.copy().reshape(self.shape[::-1]).T


def conv_kernel(weight: np.ndarray) -> np.ndarray:
    """Caffe (O, I/g, kh, kw) -> Keras Conv2D (kh, kw, I/g, O)."""
    return weight.transpose(2, 3, 1, 0)


def conv3d_kernel(weight: np.ndarray) -> np.ndarray:
    """C3D (O, I, kd, kh, kw) -> Keras Conv3D (kd, kh, kw, I, O)."""
    return weight.transpose(2, 3, 4, 1, 0)


def depthwise_kernel(weight: np.ndarray, channels: int) -> np.ndarray:
    """Caffe (C*m, 1, kh, kw), output c*m+j from channel c -> Keras DepthwiseConv2D (kh, kw, C, m)."""
    out, _, kh, kw = weight.shape
    return weight.reshape(channels, out // channels, kh, kw).transpose(2, 3, 0, 1)


def deconv_kernel(weight: np.ndarray) -> np.ndarray:
    """Caffe Deconvolution (I, O/g, kh, kw) -> Keras Conv2DTranspose (kh, kw, O/g, I)."""
    return weight.transpose(2, 3, 1, 0)


def dense_kernel(
    weight: np.ndarray, dims: Sequence[int], order: Sequence[int], transpose: bool = False
) -> np.ndarray | FortranArray:
    """Caffe InnerProduct weights -> Keras Dense (K, O).

    ``dims`` is the Caffe shape of the flattened axes and ``order`` the Caffe axis (0-based within
    ``dims``) that Keras' flatten visits at each position; Caffe flattens C,H,W and Keras H,W,C, so
    the rows are permuted accordingly.
    """
    w = weight.T if transpose else weight  # (O, K)
    out = w.shape[0]
    if list(order) == sorted(order):
        return w.T
    blocks = w.reshape(out, *dims).transpose(0, *(1 + a for a in order))
    return FortranArray(blocks, (math.prod(dims), out))


def batchnorm_stats(blobs: Sequence[np.ndarray], index: int) -> np.ndarray:
    """Caffe keeps mean*f and var*f with f in blob 2; divide it out (f == 0 means zero)."""
    import numpy as np

    factor = float(blobs[2].reshape(-1)[0])
    scale = 0.0 if factor == 0 else 1.0 / factor
    return (blobs[index].reshape(-1) * np.float32(scale)).astype(np.float32)


def vector(blob: np.ndarray) -> np.ndarray:
    """A Caffe per-channel blob (any legacy 1x1x1xC form) as a flat vector."""
    return blob.reshape(-1)


def scalar(blob: np.ndarray) -> np.ndarray:
    """A one-element Caffe blob (BatchNorm's scale factor) as a 0-D array."""
    return blob.reshape(())


def group_slice(blob: np.ndarray, group: int, groups: int) -> np.ndarray:
    """The rows of a stacked per-group blob that belong to ``group``."""
    size = blob.shape[0] // groups
    return blob[group * size : (group + 1) * size]


def spread(blob: np.ndarray, order: Sequence[int], shape: Sequence[int]) -> np.ndarray:
    """A blob spanning some Caffe axes as a broadcastable Keras weight.

    ``order`` lists the blob's axes in the order the Keras tensor holds them; ``shape`` is the
    Keras weight's shape: the same sizes in that order, with ones where the weight broadcasts.
    """
    return blob.transpose(tuple(order)).reshape(tuple(shape))


def inner_product_conv_kernel(weight: np.ndarray, channels: int, kernel: Sequence[int], transpose: bool) -> np.ndarray:
    """Caffe InnerProduct (O, C*kh*kw) -> Keras Conv2D (kh, kw, C, O): the same dot product per window.

    Caffe flattens each input in C,H,W order, so each weight row is a (C, kh, kw) filter.
    """
    w = weight.T if transpose else weight
    return conv_kernel(w.reshape(w.shape[0], channels, *kernel))


def dilate_kernel(kernel: np.ndarray, dilation: Sequence[int]) -> np.ndarray:
    """A (kh, kw, ...) kernel with ``dilation - 1`` zero taps between neighbours: the same filter undilated."""
    import numpy as np

    dh, dw = dilation
    kh, kw = kernel.shape[:2]
    out = np.zeros(((kh - 1) * dh + 1, (kw - 1) * dw + 1, *kernel.shape[2:]), kernel.dtype)
    out[::dh, ::dw] = kernel
    return out


def depthwise_deconv_kernel(weight: np.ndarray) -> np.ndarray:
    """Caffe Deconvolution with group == inputs (C, m, kh, kw), output c*m+j -> (kh, kw, C, m)."""
    return weight.transpose(2, 3, 0, 1)


def fold_affine(
    blobs: Sequence[np.ndarray], axis: int, batch_norm: Sequence[np.ndarray] | None, eps: float, scale: Sequence[np.ndarray] | None
) -> list[np.ndarray]:
    """A layer's Caffe weight and bias with the per-output-channel BatchNorm and/or Scale after it folded in.

    BatchNorm gives (y - mean) / sqrt(var + eps) and Scale y * gamma + beta, so the weight's output
    channels (its ``axis``) are multiplied by one factor each and the bias becomes (bias - mean) * factor
    + beta; computed in float64 and rounded once.
    """
    import numpy as np

    weight = blobs[0]
    factor = np.ones(weight.shape[axis])
    shift = blobs[1].reshape(-1).astype(np.float64) if len(blobs) > 1 else np.zeros(weight.shape[axis])
    if batch_norm is not None:
        mean = batchnorm_stats(batch_norm, 0).astype(np.float64)
        inverse = 1.0 / np.sqrt(batchnorm_stats(batch_norm, 1).astype(np.float64) + np.float32(eps))
        factor, shift = factor * inverse, (shift - mean) * inverse
    if scale is not None:
        gamma = scale[0].reshape(-1).astype(np.float64)
        factor, shift = factor * gamma, shift * gamma + (scale[1].reshape(-1) if len(scale) > 1 else 0.0)
    broadcast = [1] * weight.ndim
    broadcast[axis] = -1
    return [(weight * factor.reshape(broadcast)).astype(np.float32), shift.astype(np.float32)]
