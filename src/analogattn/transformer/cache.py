"""The per-layer KV cache now lives with the kernels that own it (:mod:`analogattn.attention.cache`);
this name stays for code that imported it from here."""
from ..attention.cache import KVCache

__all__ = ["KVCache"]
