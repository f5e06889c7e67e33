"""Long decodes (issue #16, retention and refresh): teacher-forced decoding through the KV cache
against prefill of the same tokens, the CLI mode's perplexity and bins, the refresh energy.

Why a circuit kernel's decode is not bit-equal to its prefill, found here:
- float32 rounding: a one-token forward (matrix-vector products) rounds q, k, v differently from
  a prefill (matrix products), ~1e-6 relative; a quantiser (storage, pulse, ADC levels) then
  flips a level now and then, so per-token NLLs of a quantised kernel differ by more than rounding
  while the kernel's arithmetic is the same (tested below with the same q, k, v: equal);
- the score ADC's reference is the head's largest |logit| *in the call*: a whole window in
  prefill, one token in decode (decode's per-token reference is finer), so with ``adc_bits`` > 0
  the two differ by up to a code step (tested: only the ADC makes them differ);
- decay is expanded about the oldest key a call reads (``decay_terms``), a different reference in
  a window and in a token: tested equal to 1e-4 of full scale;
- noise and mismatch draws come in another order (statistically the same, not the same numbers).
"""
import json
import math

import numpy as np
import pytest

from analogattn.attention.base import Mask
from analogattn.attention.gaincell import CellModel, GainCellAttention, GainCellConfig, Scalers
from analogattn.attention.gaincell.cost import gaincell_cost
from analogattn.evaluate.age import age_bins
from analogattn.evaluate.perplexity import perplexity
from analogattn.transformer.generate import teacher_forced
from analogattn.transformer.loaders import load


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from tiny_models import write_tiny_gguf
    d = tmp_path_factory.mktemp("tiny")
    write_tiny_gguf(d / "tiny.gguf")
    return d / "tiny.gguf"


def _cubic_cell():
    """A curved cell with retention towards V_eq = 0.3 (tau 1 us): decay and the expansion matter."""
    g, h, veq = 20e-6, 60e-6, 0.3

    def cur(v):
        x = np.asarray(v, float) - veq
        return g * x + h * x ** 3
    return CellModel(0.9, 0.45, cur, lambda v: np.asarray(v, float), 1e-6, veq)


def _prefill_and_decode(cfg, T=60, H=4, KV=2, d=16, seed=0):
    rng = np.random.default_rng(seed)
    q = rng.uniform(-1, 1, (H, T, d)).astype(np.float32)
    k = rng.uniform(-0.3, 0.3, (KV, T, d)).astype(np.float32)
    v = rng.uniform(-0.3, 0.3, (KV, T, d)).astype(np.float32)
    cell = _cubic_cell()
    ker = GainCellAttention(cell, cfg, Scalers.identity(1, H, KV, cell))
    pos = np.arange(T)
    full = ker(q, k, v, pos, Mask(), ker.new_cache(0, KV, d), 0)
    c = ker.new_cache(0, KV, d)
    inc = np.concatenate([ker(q[:, t:t + 1], k[:, t:t + 1], v[:, t:t + 1], pos[t:t + 1], Mask(), c, 0)
                          for t in range(T)], axis=1)
    return full, inc


@pytest.mark.parametrize("refresh", [0, 16])
def test_gaincell_decode_equals_prefill_for_the_same_inputs(refresh):
    """Same q, k, v: token-by-token calls give the prefill's outputs (storage, pulse and value-tile
    quantisers on, decay on over 60 tokens of 10 ns at tau 1 us, refresh on and off) to 1e-4 of
    full scale, the decay expansion's different reference point (measured 5e-6)."""
    cfg = GainCellConfig(window=0, storage_levels=32, token_period=1e-8, adc_bits=0, refresh_interval=refresh,
                         circuit_read_noise=False)
    full, inc = _prefill_and_decode(cfg)
    assert np.abs(full - inc).max() <= 1e-4 * np.abs(full).max()


def test_gaincell_decode_equals_prefill_exactly_without_decay():
    cfg = GainCellConfig(window=0, storage_levels=32, token_period=0.0, adc_bits=0, circuit_read_noise=False)
    full, inc = _prefill_and_decode(cfg)
    assert np.abs(full - inc).max() <= 1e-6 * np.abs(full).max()


def test_score_adc_reference_per_call_is_what_differs():
    """The same inputs with the 8-bit score ADC on: outputs differ by more than 0.1% of full scale
    (the reference is the largest |logit| of the call: a window in prefill, a token in decode)."""
    cfg = GainCellConfig(window=0, storage_levels=32, token_period=0.0, adc_bits=8, circuit_read_noise=False)
    full, inc = _prefill_and_decode(cfg)
    assert np.abs(full - inc).max() > 1e-3 * np.abs(full).max()
    assert np.abs(full[:, 0] - inc[:, 0]).max() < 1e-6 * np.abs(full).max()  # first query: same call content


def test_ideal_teacher_forced_equals_prefill_on_a_model(tiny):
    model = load(str(tiny))
    rng = np.random.default_rng(3)
    ids = rng.integers(0, model.config.vocab, 49)
    pre = perplexity(model, ids, window=48, kernel=None, progress=False)
    dec = teacher_forced(model, ids, prompt_tokens=1)
    assert dec.scored == pre.scored == 48
    np.testing.assert_array_equal(dec.token_position, pre.token_position)
    assert np.abs(dec.token_nll - pre.token_nll).max() < 1e-5
    assert dec.perplexity == pytest.approx(math.exp(dec.token_nll.mean()), rel=1e-12)
    # a longer prompt: the same tokens scored from position prompt - 1 on
    dec4 = teacher_forced(model, ids, prompt_tokens=4)
    assert dec4.scored == 45 and dec4.token_position[0] == 3
    assert np.abs(dec4.token_nll - pre.token_nll[3:]).max() < 1e-5


def test_unquantised_gaincell_teacher_forced_equals_prefill_on_a_model(tiny):
    """Through the whole model, a decaying cubic cell without quantisers (rounding cannot flip a
    level): decode NLLs equal prefill NLLs to 1e-3 (decay expansion reference; rounding)."""
    model = load(str(tiny))
    c = model.config
    cell = _cubic_cell()
    cfg = GainCellConfig(window=0, storage_levels=0, input_levels=0, output_levels=0, adc_bits=0,
                         token_period=5e-9, circuit_read_noise=False)
    ker = GainCellAttention(cell, cfg, Scalers.identity(c.n_layers, c.n_heads, c.n_kv_heads, cell))
    rng = np.random.default_rng(4)
    ids = rng.integers(0, c.vocab, 41)
    pre = perplexity(model, ids, window=40, kernel=ker, progress=False)
    dec = teacher_forced(model, ids, prompt_tokens=1, kernel=ker)
    assert np.abs(dec.token_nll - pre.token_nll).max() < 1e-3
    # decay matters here: the ideal kernel's NLLs are measurably different
    ideal = perplexity(model, ids, window=40, progress=False)
    assert np.abs(ideal.token_nll - pre.token_nll).max() > 1e-3


def test_cli_teacher_forced_json_bins_and_plot(tiny, tmp_path):
    from analogattn import cli
    from cli_cases import PROSE
    text = tmp_path / "t.txt"
    text.write_text("\n".join(PROSE * 2 for _ in range(10)))
    js, png = tmp_path / "r.json", tmp_path / "r.png"
    rc = cli.main(["generate", "--model", str(tiny), "--text", str(text), "--teacher-forced", "--max-new-tokens",
                   "30", "--age-bin", "8", "--json", str(js), "--plot", str(png), "-q"])
    assert rc == 0
    r = json.loads(js.read_text())
    nll = np.array(r["token_nll"])
    assert r["scored_tokens"] == nll.size == 30 and r["mode"] == "teacher_forced"
    assert r["perplexity"] == pytest.approx(math.exp(nll.mean()), rel=1e-12)
    assert [b["tokens"] for b in r["perplexity_by_age"]] == [8, 8, 8, 6]
    for b in r["perplexity_by_age"]:
        m = (np.array(r["token_position"]) >= b["from"]) & (np.array(r["token_position"]) < b["to"])
        assert b["perplexity"] == pytest.approx(math.exp(nll[m].mean()), rel=1e-12)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the same tokens by prefill (ideal kernel): the same NLLs
    model = load(str(tiny))
    ids = np.asarray(model.tokenizer.encode(text.read_text()), np.int64)[:31]
    pre = perplexity(model, ids, window=30, progress=False)
    assert np.abs(pre.token_nll - nll).max() < 1e-5


def test_age_bins_hand_computed():
    b = age_bins([0, 1, 2, 5, 9], [1.0, 2.0, 3.0, 4.0, 5.0], 4)
    assert [(x["from"], x["tokens"]) for x in b] == [(0, 3), (4, 1), (8, 1)]
    assert b[0]["perplexity"] == pytest.approx(math.exp(2.0))


def test_refresh_energy_is_one_write_of_every_stored_cell_per_interval():
    """Refresh every N tokens at a C-token context: every stored cell (K and V: 2 d per KV head,
    every layer) written once per N tokens -> L n_kv 2 d C E_write / N per token."""
    L, H, KV, d, C, N = 30, 9, 3, 64, 2048, 128
    e_wr = 0.6e-15  # the cost model's default write energy per cell (no bundle)
    base = gaincell_cost(L, H, KV, d, C)
    ref = gaincell_cost(L, H, KV, d, C, refresh_interval=N)
    want = L * KV * 2 * d * C * e_wr / N
    assert ref["energy_parts_J"]["refresh"] == pytest.approx(want, rel=1e-12)
    assert ref["energy_per_token_J"] - base["energy_per_token_J"] == pytest.approx(want, rel=1e-9)
    assert "refresh" not in base["energy_parts_J"]
