"""Designs shipped as package data: ``analogattn.designs.path("sky130")`` is the TOML file of the
shipped design ``sky130``; ``python -m analogattn.designs [name]`` prints the shipped names or a
design's path (for ``analogattn characterize --design "$(python -m analogattn.designs sky130)"``)."""
from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path


def names() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files(__name__).iterdir() if p.name.endswith(".toml"))


def path(name: str) -> Path | None:
    """The shipped design ``name`` (with or without ``.toml``), or None."""
    stem = name[:-5] if name.endswith(".toml") else name
    if stem not in names():
        return None
    return Path(str(resources.files(__name__).joinpath(stem + ".toml")))


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        print("\n".join(names()))
        return 0
    p = path(argv[0])
    if p is None:
        print(f"no shipped design {argv[0]!r} (shipped: {', '.join(names())})", file=sys.stderr)
        return 2
    print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
