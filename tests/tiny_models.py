"""Tiny randomly initialised models written in the real on-disk formats (GGUF, HF folders), and
naive reference implementations (per token, per head loops) to check the engine against."""
import json
import math

import numpy as np


def byte_unicode():
    """GPT-2's reversible byte -> printable character table (written from its definition)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def bpe_vocab():
    bu = byte_unicode()
    tokens = [bu[b] for b in range(256)]
    merges = [("t", "h"), ("th", "e"), (bu[ord(" ")], "the"), ("i", "n"), (bu[ord(" ")], "a")]
    tokens += ["".join(m) for m in merges]
    return tokens, merges


def write_tiny_gguf(path, seed=0, d=32, heads=4, kv=2, ff=48, layers=2):
    import gguf
    rng = np.random.default_rng(seed)
    tokens, merges = bpe_vocab()
    tokens = tokens + ["<|endoftext|>"]
    types = [1] * (len(tokens) - 1) + [3]
    V = len(tokens)
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(layers)
    w.add_context_length(128)
    w.add_embedding_length(d)
    w.add_feed_forward_length(ff)
    w.add_head_count(heads)
    w.add_head_count_kv(kv)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(V)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("smollm")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges([" ".join(m) for m in merges])
    w.add_eos_token_id(V - 1)
    weights = {}

    def add(name, arr):
        arr = arr.astype(np.float32)
        weights[name] = arr
        w.add_tensor(name, arr)

    hd = d // heads
    add("token_embd.weight", rng.normal(0, 0.5, (V, d)))
    for i in range(layers):
        add(f"blk.{i}.attn_norm.weight", 1 + 0.1 * rng.normal(size=d))
        add(f"blk.{i}.attn_q.weight", rng.normal(0, 0.3, (d, d)))
        add(f"blk.{i}.attn_k.weight", rng.normal(0, 0.3, (kv * hd, d)))
        add(f"blk.{i}.attn_v.weight", rng.normal(0, 0.3, (kv * hd, d)))
        add(f"blk.{i}.attn_output.weight", rng.normal(0, 0.3, (d, d)))
        add(f"blk.{i}.ffn_norm.weight", 1 + 0.1 * rng.normal(size=d))
        add(f"blk.{i}.ffn_gate.weight", rng.normal(0, 0.3, (ff, d)))
        add(f"blk.{i}.ffn_up.weight", rng.normal(0, 0.3, (ff, d)))
        add(f"blk.{i}.ffn_down.weight", rng.normal(0, 0.3, (d, ff)))
    add("output_norm.weight", 1 + 0.1 * rng.normal(size=d))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return weights, dict(d=d, heads=heads, kv=kv, ff=ff, layers=layers, eps=1e-5, base=10000.0)


def naive_llama(weights, cfg, ids):
    """Per-token, per-head loops. RoPE rotates pairs (2i, 2i+1) (GGUF layout)."""
    d, H, KV, L = cfg["d"], cfg["heads"], cfg["kv"], cfg["layers"]
    hd = d // H
    W = {k: v.astype(np.float64) for k, v in weights.items()}

    def rms(x, g):
        return x / math.sqrt((x * x).mean() + cfg["eps"]) * g

    def rope(vec, pos):
        out = vec.copy()
        for i in range(hd // 2):
            th = pos / cfg["base"] ** (2 * i / hd)
            a, b = vec[2 * i], vec[2 * i + 1]
            out[2 * i] = a * math.cos(th) - b * math.sin(th)
            out[2 * i + 1] = a * math.sin(th) + b * math.cos(th)
        return out

    xs = [W["token_embd.weight"][t].copy() for t in ids]
    for l in range(L):
        p = f"blk.{l}."
        ks, vs, qs = [], [], []
        for pos, x in enumerate(xs):
            h = rms(x, W[p + "attn_norm.weight"])
            q, k, v = W[p + "attn_q.weight"] @ h, W[p + "attn_k.weight"] @ h, W[p + "attn_v.weight"] @ h
            qs.append([rope(q[j * hd:(j + 1) * hd], pos) for j in range(H)])
            ks.append([rope(k[j * hd:(j + 1) * hd], pos) for j in range(KV)])
            vs.append([v[j * hd:(j + 1) * hd] for j in range(KV)])
        new = []
        for pos, x in enumerate(xs):
            heads = []
            for j in range(H):
                kvh = j // (H // KV)
                s = np.array([qs[pos][j] @ ks[t][kvh] / math.sqrt(hd) for t in range(pos + 1)])
                a = np.exp(s - s.max())
                a /= a.sum()
                heads.append(sum(a[t] * vs[t][kvh] for t in range(pos + 1)))
            x = x + W[p + "attn_output.weight"] @ np.concatenate(heads)
            h = rms(x, W[p + "ffn_norm.weight"])
            g = W[p + "ffn_gate.weight"] @ h
            x = x + W[p + "ffn_down.weight"] @ ((g / (1 + np.exp(-g))) * (W[p + "ffn_up.weight"] @ h))
            new.append(x)
        xs = new
    return np.array([rms(x, W["output_norm.weight"]) @ W["token_embd.weight"].T for x in xs])


def write_tiny_gpt2(folder, seed=0, d=24, heads=3, layers=2, n_pos=64):
    from safetensors.numpy import save_file
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    tokens, merges = bpe_vocab()
    V = len(tokens) + 1
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens + ["<|endoftext|>"])}))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
    (folder / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_layer": layers, "n_embd": d,
                                                    "n_head": heads, "vocab_size": V, "n_positions": n_pos,
                                                    "layer_norm_epsilon": 1e-5, "eos_token_id": V - 1}))
    W = {"wte.weight": rng.normal(0, 0.5, (V, d)), "wpe.weight": rng.normal(0, 0.1, (n_pos, d)),
         "ln_f.weight": 1 + 0.1 * rng.normal(size=d), "ln_f.bias": 0.1 * rng.normal(size=d)}
    for i in range(layers):
        s = f"h.{i}."
        W.update({s + "ln_1.weight": 1 + 0.1 * rng.normal(size=d), s + "ln_1.bias": 0.1 * rng.normal(size=d),
                  s + "attn.c_attn.weight": rng.normal(0, 0.3, (d, 3 * d)), s + "attn.c_attn.bias": 0.1 * rng.normal(size=3 * d),
                  s + "attn.c_proj.weight": rng.normal(0, 0.3, (d, d)), s + "attn.c_proj.bias": 0.1 * rng.normal(size=d),
                  s + "ln_2.weight": 1 + 0.1 * rng.normal(size=d), s + "ln_2.bias": 0.1 * rng.normal(size=d),
                  s + "mlp.c_fc.weight": rng.normal(0, 0.3, (d, 4 * d)), s + "mlp.c_fc.bias": 0.1 * rng.normal(size=4 * d),
                  s + "mlp.c_proj.weight": rng.normal(0, 0.3, (4 * d, d)), s + "mlp.c_proj.bias": 0.1 * rng.normal(size=d)})
    W = {k: v.astype(np.float32) for k, v in W.items()}
    save_file({"transformer." + k: v for k, v in W.items()}, str(folder / "model.safetensors"))
    return W, dict(d=d, heads=heads, layers=layers, eps=1e-5)


def _ln(x, g, b, eps):
    mu = x.mean()
    return (x - mu) / math.sqrt(((x - mu) ** 2).mean() + eps) * g + b


def naive_gpt2(W, cfg, ids):
    d, H, L = cfg["d"], cfg["heads"], cfg["layers"]
    hd = d // H
    W = {k: v.astype(np.float64) for k, v in W.items()}
    gelu = lambda x: 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))  # noqa: E731
    xs = [W["wte.weight"][t] + W["wpe.weight"][p] for p, t in enumerate(ids)]
    for l in range(L):
        s = f"h.{l}."
        qkv = [_ln(x, W[s + "ln_1.weight"], W[s + "ln_1.bias"], cfg["eps"]) @ W[s + "attn.c_attn.weight"]
               + W[s + "attn.c_attn.bias"] for x in xs]
        new = []
        for p, x in enumerate(xs):
            heads = []
            for j in range(H):
                sl = slice(j * hd, (j + 1) * hd)
                q = qkv[p][:d][sl]
                sc = np.array([q @ qkv[t][d:2 * d][sl] / math.sqrt(hd) for t in range(p + 1)])
                a = np.exp(sc - sc.max())
                a /= a.sum()
                heads.append(sum(a[t] * qkv[t][2 * d:][sl] for t in range(p + 1)))
            x = x + np.concatenate(heads) @ W[s + "attn.c_proj.weight"] + W[s + "attn.c_proj.bias"]
            h = _ln(x, W[s + "ln_2.weight"], W[s + "ln_2.bias"], cfg["eps"])
            x = x + gelu(h @ W[s + "mlp.c_fc.weight"] + W[s + "mlp.c_fc.bias"]) @ W[s + "mlp.c_proj.weight"] \
                + W[s + "mlp.c_proj.bias"]
            new.append(x)
        xs = new
    return np.array([_ln(x, W["ln_f.weight"], W["ln_f.bias"], cfg["eps"]) @ W["wte.weight"].T for x in xs])


def write_tiny_bert(folder, seed=0, d=24, heads=4, layers=2, ff=40, n_pos=64):
    from safetensors.numpy import save_file
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "the", "cat", "dog", "sat", "on", "mat", "a", "ran", "##s", "."]
    vocab = {w: i for i, w in enumerate(words)}
    tk = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tk.normalizer = normalizers.BertNormalizer(lowercase=True)
    tk.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tk.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    tk.save(str(folder / "tokenizer.json"))
    V = len(words)
    (folder / "config.json").write_text(json.dumps({"model_type": "bert", "num_hidden_layers": layers,
                                                    "hidden_size": d, "num_attention_heads": heads,
                                                    "intermediate_size": ff, "vocab_size": V,
                                                    "layer_norm_eps": 1e-12, "max_position_embeddings": n_pos}))
    e = "embeddings."
    W = {e + "word_embeddings.weight": rng.normal(0, 0.5, (V, d)), e + "position_embeddings.weight": rng.normal(0, 0.1, (n_pos, d)),
         e + "token_type_embeddings.weight": rng.normal(0, 0.1, (2, d)),
         e + "LayerNorm.weight": 1 + 0.1 * rng.normal(size=d), e + "LayerNorm.bias": 0.1 * rng.normal(size=d)}
    for i in range(layers):
        s = f"encoder.layer.{i}."
        for n, (o, inn) in {"attention.self.query": (d, d), "attention.self.key": (d, d), "attention.self.value": (d, d),
                            "attention.output.dense": (d, d), "intermediate.dense": (ff, d), "output.dense": (d, ff)}.items():
            W[s + n + ".weight"] = rng.normal(0, 0.3, (o, inn))
            W[s + n + ".bias"] = 0.1 * rng.normal(size=o)
        for n in ("attention.output.LayerNorm", "output.LayerNorm"):
            W[s + n + ".weight"] = 1 + 0.1 * rng.normal(size=d)
            W[s + n + ".bias"] = 0.1 * rng.normal(size=d)
    W = {k: v.astype(np.float32) for k, v in W.items()}
    save_file(W, str(folder / "model.safetensors"))
    return W, dict(d=d, heads=heads, layers=layers, eps=1e-12), tk


def naive_bert(W, cfg, ids):
    from scipy.special import erf
    d, H, L = cfg["d"], cfg["heads"], cfg["layers"]
    hd = d // H
    W = {k: v.astype(np.float64) for k, v in W.items()}
    e = "embeddings."
    xs = [_ln(W[e + "word_embeddings.weight"][t] + W[e + "position_embeddings.weight"][p]
              + W[e + "token_type_embeddings.weight"][0], W[e + "LayerNorm.weight"], W[e + "LayerNorm.bias"], cfg["eps"])
          for p, t in enumerate(ids)]
    for l in range(L):
        s = f"encoder.layer.{l}."
        lin = lambda x, n: W[s + n + ".weight"] @ x + W[s + n + ".bias"]  # noqa: E731
        q = [lin(x, "attention.self.query") for x in xs]
        k = [lin(x, "attention.self.key") for x in xs]
        v = [lin(x, "attention.self.value") for x in xs]
        new = []
        for p, x in enumerate(xs):
            heads = []
            for j in range(H):
                sl = slice(j * hd, (j + 1) * hd)
                sc = np.array([q[p][sl] @ k[t][sl] / math.sqrt(hd) for t in range(len(xs))])
                a = np.exp(sc - sc.max())
                a /= a.sum()
                heads.append(sum(a[t] * v[t][sl] for t in range(len(xs))))
            x = _ln(x + lin(np.concatenate(heads), "attention.output.dense"),
                    W[s + "attention.output.LayerNorm.weight"], W[s + "attention.output.LayerNorm.bias"], cfg["eps"])
            hmid = lin(x, "intermediate.dense")
            hmid = 0.5 * hmid * (1 + erf(hmid / math.sqrt(2)))
            x = _ln(x + lin(hmid, "output.dense"), W[s + "output.LayerNorm.weight"], W[s + "output.LayerNorm.bias"], cfg["eps"])
            new.append(x)
        xs = new
    return np.array(xs)
