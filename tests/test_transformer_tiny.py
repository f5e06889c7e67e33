"""The engine on tiny randomly initialised models written in the real formats, against naive
per-token reference implementations; prefill vs incremental decoding; masks; GQA."""
import math

import numpy as np
import pytest

from analogattn.attention.base import IdealAttention, Mask
from analogattn.evaluate.perplexity import perplexity, stream_tokens, windows
from analogattn.transformer.cache import KVCache
from analogattn.transformer.loaders import load
from analogattn.transformer.models import embed_sentences

from tiny_models import (naive_bert, naive_gpt2, naive_llama, write_tiny_bert, write_tiny_gguf,
                         write_tiny_gpt2)


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    p = tmp_path_factory.mktemp("llama") / "tiny.gguf"
    W, cfg = write_tiny_gguf(p)
    return load(str(p)), W, cfg


@pytest.fixture(scope="module")
def tiny_gpt2(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gpt2") / "tiny-gpt2"
    W, cfg = write_tiny_gpt2(folder)
    return load(str(folder)), W, cfg


def test_llama_gguf_matches_naive(tiny_llama):
    m, W, cfg = tiny_llama
    assert m.config.n_heads == 4 and m.config.n_kv_heads == 2
    ids = m.tokenizer.encode("the cat in the hat 123")
    ref = naive_llama(W, cfg, ids)
    got = m.forward(ids)
    assert np.abs(got - ref).max() < 1e-4 * max(1.0, np.abs(ref).max())


def test_gguf_tokenizer_from_metadata(tiny_llama):
    m, *_ = tiny_llama
    ids = m.tokenizer.encode(" the 42")
    # " the" merges to one token; digits are split individually (smollm pre-tokenizer)
    toks = [m.tokenizer.tk.id_to_token(i) for i in ids]
    assert toks[0] == "Ġthe" and "4" in toks and "2" in toks
    assert m.tokenizer.decode(ids) == " the 42"
    assert m.tokenizer.encode("<|endoftext|>") == [m.tokenizer.eos]


def test_gpt2_folder_matches_naive(tiny_gpt2):
    m, W, cfg = tiny_gpt2
    ids = m.tokenizer.encode("the cat sat in a hat")
    ref = naive_gpt2(W, cfg, ids)
    assert np.abs(m.forward(ids) - ref).max() < 1e-4 * max(1.0, np.abs(ref).max())


def test_bert_folder_matches_naive(tmp_path):
    W, cfg, tk = write_tiny_bert(tmp_path / "tiny-bert")
    m = load(str(tmp_path / "tiny-bert"))
    ids = m.tokenizer.encode("The cat sat on the mat.")
    assert ids[0] == 2 and ids[-1] == 3  # [CLS] ... [SEP]
    ref = naive_bert(W, cfg, ids)
    got = m.forward(ids, logits="none")
    assert np.abs(got - ref).max() < 1e-4
    e = embed_sentences(m, ["the cat sat", "the dog ran"])
    assert np.allclose(np.linalg.norm(e, axis=1), 1, atol=1e-6)
    mean = ref.mean(axis=0)
    assert np.allclose(e[0] if False else embed_sentences(m, ["The cat sat on the mat."])[0],
                       mean / np.linalg.norm(mean), atol=1e-5)


@pytest.mark.parametrize("which", ["tiny_llama", "tiny_gpt2"])
def test_prefill_equals_incremental_decoding(which, request):
    m = request.getfixturevalue(which)[0]
    ids = m.tokenizer.encode("the cat sat in the hat and then the dog")
    full = m.forward(ids)
    k = IdealAttention()
    caches = m.new_caches(k)
    rows = [m.forward(ids[:5], caches=caches, kernel=k)]
    for t in range(5, len(ids)):
        rows.append(m.forward([ids[t]], caches=caches, kernel=k))
    inc = np.concatenate(rows)
    assert np.abs(inc - full).max() < 1e-4


def _explicit(q, k, v, allowed):
    H, T, d = q.shape
    n_kv = k.shape[0]
    out = np.zeros_like(q, dtype=np.float64)
    for h in range(H):
        kk, vv = k[h // (H // n_kv)], v[h // (H // n_kv)]
        for t in range(T):
            s = np.array([q[h, t] @ kk[j] / math.sqrt(d) if allowed[t, j] else -np.inf for j in range(kk.shape[0])])
            a = np.exp(s - s.max())
            a /= a.sum()
            out[h, t] = a @ vv
    return out


@pytest.mark.parametrize("mask", [Mask("causal"), Mask("sliding", 3), Mask("bidirectional")])
def test_ideal_kernel_gqa_and_masks(mask):
    rng = np.random.default_rng(1)
    q = rng.normal(size=(6, 300, 8)).astype(np.float32)  # 300 > block size: exercises blocking
    k = rng.normal(size=(2, 300, 8)).astype(np.float32)
    v = rng.normal(size=(2, 300, 8)).astype(np.float32)
    pos = np.arange(300)
    got = IdealAttention()(q, k, v, pos, mask, KVCache(2, 8), 0)
    sub = slice(0, 300)
    want = _explicit(q[:, sub], k, v, mask.allowed(pos, pos)[sub])
    assert np.abs(got - want).max() < 1e-4


def test_sliding_window_mask_values():
    a = Mask("sliding", 2).allowed(np.arange(4), np.arange(4))
    assert a.tolist() == [[1, 0, 0, 0], [1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 1]]
    with pytest.raises(ValueError, match="mask.window"):
        Mask("sliding", 0)


def test_window_protocol():
    # the reference protocol: 5153 tokens, window 256, 768 scored -> starts 0, 256, 512
    assert windows(5153, 256, 256, 768) == [(0, 0, 256), (256, 0, 256), (512, 0, 256)]
    # strided: later windows score only their last `stride` positions, every target once
    w = windows(10, 4, 2)
    assert w == [(0, 0, 4), (2, 2, 2), (4, 2, 2), (6, 2, 1)]
    scored = [s + f + i + 1 for s, f, n in w for i in range(n)]
    assert scored == list(range(1, 10))


def test_perplexity_of_tiny_model_matches_direct_nll(tiny_gpt2):
    m, W, cfg = tiny_gpt2
    ids = m.tokenizer.encode("the cat sat in the hat and then the dog sat in a hat")
    r = perplexity(m, ids, window=8, stride=8, progress=False)
    nll = []
    for s in range(0, len(ids) - 1, 8):
        x = ids[s:s + 9]
        lg = naive_gpt2(W, cfg, x[:-1])
        lp = lg - np.log(np.exp(lg - lg.max(1, keepdims=True)).sum(1, keepdims=True)) - lg.max(1, keepdims=True)
        nll += [-lp[i, x[i + 1]] for i in range(len(x) - 1)]
    assert r.scored == len(ids) - 1
    assert abs(r.perplexity - math.exp(np.mean(nll))) < 1e-4 * r.perplexity


@pytest.mark.parametrize("chunk", [7, 50, 333, 10**6])
def test_stream_tokens_equal_whole_file(tiny_gpt2, tmp_path, chunk):
    m = tiny_gpt2[0]
    text = "= Valkyria =\n\n the cat sat in the hat .\n  indented line\nthe 1990s , 42 dogs\n\n\nend"
    f = tmp_path / "t.txt"
    f.write_text(text * 5)
    streamed = np.concatenate(list(stream_tokens(f, m.tokenizer, chunk_chars=chunk)))
    assert streamed.tolist() == m.tokenizer.encode(text * 5)
    part = np.concatenate(list(stream_tokens(f, m.tokenizer, chunk_chars=chunk, max_chars=40)))
    assert part.tolist() == m.tokenizer.encode((text * 5)[:40])


@pytest.mark.parametrize("window,stride,max_scored", [(8, 8, None), (8, 3, None), (16, 5, 20)])
def test_streamed_perplexity_equals_in_memory(tiny_gpt2, window, stride, max_scored):
    m = tiny_gpt2[0]
    ids = np.array(m.tokenizer.encode("the cat sat in the hat and then the dog sat in a hat " * 4))
    whole = perplexity(m, ids, window, stride, max_scored=max_scored, progress=False)
    pieces = (ids[i:i + 5] for i in range(0, ids.size, 5))
    streamed = perplexity(m, pieces, window, stride, max_scored=max_scored, progress=False)
    assert streamed.scored == whole.scored == min(ids.size - 1, max_scored or 10**9)
    assert abs(streamed.perplexity - whole.perplexity) < 1e-9 * whole.perplexity
    assert streamed.windows == len(windows(ids.size, window, stride, max_scored))
