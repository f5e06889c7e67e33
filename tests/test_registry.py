"""The kernel registry: every registered kernel is wired (config, builder, cost, comparison), and a
toy kernel added here -- top-k digital attention -- reaches the cost table and the comparison
through one register() call, with no edit anywhere else."""
import dataclasses
import math

import numpy as np
import pytest

from analogattn.attention import registry
from analogattn.attention.base import AttentionKernel, IdealAttention, Mask
from analogattn.attention.cache import KVCache
from analogattn.attention.config import ComposedConfig, leaf_fields
from analogattn.attention.costs import DigitalCosts, ideal_cost
from analogattn.errors import AnalogAttnError, DesignFileError
from analogattn.params import Validated, param


# -- the toy kernel: exact scores, softmax over each query's k largest -----------------------------
@dataclasses.dataclass(frozen=True)
class TopKSelection(Validated):
    top_k: int = param(4, "keys", 1, 1 << 20, "keys each query attends to (its largest exact scores)")


@dataclasses.dataclass(frozen=True, init=False)
class TopKConfig(ComposedConfig):
    selection: TopKSelection = dataclasses.field(default_factory=TopKSelection)


class TopKAttention(AttentionKernel):
    name = "topk"

    def __init__(self, config: TopKConfig):
        self.cfg = config

    def attend(self, q, positions, mask, cache, layer):
        keys, values, kpos = cache.keys, cache.values, cache.positions
        g = q.shape[0] // keys.shape[0]
        s = np.einsum("htd,hsd->hts", q, np.repeat(keys, g, axis=0)) / math.sqrt(q.shape[-1])
        s = np.where(mask.allowed(positions, kpos)[None], s, -np.inf)
        k = min(self.cfg.top_k, s.shape[-1])
        kth = np.sort(s, axis=-1)[..., -k][..., None]
        s = np.where(s >= kth, s, -np.inf)
        w = np.exp(s - s.max(axis=-1, keepdims=True))
        w /= w.sum(axis=-1, keepdims=True)
        return (w @ np.repeat(values, g, axis=0)).astype(q.dtype)


def _build(model, bundle, config, windows, cal_file=None, log=None):
    return TopKAttention(config)


def _cost(model_config, context, bundle=None, kernel=None, stats=None, dc=DigitalCosts()):
    c = model_config
    k = min(kernel.cfg.top_k if kernel is not None else 4, context)
    r = ideal_cost(c.n_layers, c.n_heads, c.n_kv_heads, c.head_dim, context, dc=dc)
    r["energy_parts_J"]["softmax"] *= k / context  # only the kept keys are exponentiated
    r["energy_per_token_J"] = sum(r["energy_parts_J"].values())
    return r


def _comparison(ctx):
    for k in (2, 8):
        yield f"top-{k} keys", TopKAttention(TopKConfig(top_k=k))


@pytest.fixture
def topk():
    spec = registry.register(registry.KernelSpec("topk", "top-k digital attention (toy)", TopKConfig, _build,
                                                 _cost, comparison=_comparison))
    yield spec
    registry.unregister("topk")


def test_every_kernel_is_wired():
    assert registry.names()[:3] == ("ideal", "sprint", "gaincell")
    for spec in registry.specs():
        cfg = spec.config()
        assert isinstance(cfg, ComposedConfig) and callable(spec.make) and callable(spec.cost)
        names = [f.name for _, f in leaf_fields(spec.config)]
        assert len(names) == len(set(names)), spec.name  # one command-line flag per leaf
        for _, f in leaf_fields(spec.config):
            assert f.metadata.get("doc"), (spec.name, f.name)  # every option documented
        assert spec.comparison is not None
    with pytest.raises(AnalogAttnError, match="not available"):
        registry.get("nonesuch")
    with pytest.raises(AnalogAttnError, match="needs --surrogates"):
        registry.get("gaincell").build(None, None)


def test_toy_kernel_builds_and_costs(topk):
    from analogattn.evaluate.cost import cost_for
    assert "topk" in registry.names()
    ker = registry.get("topk").build(None, config=TopKConfig(top_k=1000))
    q = np.random.default_rng(0).standard_normal((4, 10, 8)).astype(np.float32)
    k, v = q[:2], q[2:]
    pos = np.arange(10)
    want = IdealAttention()(q, k, v, pos, Mask(), KVCache(2, 8), 0)
    assert np.abs(ker(q, k, v, pos, Mask(), ker.new_cache(0, 2, 8), 0) - want).max() < 1e-5  # k >= keys: exact
    c = type("C", (), dict(n_layers=2, n_heads=4, n_kv_heads=2, head_dim=8))()
    cheap, full = cost_for("topk", c, 64, kernel=ker), cost_for("ideal", c, 64)
    assert cheap["energy_per_token_J"] == full["energy_per_token_J"]  # k >= context: all keys
    small = cost_for("topk", c, 64, kernel=TopKAttention(TopKConfig(top_k=4)))
    assert small["energy_per_token_J"] < full["energy_per_token_J"]


def test_toy_kernel_joins_the_comparison(topk, tmp_path):
    from analogattn.evaluate.compare import compare, table
    from analogattn.transformer.loaders import load
    from tiny_models import write_tiny_gpt2
    write_tiny_gpt2(tmp_path / "g")
    m = load(str(tmp_path / "g"))
    ids = np.array(m.tokenizer.encode("the cat sat in the hat and the dog ran " * 4))
    rows = compare(m, ids, [ids[:16]], None, tmp_path / "out", window=16, max_scored=32,
                   kernels=("ideal", "topk"), log=lambda *_: None)
    assert [r.kernel for r in rows] == ["ideal", "topk", "topk"]
    assert rows[1].ratio > 1.0 and rows[1].energy_nj < rows[0].energy_nj  # top-2 of 16: worse, cheaper
    assert "top-8 keys" in table(rows) and (tmp_path / "out" / "comparison.json").exists()


def test_composed_config_from_toml(tmp_path):
    from analogattn.attention.gaincell import GainCellConfig
    from analogattn.attention.sprint import SprintConfig
    p = tmp_path / "k.toml"
    p.write_text("[array]\nstorage_levels = 32\ncell_temperature = 85.0\n[calibrate]\ncalibration = 'lstsq'\n")
    cfg = GainCellConfig.from_toml(p)
    assert cfg.array.storage_levels == 32 and cfg.cell_temperature == 85.0 and cfg.calibrate.calibration == "lstsq"
    assert cfg == GainCellConfig(storage_levels=32, cell_temperature=85.0, calibration="lstsq")
    assert GainCellConfig.from_dict(cfg.to_dict()) == cfg
    for text, msg in (("[array]\nstorage_level = 3\n", "unknown key array.storage_level"),
                      ("[array]\nstorage_levels = -3\n", "array.storage_levels = -3 is not allowed"),
                      ("[arrays]\n", "unknown key arrays"), ("[array\n", "not valid TOML")):
        p.write_text(text)
        with pytest.raises(DesignFileError, match=msg) as e:
            GainCellConfig.from_toml(p)
        assert "\n" not in str(e.value)
    # the flat names of the old configs still build the same config (temporary aliases)
    assert SprintConfig(read_noise=False, comparator_noise=False) == SprintConfig(circuit_noise=False)
    assert GainCellConfig(temperature=40.0).cell_temperature == 40.0
