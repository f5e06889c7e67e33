"""Texts for evaluation that ship with the installed software (no network, no ../shared)."""
from __future__ import annotations

import sys
import sysconfig
from pathlib import Path

from ..errors import AnalogAttnError

CANDIDATES = [
    "/usr/share/common-licenses/GPL-3",  # Debian/Ubuntu base-files: ~35 kB of English prose
    str(Path(sysconfig.get_paths()["stdlib"]) / "LICENSE.txt"),  # CPython's licence text
    str(Path(sys.base_prefix) / "LICENSE.txt"),
]


def default_text_path() -> Path:
    for c in CANDIDATES:
        p = Path(c)
        if p.is_file() and p.stat().st_size > 10_000:
            return p
    raise AnalogAttnError("no default text found on this system; pass --text FILE")


def read_text(path: str | Path | None, max_chars: int | None = None) -> tuple[str, Path]:
    p = Path(path) if path else default_text_path()
    try:
        text = p.read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        raise AnalogAttnError(f"--text {p}: {e.strerror}") from None
    if max_chars:
        text = text[:max_chars]
    if not text.strip():
        raise AnalogAttnError(f"--text {p}: the file is empty")
    return text, p
