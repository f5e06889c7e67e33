"""Benchmark: SmolLM2 prefill and decode speed, as ratios measured in this run.

    .venv/bin/python benchmarks/transformer.py [--text FILE]

- prefill tokens/s at windows 256 and 1024 with ideal attention, against the machine's float32
  matmul ceiling (measured now) and, when torch + transformers are installed, the Hugging Face
  implementation on the same tokens (target >= 0.9x);
- decode tokens/s with the KV cache, against Hugging Face ``generate`` (target >= 1.0x);
- peak resident memory of a SmolLM2 perplexity run in a fresh process (target <= 1.5 GB).
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
from _timing import best_of

ROOT = Path(__file__).resolve().parents[1]




def gemm_gflops():
    a = np.random.rand(1024, 576).astype(np.float32)
    b = np.random.rand(576, 3072).astype(np.float32)
    a @ b
    return 2 * 1024 * 576 * 3072 / best_of(lambda: a @ b, 5) / 1e9


def flops_per_token(cfg):
    d, kvd = cfg.d_model, cfg.n_kv_heads * cfg.head_dim
    per_layer = d * (d + 2 * kvd) + d * d + 3 * d * cfg.d_ff
    return 2 * (cfg.n_layers * per_layer + d * cfg.vocab)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--text", default=str(ROOT.parent / "shared" / "data" / "wikitext2_valid.txt"))
    ap.add_argument("--decode-tokens", type=int, default=32)
    a = ap.parse_args()
    from analogattn.evaluate.texts import read_text
    from analogattn.transformer.generate import generate
    from analogattn.transformer.loaders import load, smollm2_path

    text, path = read_text(a.text if Path(a.text).exists() else None)
    m = load("smollm2")
    ids = m.tokenizer.encode(text[:200000])
    gf = gemm_gflops()
    ceiling = gf * 1e9 / flops_per_token(m.config)
    print(f"float32 GEMM now: {gf:.0f} GFLOP/s -> weight-matmul ceiling {ceiling:.0f} tokens/s "
          f"({flops_per_token(m.config) / 1e9:.3f} GFLOP/token)")
    hf = None
    try:
        import torch
        import transformers
        torch.set_num_threads(2)
        p = smollm2_path()
        hf = transformers.AutoModelForCausalLM.from_pretrained(str(p.parent), gguf_file=p.name,
                                                               torch_dtype=torch.float32).eval()
    except Exception as e:  # optional reference
        print(f"Hugging Face reference not available ({type(e).__name__}); printing our numbers only")
    for w in (256, 1024):
        x = ids[:w]
        ours = w / best_of(lambda: m.forward(x))
        line = f"prefill window {w:5d}: ours {ours:7.1f} tok/s = {ours / ceiling:.2f} of ceiling"
        if hf is not None:
            import torch
            with torch.no_grad():
                ref = w / best_of(lambda: hf(torch.tensor([x])))
            line += f"; HF torch {ref:7.1f} tok/s; ratio {ours / ref:.2f}x (target >= 0.9x)"
        print(line)
    prompt = ids[:64]
    n = a.decode_tokens
    t_ours = best_of(lambda: generate(m, prompt, n, stop_at_eos=False), 2)
    line = f"decode ({n} tokens after a 64-token prompt): ours {n / t_ours:6.1f} tok/s"
    if hf is not None:
        import torch
        with torch.no_grad():
            t_ref = best_of(lambda: hf.generate(torch.tensor([prompt]), max_new_tokens=n, min_new_tokens=n,
                                                do_sample=False), 2)
        line += f"; HF generate {n / t_ref:6.1f} tok/s; ratio {t_ref / t_ours:.2f}x (target >= 1.0x)"
    print(line)
    r = subprocess.run([sys.executable, "-m", "analogattn.cli", "run", "--model", "smollm2", "--text", str(path),
                        "--window", "1024", "--max-scored", "2048", "-q"], capture_output=True, text=True)
    mem = re.search(r"peak memory (\d+) MB", r.stdout)
    print(f"perplexity run (window 1024): {r.stdout.strip().splitlines()[0] if r.stdout else r.stderr}")
    if mem:
        print(f"peak resident memory: {int(mem.group(1))} MB = {int(mem.group(1)) / 1536:.2f} of the 1.5 GB target")


if __name__ == "__main__":
    main()
