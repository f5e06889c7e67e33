"""Issue #12, readers and the design layer: every bad input file is refused with one
AnalogAttnError line naming the file and the bad item, and the file is left as it was.

Real files throughout: a small real characterization (ngspice), a bundle fitted from it, tiny
GGUF and Hugging Face folders written in the real formats, calibration files written by the
kernels' own save functions; each then damaged the way a user could damage it."""
import hashlib
import json
import os
import shutil
import subprocess
import sys

import h5py
import numpy as np
import pytest

from analogattn.attention import calfile
from analogattn.characterize.design import Design
from analogattn.circuits.technology import Technology
from analogattn.errors import AnalogAttnError, DesignFileError, ParameterError
from analogattn.surrogates import bundle
from analogattn.surrogates.fit import fit_all
from analogattn.transformer import loaders

from conftest import run_cli
from tiny_models import write_tiny_bert, write_tiny_gguf, write_tiny_gpt2

# A characterization of every family at the smallest grids the fit accepts (~10 s cold).
DESIGN = """
[gaincell.sweep]
n_store = 9
n_in = 5
n_write = 7
retention_time = 1e-3
mc_samples = 6
mc_store = 5
mc_in = 3
mc_per_task = 6
[reram]
rows = 8
[reram.sweep]
n_patterns = 40
per_task = 40
mc_patterns = 1
mc_samples = 4
ir_positions = [0, 7]
ir_counts = [1, 8]
[comparator.sweep]
mc_samples = 20
per_task = 20
noise_reps = 4
noise_dv = [-0.001, 0.0, 0.001]
overdrives = [0.002, 0.01, 0.05]
"""


def digest(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest() if os.path.isfile(path) else None


def refused(fn, path, *needles, cls=AnalogAttnError):
    """fn() must raise cls with one line naming every needle; path's bytes unchanged."""
    before = digest(path)
    with pytest.raises(cls) as e:
        fn()
    msg = str(e.value)
    assert "\n" not in msg and msg.strip(), msg
    for n in needles:
        assert str(n) in msg, (n, msg)
    assert digest(path) == before
    return msg


def damaged_copy(src, dst, edit):
    shutil.copy(src, dst)
    with h5py.File(dst, "a") as f:
        edit(f)
    return dst


@pytest.fixture(scope="module")
def char(tmp_path_factory):
    d = tmp_path_factory.mktemp("readers")
    (d / "d.toml").write_text(DESIGN)
    out = d / "char.h5"
    r = run_cli("characterize", "--design", d / "d.toml", "-o", out, "--cache-dir", d / "cache", "-q")
    assert r.returncode == 0, r.stderr
    return out


@pytest.fixture(scope="module")
def fitted(char, tmp_path_factory):
    out = tmp_path_factory.mktemp("bundle") / "sur.h5"
    bundle.save(out, fit_all(char), "0" * 64, str(char))
    assert set(bundle.load(out)) >= {"gaincell.read_surface", "reram.column", "comparator.probit"}
    return out


# -- design files ------------------------------------------------------------------------------
BAD_DESIGNS = [
    ("[[gaincell]]\nc_store = 1e-15\n", DesignFileError, ["[gaincell]", "array of tables"]),
    ("gaincell = 3\n", DesignFileError, ["[gaincell]", "gaincell = 3"]),
    ("[gaincell]\nsweep = 3\n", DesignFileError, ["gaincell.sweep"]),
    ("[gaincell]\ntechnology = [1, 2]\n", DesignFileError, ["gaincell.technology"]),
    ("[gaincell\n", DesignFileError, ["not valid TOML"]),
    ("[comparator]\nv_cm = 1.2\n", ParameterError, ["comparator.v_cm", "vdd"]),
    ("[comparator]\nv_cm = 0.99\n", ParameterError, ["comparator.v_cm", "overdrives"]),
    ("[comparator]\nt_edge = 6e-10\n", ParameterError, ["comparator.t_edge", "t_clk"]),
    ("[gaincell]\nt_edge = 6e-9\n", ParameterError, ["gaincell.t_edge", "t_write"]),
    ("[gaincell]\nt_read = 1e-10\nt_edge = 2e-10\n", ParameterError, ["gaincell.t_edge", "t_read"]),
    ("[gaincell]\nwwl_high = 0.2\nwwl_hold = 0.5\n", ParameterError, ["gaincell.wwl_high", "wwl_hold"]),
    ("[gaincell]\nv_in = 0.45\n", ParameterError, ["gaincell.v_in", "v_bl"]),
    ("[gaincell.sweep]\nretention_starts = [0.5, 0.95]\n", ParameterError,
     ["gaincell.sweep.retention_starts[1]", "gaincell.vdd"]),
    ("[gaincell.sweep]\nmc_samples = 10\nmc_per_task = 20\n", ParameterError,
     ["gaincell.sweep.mc_per_task", "mc_samples"]),
    ("[comparator.sweep]\nmc_samples = 10\nper_task = 20\n", ParameterError, ["comparator.sweep.per_task"]),
    ("[reram.sweep]\nir_positions = [0, 64]\n", ParameterError, ["reram.sweep.ir_positions[1]", "reram.rows"]),
    ("[reram]\nrows = 16\n[reram.sweep]\nir_counts = [1, 32]\n", ParameterError,
     ["reram.sweep.ir_counts[1]", "reram.rows"]),
    ("[reram.sweep]\nir_levels = [3, 16]\n", ParameterError, ["reram.sweep.ir_levels[1]", "reram.levels"]),
    ("[reram]\nt_read = 1e-10\nt_edge = 2e-10\n", ParameterError, ["reram.t_edge", "t_read"]),
    ("[gaincell.sweep]\nn_store = 1" + "0" * 400 + "\n", ParameterError, ["gaincell.sweep.n_store"]),
    ("[gaincell.technology]\nnmos = 'n x'\n", ParameterError, ["gaincell.technology.nmos"]),
]


@pytest.mark.parametrize("toml,cls,needles", BAD_DESIGNS)
def test_bad_design_is_one_line_naming_file_and_fields(tmp_path, toml, cls, needles):
    f = tmp_path / "d.toml"
    f.write_text(toml)
    refused(lambda: Design.load(f), f, str(f), *needles, cls=cls)


def test_design_defaults_adapt_where_the_user_set_nothing():
    # default sweep lists are fitted to a smaller array / supply, as before: not errors
    d = Design.from_mapping({"reram": {"rows": 16}, "gaincell": {"sweep": {"mc_samples": 3}}})
    assert d.reram.rows == 16 and d.gaincell_sweep.mc_per_task == 50


def test_design_file_not_utf8_directory_missing(tmp_path):
    f = tmp_path / "latin1.toml"
    f.write_bytes("[gaincell]\n# r\u00e9sum\u00e9\nc_store = 1e-15\n".encode("latin-1"))
    refused(lambda: Design.load(f), f, str(f), "not UTF-8")
    refused(lambda: Design.load(tmp_path), tmp_path, str(tmp_path), "directory", cls=DesignFileError)
    refused(lambda: Design.load(tmp_path / "no.toml"), tmp_path / "no.toml", "no.toml", "No such file")


# -- model files -------------------------------------------------------------------------------
def _design_with_model(tmp_path, text: bytes | None, corner="", extra=""):
    m = tmp_path / "models.lib"
    if text is not None:
        m.write_bytes(text)
    d = tmp_path / "d.toml"
    d.write_text(f"[reram.technology]\nmodel_file = '{m}'\ncorner = '{corner}'\n{extra}")
    return d, m


@pytest.mark.parametrize("content,needles", [
    (b"", ["no .model nch", "no .model pch"]),
    (b"* a comment only\n.param x=1\n", ["no .model nch"]),
    (bytes(range(256)) * 8, ["not a text"]),
    (b".model NCH nmos level=54\n", ["no .model pch"]),
])
def test_bad_model_file_refused_before_any_simulation(tmp_path, content, needles):
    d, m = _design_with_model(tmp_path, content)
    refused(lambda: Design.load(d), m, str(m), *needles)


def test_model_file_good_binned_included_and_corner(tmp_path):
    builtin = Technology().path.read_text()
    d, m = _design_with_model(tmp_path, builtin.encode())
    assert Design.load(d).reram.technology.model_file == str(m)
    # binned names, case-insensitive, in a file pulled in with .include
    (tmp_path / "inner.inc").write_text(".MODEL nch.1 NMOS level=54\n.model Pch.2 pmos level=54\n")
    d, m = _design_with_model(tmp_path, b".lib tt\n.include 'inner.inc'\n.endl tt\n", corner="tt")
    assert Design.load(d).reram.technology.corner == "tt"
    d, m = _design_with_model(tmp_path, b".lib tt\n.include 'inner.inc'\n.endl tt\n", corner="ff")
    refused(lambda: Design.load(d), m, str(m), ".lib ff")
    d, m = _design_with_model(tmp_path, None)
    m.unlink()
    refused(lambda: Design.load(d), d, "reram.technology.model_file", "an existing file")
    d, m = _design_with_model(tmp_path, None)
    m.mkdir()
    refused(lambda: Design.load(d), d, "reram.technology.model_file")


def test_cli_characterize_bad_model_file_exit_2(tmp_path):
    d, m = _design_with_model(tmp_path, b"garbage\n")
    out = tmp_path / "c.h5"
    r = run_cli("characterize", "--design", d, "--only", "reram", "-o", out, "--cache-dir", tmp_path / "cache")
    _one_line_exit_2(r, str(m), "no .model nch")
    assert not out.exists() and not (tmp_path / "cache").exists()  # refused before any simulation


# -- characterizations -------------------------------------------------------------------------
def _del(path):
    return lambda f: f.__delitem__(path)


def _set(path, data):
    def edit(f):
        del f[path]
        f[path] = data
    return edit


def _attr(path, name, value):
    def edit(f):
        if value is None:
            del f[path].attrs[name]
        else:
            f[path].attrs[name] = value
    return edit


def _nan(path):
    def edit(f):
        a = f[path][()]
        f[path][...] = np.full(a.shape, np.nan)
    return edit


CHAR_CASES = [
    (_del("gaincell/read_surface/current"), ["gaincell/read_surface/current", "re-run analogattn characterize"]),
    (_del("reram/patterns/held_out"), ["reram/patterns/held_out"]),
    (_del("comparator/decision/offset"), ["comparator/decision/offset"]),
    (_del("comparator/decision/sensitivity"), ["comparator/decision/sensitivity"]),
    (_nan("gaincell/read_surface/current"), ["gaincell/read_surface/current", "NaN"]),
    (_nan("gaincell/write_read/v_stored"), ["gaincell/write_read/v_stored"]),
    (_nan("gaincell/retention/tau"), ["gaincell/retention/tau"]),
    (_nan("gaincell/monte_carlo/current"), ["gaincell/monte_carlo/current"]),
    (_nan("reram/patterns/current"), ["reram/patterns/current"]),
    (_nan("comparator/decision/offset"), ["comparator/decision/offset"]),
    (_nan("comparator/delay/delay"), ["comparator/delay/delay"]),
    (_set("gaincell/read_surface/current", np.array([b"a", b"b"])), ["gaincell/read_surface/current",
                                                                       "non-numeric"]),
    (_set("gaincell/read_surface/v_in", np.arange(3.0)), ["gaincell/read_surface/v_in", "does not match"]),
    (_set("reram/cell_iv/current", np.ones(5)), ["reram/cell_iv/current", "dimension"]),
    (_set("reram/transient/energy", np.ones(3)), ["reram/transient/energy", "one value"]),
    (_set("gaincell/read_surface/v_store", np.zeros(9)), ["gaincell/read_surface/v_store", "increasing"]),
    (_attr("gaincell/read_surface", "parameters", "{not json"), ["parameters", "gaincell/read_surface", "JSON"]),
    (_attr("reram/patterns", "parameters", None), ["parameters", "reram/patterns"]),
    (_attr("reram/patterns", "parameters", json.dumps({"circuit": {"rows": 8}})), ["circuit.sigma_g"]),
    (_attr("gaincell/write_read", "t_read_s", "soon"), ["t_read_s"]),
    (_attr("/", "schema", "something-else"), ["not an analogattn characterization"]),
]


@pytest.mark.parametrize("edit,needles", CHAR_CASES)
def test_damaged_characterization_refused_by_fit(char, tmp_path, edit, needles):
    bad = damaged_copy(char, tmp_path / "c.h5", edit)
    refused(lambda: fit_all(bad), bad, str(bad), *needles)


def test_not_hdf5_empty_truncated_characterization(char, tmp_path):
    for name, data in (("zero.h5", b""), ("text.h5", b"hello\n" * 100), ("trunc.h5", char.read_bytes()[:4096]),
                       ("half.h5", char.read_bytes()[: char.stat().st_size // 2])):
        p = tmp_path / name
        p.write_bytes(data)
        refused(lambda: fit_all(p), p, str(p))
    refused(lambda: fit_all(tmp_path / "none.h5"), tmp_path / "none.h5", "does not exist")
    empty = damaged_copy(char, tmp_path / "empty.h5", lambda f: [f.__delitem__(k) for k in list(f)])
    refused(lambda: fit_all(empty), empty, "holds no characterization")


def test_cli_fit_damaged_characterization_exit_2(char, tmp_path):
    bad = damaged_copy(char, tmp_path / "c.h5", _nan("gaincell/read_surface/current"))
    before = digest(bad)
    out = tmp_path / "s.h5"
    r = run_cli("fit", bad, "-o", out)
    _one_line_exit_2(r, str(bad), "gaincell/read_surface/current")
    assert not out.exists() and digest(bad) == before


# -- surrogate bundles -------------------------------------------------------------------------
BUNDLE_CASES = [
    (lambda f: f["gaincell.read_surface_table/table"].__setitem__((0, 0), np.nan),
     ["gaincell.read_surface_table", "table", "NaN"]),
    (_set("gaincell.read_surface_table/table", np.ones((1, 5))), ["gaincell.read_surface_table", "table"]),
    (_set("gaincell.write/x", np.array([0.5])), ["gaincell.write", "x"]),
    (_set("gaincell.write/y", np.array([b"x", b"y"])), ["gaincell.write", "y", "not numeric"]),
    (_del("reram.column/iv_current"), ["reram.column", "iv_current", "missing"]),
    (_set("reram.column/iv_current", np.ones((3, 2))), ["reram.column", "iv_current"]),
    (_set("gaincell.retention/tau", np.array([-1.0, 2.0])), ["gaincell.retention", "tau"]),
    (_set("comparator.probit/mu", np.ones(3)), ["comparator.probit", "mu"]),
    (_set("gaincell.read_surface_poly/center", np.ones(3)), ["gaincell.read_surface_poly", "center"]),
    (_attr("gaincell.write", "domain", "{bad"), ["gaincell.write", "domain"]),
    (_attr("gaincell.write", "kind", "constant"), ["gaincell.write", "table1d"]),
    (_attr("comparator.delay", "domain", json.dumps({"overdrive": [0, 1]})), ["comparator.delay", "overdrive"]),
]


@pytest.mark.parametrize("edit,needles", BUNDLE_CASES)
def test_damaged_bundle_refused_on_load(fitted, tmp_path, edit, needles):
    bad = damaged_copy(fitted, tmp_path / "b.h5", edit)
    refused(lambda: bundle.load(bad), bad, str(bad), *needles, cls=bundle.BundleError)


def test_bundle_missing_model_names_the_bundle(fitted, tmp_path):
    bad = damaged_copy(fitted, tmp_path / "b.h5", _del("reram.column"))
    b = bundle.load(bad)
    refused(lambda: b.need("reram.column"), bad, str(bad), "reram.column")
    for name, data in (("zero.h5", b""), ("trunc.h5", fitted.read_bytes()[:3000])):
        p = tmp_path / name
        p.write_bytes(data)
        refused(lambda: bundle.load(p), p, str(p), cls=bundle.BundleError)


# -- model loaders -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def gguf_file(tmp_path_factory):
    p = tmp_path_factory.mktemp("gguf") / "tiny.gguf"
    write_tiny_gguf(p)
    assert loaders.load(str(p)).config.n_layers == 2
    return p


def test_damaged_gguf(gguf_file, tmp_path):
    data = gguf_file.read_bytes()
    cases = {"zero.gguf": b"", "garbage.gguf": b"\x00garbage" * 500, "header.gguf": data[:24],
             "meta.gguf": data[:2000], "tensors.gguf": data[: len(data) - 4000]}
    for name, blob in cases.items():
        p = tmp_path / name
        p.write_bytes(blob)
        refused(lambda: loaders.load(str(p)), p, str(p))


def test_gguf_missing_tensor_and_metadata(tmp_path):
    import gguf
    weights, _ = write_tiny_gguf(tmp_path / "ref.gguf")
    r = gguf.GGUFReader(str(tmp_path / "ref.gguf"))

    def rewrite(path, drop_key=None, drop_tensor=None, reshape=None):
        w = gguf.GGUFWriter(str(path), "llama")
        for k, f in r.fields.items():
            if k.startswith("GGUF.") or k == "general.architecture" or k == drop_key:
                continue
            v = f.contents()
            vt = f.types[0]
            if vt == gguf.GGUFValueType.ARRAY:
                w.add_array(k, v)
            else:
                w.add_key_value(k, v, vt)
        for name, arr in weights.items():
            if name == drop_tensor:
                continue
            w.add_tensor(name, arr.reshape(-1) if name == reshape else arr)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        return path

    p = rewrite(tmp_path / "nokey.gguf", drop_key="llama.block_count")
    refused(lambda: loaders.load(str(p)), p, str(p), "llama.block_count")
    p = rewrite(tmp_path / "notok.gguf", drop_key="tokenizer.ggml.merges")
    refused(lambda: loaders.load(str(p)), p, str(p), "tokenizer.ggml.merges")
    p = rewrite(tmp_path / "notensor.gguf", drop_tensor="blk.1.attn_k.weight")
    refused(lambda: loaders.load(str(p)), p, str(p), "blk.1.attn_k.weight")
    p = rewrite(tmp_path / "shape.gguf", reshape="blk.0.ffn_up.weight")
    refused(lambda: loaders.load(str(p)), p, str(p), "ffn_up.weight", "shape")


@pytest.mark.parametrize("writer", [write_tiny_gpt2, write_tiny_bert])
def test_damaged_hf_folder(tmp_path, writer):
    good = tmp_path / "good"
    good.mkdir()
    writer(good)
    loaders.load(str(good))

    def variant(name, edit):
        d = tmp_path / name
        shutil.copytree(good, d)
        edit(d)
        return d

    d = variant("nocfg", lambda d: (d / "config.json").unlink())
    refused(lambda: loaders.load(str(d)), d, str(d), "config.json")
    d = variant("badjson", lambda d: (d / "config.json").write_text("{oops"))
    refused(lambda: loaders.load(str(d)), d / "config.json", "config.json", "not valid JSON")
    d = variant("listjson", lambda d: (d / "config.json").write_text("[1, 2]"))
    refused(lambda: loaders.load(str(d)), d / "config.json", "config.json", "JSON object")
    cfg = json.loads((good / "config.json").read_text())
    key = "n_layer" if "n_layer" in cfg else "num_hidden_layers"
    d = variant("nokey", lambda d: (d / "config.json").write_text(json.dumps({k: v for k, v in cfg.items()
                                                                                if k != key})))
    refused(lambda: loaders.load(str(d)), d / "config.json", "config.json", key)
    d = variant("noweights", lambda d: (d / "model.safetensors").unlink())
    refused(lambda: loaders.load(str(d)), d, "model.safetensors")
    for name, cut in (("zeroweights", 0), ("truncweights", 500)):
        d = variant(name, lambda d: (d / "model.safetensors").write_bytes(
            (good / "model.safetensors").read_bytes()[:cut]))
        refused(lambda: loaders.load(str(d)), d / "model.safetensors", "model.safetensors")
    d = variant("wide", lambda d: (d / "config.json").write_text(json.dumps({**cfg, key: cfg[key] + 1})))
    refused(lambda: loaders.load(str(d)), d / "model.safetensors", "model.safetensors", "no tensor")
    toks = [f for f in ("tokenizer.json", "vocab.json") if (good / f).exists()]
    if toks:
        d = variant("badtok", lambda d: (d / toks[0]).write_text("{broken"))
        refused(lambda: loaders.load(str(d)), d / toks[0], toks[0])

        def notok(d):
            for f in ("tokenizer.json", "vocab.json", "merges.txt", "vocab.txt"):
                if (d / f).exists():
                    (d / f).unlink()
        d = variant("notok", notok)
        refused(lambda: loaders.load(str(d)), d, "tokenizer")


def test_cli_run_truncated_gguf_exit_2(gguf_file, tmp_path):
    p = tmp_path / "t.gguf"
    p.write_bytes(gguf_file.read_bytes()[:5000])
    r = run_cli("run", "--model", p, "--text", __file__)
    _one_line_exit_2(r, str(p))


# -- calibration files -------------------------------------------------------------------------
SHAPES = {"k_step": ("L", "K"), "theta": ("L", "H"), "k_chan": ("L", "K", "D"), "r_diff": ("L", "K")}


class SprintScales:
    """The pruning kernel's calibration save/load (as attention.sprint.SprintScales calls calfile;
    that module is being restructured by another engineer, so the file functions are tested here
    directly)."""

    def __init__(self, k_step, k_chan, theta, r_diff=None):
        self.arrays = {"k_step": k_step, "k_chan": k_chan, "theta": theta, "r_diff": r_diff}

    def save(self, path, meta=None):
        calfile.save(path, "sprint", self.arrays, meta or {})

    @classmethod
    def load(cls, path, expect=None):
        arrays, _ = calfile.load(path, "sprint", ("k_step", "theta"), ("k_chan", "r_diff"), expect, shapes=SHAPES)
        return cls(**arrays)

    @property
    def theta(self):
        return self.arrays["theta"]


class Scalers:
    @classmethod
    def load(cls, path):
        return calfile.load(path, "gaincell", ("a_q",), ())


def _sprint_scales():
    return SprintScales(np.array([[0.5, 0.25]]), np.ones((1, 2, 16)), np.array([[0.1] * 6]), np.array([[1e4, 2e4]]))


def _attention_importable():
    r = subprocess.run([sys.executable, "-c", "import analogattn.cli as c; c.build_parser()"], capture_output=True)
    return r.returncode == 0


def test_damaged_calibration_files(tmp_path):
    good = tmp_path / "cal.npz"
    _sprint_scales().save(good, {"model": "tiny"})
    cases = {"zero.npz": b"", "text.npz": b"not a zip\n", "trunc.npz": good.read_bytes()[:200]}
    for name, blob in cases.items():
        p = tmp_path / name
        p.write_bytes(blob)
        refused(lambda: SprintScales.load(p), p, f"--calibration-file {p}", "not a readable calibration")
    arr = tmp_path / "array.npz"
    with open(arr, "wb") as fh:
        np.save(fh, np.ones(3))
    refused(lambda: SprintScales.load(arr), arr, "--calibration-file", str(arr))
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, theta=np.ones((1, 6)))
    refused(lambda: SprintScales.load(foreign), foreign, str(foreign), "no analogattn header")
    refused(lambda: Scalers.load(good), good, str(good), "'sprint' calibration")
    shaped = tmp_path / "shape.npz"
    SprintScales(np.array([[0.5, 0.25]]), np.ones((1, 3, 16)), np.array([[0.1] * 6]), None).save(shaped, {})
    refused(lambda: SprintScales.load(shaped), shaped, str(shaped), "k_chan")
    nan = tmp_path / "nan.npz"
    SprintScales(np.array([[np.nan, 0.25]]), None, np.array([[0.1] * 6]), None).save(nan, {})
    refused(lambda: SprintScales.load(nan), nan, str(nan), "k_step")
    refused(lambda: SprintScales.load(tmp_path), tmp_path, "--calibration-file", "not a file")


def test_calibration_save_never_overwrites_a_foreign_file(tmp_path):
    for name, blob in (("notes.txt", b"my notes\n"), ("empty.npz", b"")):
        p = tmp_path / name
        p.write_bytes(blob)
        refused(lambda: _sprint_scales().save(p, {}), p, "--calibration-file", str(p), "not an analogattn")
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, theta=np.ones((1, 6)))
    refused(lambda: _sprint_scales().save(foreign, {}), foreign, "refusing to overwrite")
    link = tmp_path / "dangling.npz"
    link.symlink_to(tmp_path / "nowhere")
    refused(lambda: _sprint_scales().save(link, {}), link, "link")
    assert not (tmp_path / "nowhere").exists()
    ours = tmp_path / "ours.npz"
    _sprint_scales().save(ours, {"model": "a"})
    _sprint_scales().save(ours, {"model": "b"})  # ours: replaced
    assert SprintScales.load(ours, expect={"model": "b"}).theta.shape == (1, 6)


def test_cli_run_foreign_calibration_file_exit_2(fitted, gguf_file, tmp_path):
    if not _attention_importable():  # the attention package is mid-restructuring in this tree
        pytest.skip("analogattn.cli cannot build its parser (attention modules being restructured)")
    cal = tmp_path / "cal.npz"
    cal.write_bytes(b"")
    r = run_cli("run", "--model", gguf_file, "--text", __file__, "--attention", "sprint", "--surrogates", fitted,
                "--calibration-file", cal, "--window", "16", "--max-scored", "16")
    _one_line_exit_2(r, f"--calibration-file {cal}")
    assert cal.read_bytes() == b""


def _one_line_exit_2(r, *needles):
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("analogattn: error:"), r.stderr
    assert "Traceback" not in r.stderr and "Traceback" not in r.stdout
    for n in needles:
        assert str(n) in lines[0], (n, lines[0])
