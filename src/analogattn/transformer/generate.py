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


class TeacherForced:
    """Per-token negative log-likelihoods of a teacher-forced decode (see :func:`teacher_forced`).
    ``token_nll[i]`` is the NLL (natural log) of ``ids[prompt + i]`` given every token before it;
    ``token_position[i]`` the position of the query token that predicted it (= its context length
    - 1 = the age in tokens of the oldest key it reads), the convention of
    :func:`analogattn.evaluate.perplexity.nll_by_position`."""

    def __init__(self, token_nll, token_position, prompt, seconds):
        self.token_nll = np.asarray(token_nll, np.float64)
        self.token_position = np.asarray(token_position, np.int64)
        self.prompt, self.seconds = prompt, seconds

    @property
    def scored(self) -> int:
        return int(self.token_nll.size)

    @property
    def nll(self) -> float:
        return float(self.token_nll.mean())

    @property
    def perplexity(self) -> float:
        return float(np.exp(self.nll))

    @property
    def tokens_per_s(self) -> float:
        return self.scored / self.seconds if self.seconds else float("nan")


def _nll(logits, target) -> float:
    z = np.asarray(logits, np.float64).ravel()
    m = z.max()
    return float(m + np.log(np.exp(z - m).sum()) - z[target])


def teacher_forced(model, ids, prompt_tokens: int = 1, kernel=None, mask=None, progress: bool = False,
                   quantised_decode: bool = True, on_token=None) -> TeacherForced:
    """Decode ``ids`` token by token through the KV cache, exactly as :func:`generate` does, but
    feeding the text's own next token instead of a sampled one (teacher forcing): the prompt
    ``ids[:prompt_tokens]`` is prefilled, then every later token is one ``forward`` call of one
    token at its position, so a circuit kernel's cells are written once and age in decode as in a
    real generation. Scores ``ids[prompt_tokens:]``: each NLL from the logits of the step before
    it. ``quantised_decode`` as in :func:`generate`; ``on_token(i, nll)`` is called per step."""
    import time

    ids = np.asarray(ids, np.int64)
    if not 1 <= prompt_tokens < ids.size:
        raise ValueError(f"teacher_forced: prompt_tokens {prompt_tokens} must be in 1..{ids.size - 1}")
    kernel = kernel or IdealAttention()
    active = quantised_decode and hasattr(model, "enable_decode_store") and model.enable_decode_store()
    before = getattr(model, "decode_active", False)
    n = ids.size - prompt_tokens
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=n, desc="teacher-forced decode", unit="tok", file=sys.stderr, disable=None,
                   dynamic_ncols=True)
    nll = np.empty(n, np.float64)
    t0 = time.perf_counter()
    caches = model.new_caches(kernel)
    try:
        logits = model.forward(ids[:prompt_tokens], caches=caches, kernel=kernel, mask=mask, logits="last")[0]
        if active:
            model.decode_active = True
        for i in range(n):
            pos = prompt_tokens + i  # the token scored now
            nll[i] = _nll(logits, int(ids[pos]))
            if on_token is not None:
                on_token(i, nll[i])
            if bar is not None:
                bar.update(1)
            if i + 1 < n:
                logits = model.forward(ids[pos:pos + 1], positions=np.array([pos]), caches=caches, kernel=kernel,
                                       mask=mask, logits="last")[0]
    finally:
        if active:
            model.decode_active = before
        if bar is not None:
            bar.close()
    return TeacherForced(nll, np.arange(prompt_tokens - 1, ids.size - 1), prompt_tokens, time.perf_counter() - t0)
