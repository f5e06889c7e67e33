"""Tokenizers built with the ``tokenizers`` package: from GGUF metadata (byte-level BPE),
a Hugging Face ``tokenizer.json``, or GPT-2's ``vocab.json`` + ``merges.txt``."""
from __future__ import annotations

import json
from pathlib import Path

from ..errors import AnalogAttnError


def read_json(path: Path) -> dict:
    """A JSON object from a file, or a one-line AnalogAttnError naming the file."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise AnalogAttnError(f"{path}: no such file") from None
    except OSError as e:
        raise AnalogAttnError(f"cannot read {path}: {e.strerror or e}") from None
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise AnalogAttnError(f"{path} is not UTF-8 JSON text") from None
    except ValueError as e:
        raise AnalogAttnError(f"{path} is not valid JSON ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise AnalogAttnError(f"{path} is not a JSON object (got {type(data).__name__})")
    return data


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:200] if text else type(e).__name__


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
    tokens, merges = fields.get("tokenizer.ggml.tokens"), fields.get("tokenizer.ggml.merges")
    for key, val in (("tokenizer.ggml.tokens", tokens), ("tokenizer.ggml.merges", merges)):
        if not isinstance(val, list) or not all(isinstance(t, str) for t in val):
            raise AnalogAttnError(f"GGUF metadata has no {key} (a list of strings)")
    if not tokens:
        raise AnalogAttnError("GGUF metadata has an empty tokenizer.ggml.tokens")
    if any(" " not in m for m in merges):
        raise AnalogAttnError("GGUF metadata tokenizer.ggml.merges holds an entry that is not 'left right'")
    merges = [tuple(m.split(" ", 1)) for m in merges]
    vocab = {t: i for i, t in enumerate(tokens)}
    try:
        tk = TK(models.BPE(vocab=vocab, merges=merges, fuse_unk=False))
    except Exception as e:  # the tokenizers library's own error type
        raise AnalogAttnError(f"GGUF tokenizer metadata is not a valid BPE ({_first_line(e)})") from None
    pre = fields.get("tokenizer.ggml.pre", "gpt2")
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if pre == "smollm":
        tk.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    else:
        tk.pre_tokenizer = byte_level
    tk.decoder = decoders.ByteLevel()
    types = fields.get("tokenizer.ggml.token_type")
    if types is not None and (not isinstance(types, list) or len(types) != len(tokens)
                              or not all(isinstance(t, int) for t in types)):
        raise AnalogAttnError("GGUF metadata tokenizer.ggml.token_type is not one whole number per token")
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
        read_json(folder / "tokenizer.json")  # readable JSON text, else a one-line error naming it
        try:
            tk = TK.from_file(str(folder / "tokenizer.json"))
        except Exception as e:  # the tokenizers library's own error type
            raise AnalogAttnError(f"{folder / 'tokenizer.json'} is not a valid tokenizer ({_first_line(e)})") from None
        tk.no_padding()
        if max_length:
            tk.enable_truncation(max_length)
        else:
            tk.no_truncation()
    elif (folder / "vocab.json").exists() and (folder / "merges.txt").exists():
        read_json(folder / "vocab.json")
        try:
            tk = TK(models.BPE.from_file(str(folder / "vocab.json"), str(folder / "merges.txt")))
        except Exception as e:  # the tokenizers library's own error type
            raise AnalogAttnError(f"{folder}: vocab.json + merges.txt are not a valid BPE ({_first_line(e)})") from None
        tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tk.decoder = decoders.ByteLevel()
    else:
        raise AnalogAttnError(f"{folder}: no tokenizer.json or vocab.json + merges.txt")
    eos = None
    cfg = folder / "config.json"
    if cfg.exists():
        eos = read_json(cfg).get("eos_token_id")
        if isinstance(eos, bool) or not isinstance(eos, int):
            eos = None  # a list of ids (newer configs) or anything else: no single end token
    return Tokenizer(tk, None, eos, add_special=add_special)
