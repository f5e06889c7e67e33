"""Texts for evaluation: the ones that ship with the installed software (no network, no
../shared), checks that a text can give a meaningful result, and reading with a count of the
bytes that were not valid UTF-8."""
from __future__ import annotations

import codecs
import os
import sys
import sysconfig
from pathlib import Path

from ..errors import AnalogAttnError

CANDIDATES = [
    "/usr/share/common-licenses/GPL-3",  # Debian/Ubuntu base-files: ~35 kB of English prose
    str(Path(sysconfig.get_paths()["stdlib"]) / "LICENSE.txt"),  # CPython's licence text
    str(Path(sys.base_prefix) / "LICENSE.txt"),
]

SAMPLE_BYTES = 1 << 16
MIN_TEXT_CHARS = 16  # fewer non-space characters than this: no text to evaluate or calibrate on
MAX_BINARY_FRACTION = 0.10  # more control characters or undecodable bytes than this: not a text


def default_text_path() -> Path:
    for c in CANDIDATES:
        p = Path(c)
        if p.is_file() and p.stat().st_size > 10_000:
            return p
    raise AnalogAttnError("no default text found on this system; pass --text FILE")


def _bad_chars(s: str) -> int:
    """Characters that no prose holds: U+FFFD from undecodable bytes and C0/C1 controls other
    than tab, newline, carriage return and form feed."""
    n = 0
    for ch in s:
        o = ord(ch)
        if ch == "\ufffd" or (o < 32 and ch not in "\t\n\r\f") or 0x7F <= o < 0xA0:
            n += 1
    return n


def check_text(path, flag: str = "--text") -> Path:
    """A readable, non-empty, mostly printable UTF-8 text file, or a one-line error naming
    ``flag``. Looks at the start of the file only (cheap for any size)."""
    from ..userio import check_input_file
    p = check_input_file(path, flag, "text file")
    try:
        with open(p, "rb") as f:
            head = f.read(SAMPLE_BYTES)
            if not head.strip():
                rest = head
                while rest and not rest.strip():  # whitespace so far: look for any content
                    rest = f.read(SAMPLE_BYTES)
                if not rest.strip():
                    raise AnalogAttnError(f"{flag} {p}: the file is empty or only whitespace")
    except OSError as e:
        raise AnalogAttnError(f"{flag} {p}: cannot be read ({e.strerror})") from None
    if len(head) < SAMPLE_BYTES and len(b"".join(head.split())) < MIN_TEXT_CHARS:
        raise AnalogAttnError(f"{flag} {p}: near-empty ({len(b''.join(head.split()))} non-space characters; "
                              f"need at least {MIN_TEXT_CHARS})")
    if b"\0" in head[:4096] and head.count(b"\0") > len(head) // 100:
        raise AnalogAttnError(f"{flag} {p}: looks like a binary file (NUL bytes), not a text")
    dec = codecs.getincrementaldecoder("utf-8")("replace")
    s = dec.decode(head, final=len(head) < SAMPLE_BYTES)
    if s and _bad_chars(s) > MAX_BINARY_FRACTION * len(s):
        raise AnalogAttnError(f"{flag} {p}: mostly non-printable or not UTF-8 "
                              f"({_bad_chars(s)} of the first {len(s)} characters); not a text")
    return p


class CountingReader:
    """Text from a UTF-8 file in chunks; undecodable bytes become U+FFFD and are counted."""

    def __init__(self, path):
        self._f = open(path, "rb")
        self._dec = codecs.getincrementaldecoder("utf-8")("replace")
        self.replaced = 0
        self.chars = 0

    def read(self, n: int) -> str:
        out = ""
        while len(out) < n:
            raw = self._f.read(max(n - len(out), 1))
            part = self._dec.decode(raw, final=not raw)
            if not raw:
                out += part
                break
            out += part
        # count only replacement characters the decoder made is not possible from the text alone;
        # a file that really holds U+FFFD is rare enough to be counted with them
        self.replaced += out.count("\ufffd")
        self.chars += len(out)
        return out

    def close(self):
        self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def replacement_warning(flag: str, path, replaced: int) -> str | None:
    if replaced:
        return (f"{flag} {path}: {replaced} character(s) were not valid UTF-8 and were read as U+FFFD "
                f"(the text is scored as read)")
    return None


def read_text(path: str | Path | None, max_chars: int | None = None, flag: str = "--text") -> tuple[str, Path]:
    p = Path(path) if path else default_text_path()
    try:
        with CountingReader(p) as r:
            text = r.read(max_chars if max_chars else os.path.getsize(p) + 4)
            w = replacement_warning(flag, p, r.replaced)
    except OSError as e:
        raise AnalogAttnError(f"{flag} {p}: {e.strerror}") from None
    if w:
        print(f"warning: {w}", file=sys.stderr)
    if not text.strip():
        raise AnalogAttnError(f"{flag} {p}: the file is empty")
    return text, p


def read_tail(path, n_chars: int) -> tuple[str, bool]:
    """The last ``n_chars`` characters of a text (cut to start at a line when the text is longer
    than 2 n_chars), read without loading the whole file; and whether the text is that short."""
    p = Path(path)
    size = p.stat().st_size
    with open(p, "rb") as f:
        if size > 8 * n_chars + 8:
            f.seek(size - 4 * n_chars - 8)  # UTF-8: at most 4 bytes a character
        raw = f.read()
    text = raw.decode("utf-8", errors="replace")
    if size <= 8 * n_chars + 8 and len(text) <= 2 * n_chars:
        return text, True
    tail = text[-n_chars:]
    return tail[tail.find("\n") + 1:], False
