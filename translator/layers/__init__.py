"""The per-layer emitters, one module per family; importing this package fills the registry."""

from . import (  # noqa: F401  (each family registers its emitters on import)
    activation,
    arith,
    conv,
    conv3d,
    ctc,
    deconv,
    dense,
    detection,
    fork,
    im2col,
    merge,
    norm,
    pooling,
    recurrent,
    reduce,
    reshape,
    ssd,
    upsample,
    yolo,
)
from .registry import REGISTRY, markdown_table, supported_types

__all__ = ["REGISTRY", "markdown_table", "supported_types"]
