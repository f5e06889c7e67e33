"""Tokenizers built with the ``tokenizers`` package: from GGUF metadata (byte-level BPE),
a Hugging Face ``tokenizer.json``, or GPT-2's ``vocab.json`` + ``merges.txt``."""
from __future__ import annotations

import json
from pathlib import Path

from ..errors import AnalogAttnError


def _require():
    try:
        import tokenizers  # noqa: F401 (presence check)
    except ImportError:
        raise AnalogAttnError("the 'tokenizers' package is missing: pip install 'analogattn[models]'") from None


class Tokenizer:
    def __init__(self, tk, bos: int | None = None, eos: int | None = None, add_special: bool = False):
        self.tk = tk
        self.bos, self.eos = bos, eos
        self.add_special = add_special

    def encode(self, text: str) -> list[int]:
        return self.tk.encode(text, add_special_tokens=self.add_special).ids

    def decode(self, ids) -> str:
        return self.tk.decode(list(map(int, ids)), skip_special_tokens=False)

    @property
    def vocab_size(self) -> int:
        return self.tk.get_vocab_size()


def from_gguf_metadata(fields: dict) -> Tokenizer:
    """GPT-2-style byte-level BPE from ``tokenizer.ggml.*``. The "smollm" pre-tokenizer splits
    digits individually before the byte-level split (as SmolLM2's tokenizer.json does)."""
    _require()
    from tokenizers import AddedToken, decoders, models, pre_tokenizers
    from tokenizers import Tokenizer as TK

    if fields.get("tokenizer.ggml.model") != "gpt2":
        raise AnalogAttnError(f"unsupported GGUF tokenizer model {fields.get('tokenizer.ggml.model')!r} "
                              "(supported: gpt2 byte-level BPE)")
    tokens = fields["tokenizer.ggml.tokens"]
    merges = [tuple(m.split(" ", 1)) for m in fields["tokenizer.ggml.merges"]]
    vocab = {t: i for i, t in enumerate(tokens)}
    tk = TK(models.BPE(vocab=vocab, merges=merges, fuse_unk=False))
    pre = fields.get("tokenizer.ggml.pre", "gpt2")
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if pre == "smollm":
        tk.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    else:
        tk.pre_tokenizer = byte_level
    tk.decoder = decoders.ByteLevel()
    types = fields.get("tokenizer.ggml.token_type")
    if types is not None:
        special = [AddedToken(tokens[i], special=True, normalized=False)
                   for i, ty in enumerate(types) if int(ty) == 3]  # 3 = control token
        tk.add_special_tokens(special)
    return Tokenizer(tk, fields.get("tokenizer.ggml.bos_token_id"), fields.get("tokenizer.ggml.eos_token_id"),
                     add_special=bool(fields.get("tokenizer.ggml.add_bos_token", False)))


def from_folder(folder: Path, add_special: bool, max_length: int | None = None) -> Tokenizer:
    """A Hugging Face folder: ``tokenizer.json``, else GPT-2's ``vocab.json`` + ``merges.txt``."""
    _require()
    from tokenizers import Tokenizer as TK
    from tokenizers import decoders, models, pre_tokenizers

    folder = Path(folder)
    if (folder / "tokenizer.json").exists():
        tk = TK.from_file(str(folder / "tokenizer.json"))
        tk.no_padding()
        if max_length:
            tk.enable_truncation(max_length)
        else:
            tk.no_truncation()
    elif (folder / "vocab.json").exists() and (folder / "merges.txt").exists():
        tk = TK(models.BPE.from_file(str(folder / "vocab.json"), str(folder / "merges.txt")))
        tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tk.decoder = decoders.ByteLevel()
    else:
        raise AnalogAttnError(f"{folder}: no tokenizer.json or vocab.json + merges.txt")
    eos = None
    cfg = folder / "config.json"
    if cfg.exists():
        eos = json.loads(cfg.read_text()).get("eos_token_id")
    return Tokenizer(tk, None, eos, add_special=add_special)
