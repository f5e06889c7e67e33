"""Greedy and sampled generation with the KV cache (incremental decoding)."""
from __future__ import annotations

import sys

import numpy as np

from ..attention.base import IdealAttention


def generate(model, prompt_ids, max_new_tokens=32, temperature=0.0, top_k=0, seed=0, kernel=None,
             mask=None, stop_at_eos=True, progress: bool = False, quantised_decode: bool = True):
    """Returns the new token ids. temperature 0 = greedy; ``progress``: a bar on stderr.
    ``quantised_decode``: new tokens go through the GGUF file's own quantised blocks (the same
    weights as the float32 ones, fewer bytes; :mod:`.decode_store`) when the model has them; the
    prompt's prefill always uses the float32 weights."""
    kernel = kernel or IdealAttention()
    active = quantised_decode and hasattr(model, "enable_decode_store") and model.enable_decode_store()
    before = getattr(model, "decode_active", False)
    rng = np.random.default_rng(seed)
    caches = model.new_caches(kernel)
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=max_new_tokens, desc="generate", unit="tok", file=sys.stderr, disable=None,
                   dynamic_ncols=True)
    logits = model.forward(prompt_ids, caches=caches, kernel=kernel, mask=mask, logits="last")[0]
    pos = len(prompt_ids)
    out = []
    try:
        if active:
            model.decode_active = True
        for _ in range(max_new_tokens):
            if temperature <= 0:
                nxt = int(np.argmax(logits))
            else:
                z = logits.astype(np.float64) / temperature
                if top_k and top_k < z.size:
                    kth = np.partition(z, -top_k)[-top_k]
                    z = np.where(z < kth, -np.inf, z)
                p = np.exp(z - z.max())
                p /= p.sum()
                nxt = int(rng.choice(p.size, p=p))
            out.append(nxt)
            if bar is not None:
                bar.update(1)
            if stop_at_eos and model.tokenizer is not None and nxt == model.tokenizer.eos:
                break
            logits = model.forward([nxt], positions=np.array([pos]), caches=caches, kernel=kernel, mask=mask,
                                   logits="last")[0]
            pos += 1
    finally:
        if active:
            model.decode_active = before
        if bar is not None:
            bar.close()
    return out
