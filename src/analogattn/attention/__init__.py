"""Attention kernels behind one interface (see :mod:`analogattn.attention.base`)."""
from .base import AttentionKernel, IdealAttention, Mask
from .cache import KVCache

__all__ = ["AttentionKernel", "IdealAttention", "Mask", "KVCache"]
