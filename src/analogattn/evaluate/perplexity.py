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


def _window_at(start, n_tokens, window, stride, scored, max_scored):
    """(first scored offset, n scored) of the window starting at ``start`` when ``n_tokens``
    tokens exist, or None when the protocol is done."""
    length = min(window, n_tokens - 1 - start)
    first = 0 if start == 0 else window - stride
    if length <= 0 or first >= length:
        return None
    n = length - first if max_scored is None else min(length - first, max_scored - scored)
    return (first, n) if n > 0 else None


def windows(n_tokens: int, window: int, stride: int, max_scored: int | None = None):
    """(start, first scored offset, n scored) for each window of the protocol."""
    out, scored, start = [], 0, 0
    while (w := _window_at(start, n_tokens, window, stride, scored, max_scored)) is not None:
        out.append((start, *w))
        scored += w[1]
        start += stride
    return out


class stream_tokens:
    """Token ids of a text file, read and tokenised a chunk at a time (an iterator of id arrays).

    A chunk ends after a newline that is followed by a non-space character, where byte-level BPE
    pre-tokenisation splits anyway, so the ids equal those of tokenising the whole file at once.
    A line longer than a chunk is cut before a single space between two non-space characters
    (also a pre-tokenisation boundary, so the ids are still equal), and only if it has no such
    space within a chunk at the chunk's end: memory stays flat for any text. ``replaced`` counts
    the characters that were not valid UTF-8 (read as U+FFFD)."""

    def __init__(self, path, tokenizer, chunk_chars: int = 1 << 20, max_chars: int | None = None):
        self.path, self.tokenizer, self.chunk_chars, self.max_chars = path, tokenizer, chunk_chars, max_chars
        self.replaced = 0
        self._it = self._gen()

    def __iter__(self):
        return self

    def __next__(self):
        return next(self._it)

    @staticmethod
    def _cut(text: str, chunk_chars: int) -> int:
        i = text.rfind("\n", 0, len(text) - 1)
        while i >= 0:
            if not text[i + 1].isspace():
                return i + 1
            i = text.rfind("\n", 0, i)
        if len(text) < chunk_chars:
            return -1
        i = text.rfind(" ", 1, len(text) - 1)
        while i > 0:
            if not text[i - 1].isspace() and not text[i + 1].isspace():
                return i
            i = text.rfind(" ", 1, i)
        return len(text)  # no space in a whole chunk: cut where it ends

    def _gen(self):
        from .texts import CountingReader
        carry, read = "", 0
        with CountingReader(self.path) as f:
            while True:
                want = self.chunk_chars if self.max_chars is None else min(self.chunk_chars, self.max_chars - read)
                part = f.read(want) if want > 0 else ""
                self.replaced = f.replaced
                read += len(part)
                text = carry + part
                if not part:
                    if text:
                        yield np.asarray(self.tokenizer.encode(text), dtype=np.int64)
                    return
                cut = self._cut(text, self.chunk_chars)
                if cut <= 0:
                    carry = text
                    continue
                carry = text[cut:]
                yield np.asarray(self.tokenizer.encode(text[:cut]), dtype=np.int64)


MIN_SCORED = 8  # fewer scored tokens than this is no perplexity worth printing


def perplexity(model, tokens, window: int, stride: int | None = None, kernel=None,
               max_scored: int | None = None, progress: bool = True, mask=None,
               source: str = "the text") -> PerplexityResult:
    """``tokens``: an array of ids, or an iterable of id arrays (see :func:`stream_tokens`);
    windows are evaluated as soon as their tokens have arrived."""
    stride = stride or window
    if not 1 <= stride <= window:
        from ..errors import ParameterError
        raise ParameterError("stride", stride, f"1 to window ({window})")
    chunks = iter([np.asarray(tokens)]) if isinstance(tokens, (np.ndarray, list)) else iter(tokens)
    kernel = kernel or IdealAttention()
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=max_scored, desc="perplexity", unit="tok", file=sys.stderr, disable=None,
                   dynamic_ncols=True)
    buf, offset, exhausted = np.zeros(0, np.int64), 0, False
    nll, fed, n_windows, scored, start = [], 0, 0, 0, 0
    where = []  # each scored token's position in its window (its context length)
    t0 = time.perf_counter()
    while True:
        while not exhausted and offset + buf.size < start + window + 1:
            nxt = next(chunks, None)
            if nxt is None:
                exhausted = True
            else:
                buf = np.concatenate([buf, np.asarray(nxt, np.int64)])
        w = _window_at(start, offset + buf.size, window, stride, scored, max_scored)
        if w is None:
            break
        first, n = w
        x = buf[start - offset:start - offset + first + n]
        tgt = buf[start - offset + first + 1:start - offset + first + n + 1]
        caches = model.new_caches(kernel)
        h = model.forward(x, caches=caches, kernel=kernel, mask=mask, logits="none")
        nll.append(model.token_nll(h[first:first + n], tgt))  # logits in row chunks, never (T x vocab)
        where.append(np.arange(first, first + n))
        fed += x.size
        scored += n
        n_windows += 1
        if bar is not None:
            bar.update(n)
        start += stride
        drop = start - offset
        if drop > 0:
            buf, offset = buf[drop:], offset + drop
    if bar is not None:
        bar.close()
    if scored < min(MIN_SCORED, max_scored or MIN_SCORED):
        from ..errors import AnalogAttnError
        raise AnalogAttnError(f"{source}: too short for a perplexity ({offset + buf.size} tokens, "
                              f"{scored} scored; need at least {MIN_SCORED + 1} tokens)")
    nll = np.concatenate(nll)
    res = PerplexityResult(float(np.exp(nll.mean())), float(nll.mean()), int(scored), n_windows, window, stride,
                           time.perf_counter() - t0)
    res.fed = fed
    res.token_nll, res.token_position = nll, np.concatenate(where)
    return res


def nll_by_position(res, bin_tokens: int = 256) -> list[dict]:
    """Perplexity of the scored tokens binned by their position in the window (the age of the
    oldest key they attend to): [{"from", "to", "tokens", "perplexity"}]."""
    pos, nll = getattr(res, "token_position", None), getattr(res, "token_nll", None)
    if pos is None or not len(pos):
        return []
    out = []
    for a in range(0, int(pos.max()) + 1, bin_tokens):
        m = (pos >= a) & (pos < a + bin_tokens)
        if m.any():
            out.append({"from": a, "to": a + bin_tokens, "tokens": int(m.sum()),
                        "perplexity": float(np.exp(nll[m].mean()))})
    return out
