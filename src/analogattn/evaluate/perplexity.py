"""Perplexity over a long text with a stated protocol.

Protocol (window W, stride S <= W): windows start at 0, S, 2S, ...; each feeds
tokens[start:start+W] to a fresh cache and predicts tokens[start+1:start+W+1]. The first window
scores all its positions; later windows score only their last S positions (the ones no earlier
window scored), so every token is scored once, with at least W-S tokens of context after the
first window. With S = W the windows are disjoint. ``max_scored`` stops after that many scored
tokens. Perplexity = exp(mean negative log-likelihood, natural log).
"""
from __future__ import annotations

import dataclasses
import sys
import time

import numpy as np

from ..attention.base import IdealAttention
from ..transformer import ops


@dataclasses.dataclass
class PerplexityResult:
    perplexity: float
    nll: float
    scored: int
    windows: int
    window: int
    stride: int
    seconds: float

    @property
    def tokens_per_s(self) -> float:
        """Prefill throughput: tokens fed through the model per second."""
        return self.fed / self.seconds if self.seconds else float("nan")

    fed: int = 0


def windows(n_tokens: int, window: int, stride: int, max_scored: int | None = None):
    """(start, first scored offset, n scored) for each window of the protocol."""
    out, scored, start = [], 0, 0
    while start + 1 < n_tokens:
        length = min(window, n_tokens - 1 - start)
        first = 0 if start == 0 else window - stride
        if first >= length:
            break
        n = length - first
        if max_scored is not None:
            n = min(n, max_scored - scored)
        if n <= 0:
            break
        out.append((start, first, n))
        scored += n
        start += stride
    return out


def perplexity(model, tokens, window: int, stride: int | None = None, kernel=None,
               max_scored: int | None = None, progress: bool = True, mask=None) -> PerplexityResult:
    stride = stride or window
    if not 1 <= stride <= window:
        from ..errors import ParameterError
        raise ParameterError("stride", stride, f"1 to window ({window})")
    tokens = np.asarray(tokens)
    plan = windows(tokens.size, window, stride, max_scored)
    kernel = kernel or IdealAttention()
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=sum(n for _, _, n in plan), desc="perplexity", unit="tok", file=sys.stderr,
                   disable=None, dynamic_ncols=True)
    nll, fed, t0 = [], 0, time.perf_counter()
    for start, first, n in plan:
        x = tokens[start:start + first + n]
        caches = model.new_caches(kernel)
        h = model.forward(x, caches=caches, kernel=kernel, mask=mask, logits="none")
        tgt = tokens[start + first + 1:start + first + n + 1]
        for c0 in range(0, n, 128):  # logits in row chunks: (1024 x 49152) floats would be 200 MB
            c1 = min(n, c0 + 128)
            lp = ops.log_softmax(h[first + c0:first + c1] @ model.w["lm_head"])
            nll.append(-lp[np.arange(c1 - c0), tgt[c0:c1]].astype(np.float64))
        fed += x.size
        if bar:
            bar.update(n)
    if bar:
        bar.close()
    nll = np.concatenate(nll) if nll else np.array([np.nan])
    res = PerplexityResult(float(np.exp(nll.mean())), float(nll.mean()), int(nll.size), len(plan), window,
                           stride, time.perf_counter() - t0)
    res.fed = fed
    return res
