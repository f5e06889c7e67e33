"""Attention kernels behind one interface (see :mod:`analogattn.attention.base`)."""
from .base import AttentionKernel, IdealAttention, Mask

__all__ = ["AttentionKernel", "IdealAttention", "Mask"]
