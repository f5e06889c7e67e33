"""Bad and edge-case invocations of every subcommand, generated from the options' parameter
metadata (every numeric option at and beyond both ends of its range, NaN, inf, strings; every
choice option with a bogus value; every kernel option given to a kernel that does not use it)
plus hand-written file cases (truncated, zero-byte, wrong schema, binary, directories, outputs
that are not ours). Used by tests/test_cli_contract.py and scripts/cli_fuzz_report.py.

A case is (id, command, class, argv, must_name, env): argv holds ``{fx}`` for the fixture folder
made by :func:`make_fixtures`; ``must_name`` is a text the one-line error must contain (the option
or the file).
"""
from __future__ import annotations

import dataclasses
import os
import typing
from pathlib import Path


@dataclasses.dataclass(frozen=True)
class Case:
    id: str
    command: str
    klass: str
    argv: tuple
    must_name: str
    env: tuple = ()

    def resolved(self, fx: Path):
        return [str(a).replace("{fx}", str(fx)) for a in self.argv], self.must_name.replace("{fx}", str(fx))


PROSE = ("The storage capacitor holds the key as a voltage, and the read transistors turn it into a current "
         "that the bit line sums over every row of the array. ")


# bad process tables: name -> (text replaced in a good table, replacement; "" = prepended)
PROCESS_TABLE_EDITS = {
    "ok": ("", ""),
    "unknown_key": ("", "bogus = 1\n"),
    "missing_library": ('"ptable_models.lib"', '"no_such.lib"'),
    "device_absent": ('nmos = "nch"', 'nmos = "nch_hvt"'),
    "bad_role": ('nmos = "nch"', 'nfet = "nch"'),
    "vdd_reversed": ("[0.5, 1.5]", "[1.5, 0.5]"),
    "instantiation": ('"model"', '"macro"'),
    "no_package": ("", 'root = { package = "no_such_pdk_package" }\n'),
    "not_toml": ("", "[devices\n"),
}


def make_fixtures(fx: Path) -> Path:
    """Every file the cases refer to, in folder ``fx`` (tiny models, texts, corrupted files)."""
    import h5py
    import numpy as np

    from tiny_models import write_tiny_gguf, write_tiny_gpt2
    fx.mkdir(parents=True, exist_ok=True)
    (fx / "text.txt").write_text("\n".join(PROSE * 3 for _ in range(30)))
    (fx / "empty.txt").write_bytes(b"")
    (fx / "ws.txt").write_text("   \n\n\t  \n")
    (fx / "one.txt").write_text("x")
    rng = np.random.default_rng(0)
    (fx / "binary.bin").write_bytes(bytes(rng.integers(0, 256, 4096, dtype=np.uint8)))
    (fx / "latin1.txt").write_bytes(bytes(rng.integers(0x80, 0x100, 4096, dtype=np.uint8)))
    (fx / "controls.txt").write_bytes(bytes(rng.integers(1, 9, 4096, dtype=np.uint8)))
    (fx / "adir").mkdir(exist_ok=True)
    (fx / "precious.txt").write_text("my notes: do not overwrite\n")
    with h5py.File(fx / "foreign.h5", "w") as f:
        f["data"] = np.arange(10.0)
        f.attrs["schema"] = "somebody-else"
    (fx / "zero.h5").write_bytes(b"")
    (fx / "garbage.h5").write_bytes(bytes(rng.integers(0, 256, 5000, dtype=np.uint8)))
    real = (fx / "foreign.h5").read_bytes()
    (fx / "truncated.h5").write_bytes(real[: len(real) // 3])
    write_tiny_gguf(fx / "tiny.gguf")
    g = (fx / "tiny.gguf").read_bytes()
    (fx / "empty.gguf").write_bytes(b"")
    (fx / "garbage.gguf").write_bytes(bytes(rng.integers(0, 256, 4096, dtype=np.uint8)))
    (fx / "truncated.gguf").write_bytes(g[: len(g) // 2])
    (fx / "header.gguf").write_bytes(g[:64])
    write_tiny_gpt2(fx / "gpt2")
    (fx / "noconfig").mkdir(exist_ok=True)
    (fx / "badjson").mkdir(exist_ok=True)
    (fx / "badjson" / "config.json").write_text("{not json")
    (fx / "zero.npz").write_bytes(b"")
    (fx / "garbage.npz").write_bytes(b"PK\x03\x04" + bytes(rng.integers(0, 256, 500, dtype=np.uint8)))
    (fx / "foreign.json").write_text('{"my": "data"}')
    designs = {
        "aot.toml": "[[gaincell]]\nc_store = 2e-15\n",
        "nontable.toml": "gaincell = 3\n",
        "syntax.toml": "[gaincell\nc_store = 2e-15\n",
        "unknown_table.toml": "[bogus]\nx = 1\n",
        "unknown_key.toml": "[gaincell]\nbogus = 1\n",
        "string_value.toml": "[gaincell]\nc_store = \"big\"\n",
        "negative_cap.toml": "[gaincell]\nc_store = -1e-15\n",
        "nan_value.toml": "[gaincell]\nc_store = nan\n",
        "vcm_above_vdd.toml": "[comparator]\nvcm = 5.0\n",
        "sweep_table.toml": "[gaincell.sweep]\nn_store = 1\n",
        "simulator_bad.toml": "[simulator]\nreltol = 10.0\n",
        "model_missing.toml": "[gaincell.technology]\nmodel_file = \"{fx}/no_such_models.lib\"\n",
        "model_empty.toml": "[gaincell.technology]\nmodel_file = \"{fx}/empty.txt\"\n",
        "model_garbage.toml": "[gaincell.technology]\nmodel_file = \"{fx}/binary.bin\"\n",
        "model_nodevices.toml": "[gaincell.technology]\nmodel_file = \"{fx}/text.txt\"\n",
    }
    for name, body in designs.items():
        (fx / name).write_text(body.replace("{fx}", str(fx)))
    # process tables (circuits/process_table.py), each selected by a design beside it (a relative path)
    (fx / "ptable_models.lib").write_text(".model nch nmos level=54\n.model pch pmos level=54\n")
    table = ('instantiation = "model"\nincludes = ["ptable_models.lib"]\ncorners = ["tt"]\nvdd_range = [0.5, 1.5]\n'
             '[devices]\nnmos = "nch"\npmos = "pch"\n')
    for name, (old, new) in PROCESS_TABLE_EDITS.items():
        (fx / f"ptable_{name}.toml").write_text(table.replace(old, new) if old else new + table)
        (fx / f"proc_{name}.toml").write_text(f'[reram.technology]\nprocess = "ptable_{name}.toml"\n')
    (fx / "proc_corner.toml").write_text('[reram.technology]\nprocess = "ptable_ok.toml"\ncorner = "ff"\n')
    for name, body in {"kcfg_unknown.toml": "[array]\nbogus = 1\n", "kcfg_range.toml": "[array]\nstorage_levels = 1\n",
                       "kcfg_table.toml": "[bogus]\nx = 1\n", "kcfg_window.toml": "[array]\nwindow = 64\n"}.items():
        (fx / name).write_text(body)
    (fx / "nonutf8.toml").write_bytes(b"[gaincell]\nc_store = 2e-15 # \xff\xfe\n")
    (fx / "bundle_stub.h5").write_bytes(real)  # exists; only for cases that fail before reading it
    ok = (f'[sweep]\nstrategy = "grid"\n[axes]\nkernel.storage_levels = [8, 16]\n[evaluation]\n'
          f'model = "{fx}/tiny.gguf"\ntext = "{fx}/text.txt"\nwindow = 32\nmax_scored = 64\n')
    (fx / "sweep_ok.toml").write_text(ok)
    sweeps = {
        "unknown_key": ok.replace("window = 32", "window = 32\nbogus = 1"),
        "unknown_table": ok + "[bogus]\nx = 1\n",
        "empty_axis": ok.replace("[8, 16]", "[]"),
        "no_axes": ok.replace("kernel.storage_levels = [8, 16]", ""),
        "out_of_range": ok.replace("[8, 16]", "[8, 70000]"),
        "design_out_of_range": ok.replace("[axes]", "[axes]\ngaincell.c_store = [1e-15, 1.0]"),
        "range_out_of_range": ok.replace("[axes]", "[axes]\ngaincell.c_store = { low = 1e-15, high = 5.0, steps = 2 }"),
        "range_no_steps": ok.replace("[axes]", "[axes]\ngaincell.c_store = { low = 1e-15, high = 4e-14 }"),
        "unknown_strategy": ok.replace('"grid"', '"simulated_annealing"'),
        "kernel_unused_axis": ok.replace("[8, 16]", "[8, 16]\nkernel.keep = [0.2, 0.3]"),
        "family_unused_axis": ok.replace("[axes]", "[axes]\nreram.rows = [32, 64]"),
        "unknown_design_key": ok.replace("[axes]", "[axes]\ngaincell.bogus = [1, 2]"),
        "seed_axis": ok.replace("[8, 16]", "[8, 16]\nkernel.seed = [1, 2]"),
        "bad_objective": ok + "objectives = [\"speed\"]\n",
        "bad_corner": ok + "[chips]\nn = 2\ncorners = [\"xx\"]\n",
        "zero_chips": ok + "[chips]\nn = 0\n",
        "bad_attention": ok.replace("window = 32", "attention = \"bogus\"\nwindow = 32"),
        "missing_model": ok.replace("tiny.gguf", "nope.gguf"),
        "syntax": ok.replace("[axes]", "[axes"),
        **{f"link_{k}": ok.replace("[axes]", '[axes]\n"gaincell.w_read_p" = [0.6, 1.2]') + "[axes.links]\n" + v
           for k, v in {"unknown_key": '"gaincell.bogus" = { follow = "gaincell.w_read_p" }\n',
                        "unknown_follow": '"gaincell.w_read_n" = { follow = "gaincell.nope", scale = 0.2 }\n',
                        "bad_scale": '"gaincell.w_read_n" = { follow = "gaincell.w_read_p", scale = "half" }\n',
                        "not_table": '"gaincell.w_read_n" = 0.2\n',
                        "out_of_range": '"gaincell.w_read_n" = { follow = "gaincell.w_read_p", scale = 100.0 }\n',
                        "non_numeric": '"gaincell.technology.corner" = { follow = "gaincell.w_read_p" }\n',
                        "axis_twice": '"gaincell.w_read_p" = { follow = "kernel.storage_levels" }\n'}.items()},
    }
    for name, body in sweeps.items():
        (fx / f"sweep_{name}.toml").write_text(body)
    return fx


def _leaves(cls):
    from analogattn.cli import _leaves as leaves
    return leaves(cls)


def _base(t):
    from analogattn.cli import _base_type
    t = _base_type(t)
    if typing.get_origin(t) is tuple:
        t = [a for a in typing.get_args(t) if a is not Ellipsis][0]
    return t


def _bad_values(f, t):
    """(label, value) pairs outside the field's range or of the wrong kind."""
    m = f.metadata
    t = _base(t)
    out = []
    if m.get("choices") is not None:
        return [("bogus_choice", "bogus")]
    if t not in (int, float):
        return out
    lo, hi, off = m.get("lo"), m.get("hi"), m.get("off")
    if m.get("lo_open"):
        out.append(("at_open_min", repr(lo)))
    if m.get("hi_open"):
        out.append(("at_open_max", repr(hi)))
    if t is int:
        if lo is not None and int(lo) - 1 != off:
            out.append(("below_min", str(int(lo) - 1)))
        if off is not None and lo is not None and off - 1 < lo:
            out.append(("below_off", str(int(off) - 1)))
        if hi is not None:
            out.append(("above_max", str(int(hi) + 1)))
        out += [("fraction", "1.5"), ("nan", "nan"), ("string", "abc")]
    else:
        if lo is not None:
            out.append(("below_min", repr(lo - (abs(lo) * 0.01 or 1e-6))))
        if hi is not None:
            out.append(("above_max", repr(hi + (abs(hi) * 0.01 or 1e-6))))
        out += [("nan", "nan"), ("inf", "inf"), ("minus_inf", "-inf"), ("string", "abc")]
    return out


def _prefix(command):
    """Arguments that make a command otherwise valid, so the error comes from the option."""
    return {
        "characterize": ["characterize", "-o", "{fx}/out_char.h5", "--cache-dir", "{fx}/cache"],
        "fit": ["fit", "{fx}/foreign.h5", "-o", "{fx}/out_bundle.h5"],
        "run": ["run", "--model", "{fx}/tiny.gguf", "--text", "{fx}/text.txt"],
        "generate": ["generate", "--model", "{fx}/tiny.gguf", "--prompt", "the cell"],
        "demo": ["demo", "--outdir", "{fx}/demo_out"],
        "sweep": ["sweep", "{fx}/sweep_ok.toml", "-o", "{fx}/sweep_out", "--cache-dir", "{fx}/cache"],
    }[command]


def cases() -> list[Case]:
    from analogattn import cli
    out: list[Case] = []

    def add(cid, command, klass, argv, must, env=()):
        out.append(Case(cid, command, klass, tuple(argv), must, tuple(env)))

    # --- every command's own options, from their metadata --------------------------------------
    for command, (cls, _) in cli.COMMANDS.items():
        for path, f, t in _leaves(cls):
            name = path[-1]
            flag = "--" + name.replace("_", "-")
            for label, v in _bad_values(f, t):
                argv = _prefix(command) + ([v] if (command, name) == ("fit", "characterization") else [flag, v])
                if command == "fit" and name == "characterization":
                    argv = ["fit", v, "-o", "{fx}/out_bundle.h5"]
                    must = v
                else:
                    must = flag
                add(f"{command}:{name}:{label}", command, "option range", argv, must)

    # --- kernel options: out of range with their kernel, and given to a kernel that does not use them
    from analogattn.attention import registry
    owners = cli.kernel_options()
    kernels = list(registry.names())
    for n, uses in sorted(owners.items()):
        flag = "--" + n.replace("_", "-")
        kname, f, t = uses[0]
        for command in ("run", "generate"):
            base = _prefix(command) + ["--attention", kname, "--surrogates", "{fx}/bundle_stub.h5"]
            for label, v in _bad_values(f, t):
                add(f"{command}:{n}:{label}", command, "option range", base + [flag, v], flag)
        users = {u[0] for u in uses}
        for other in kernels:
            if other in users:
                continue
            _, f0, t0 = uses[0]
            t0 = _base(t0)
            val = ([] if t0 is bool else [str(f0.default) if f0.default is not None else "{fx}/text.txt"])
            if t0 is bool:
                val = []
            extra = ["--surrogates", "{fx}/bundle_stub.h5"] if registry.get(other).needs_bundle else []
            add(f"run:{n}:given_to_{other}", "run", "option of another kernel",
                _prefix("run") + ["--attention", other] + extra + [flag] + val, flag)

    # --- hand-written: files, outputs, texts, models, designs ----------------------------------
    R = _prefix("run")
    G = _prefix("generate")
    C = ["characterize", "-o", "{fx}/out_char.h5", "--cache-dir", "{fx}/cache"]
    for name in ("aot", "nontable", "syntax", "unknown_table", "unknown_key", "string_value", "negative_cap",
                 "nan_value", "vcm_above_vdd", "sweep_table", "simulator_bad", "nonutf8", "model_missing",
                 "model_empty", "model_garbage", "model_nodevices"):
        add(f"characterize:design:{name}", "characterize", "bad design file", C + ["--design", f"{{fx}}/{name}.toml"],
            f"{name}.toml" if not name.startswith("model_") else "{fx}/")
    for name, must in (("adir", "adir"), ("missing.toml", "missing.toml"), ("binary.bin", "binary.bin")):
        add(f"characterize:design:{name}", "characterize", "bad design file", C + ["--design", f"{{fx}}/{name}"], must)
    for name in PROCESS_TABLE_EDITS:
        if name != "ok":
            add(f"characterize:process_table:{name}", "characterize", "bad design file",
                C + ["--design", f"{{fx}}/proc_{name}.toml"], f"{{fx}}/ptable_{name}.toml")
    add("characterize:process_table:unknown_corner", "characterize", "bad design file",
        C + ["--design", "{fx}/proc_corner.toml"], "corner = 'ff'")
    for name in ("adir", "precious.txt", "foreign.h5"):
        add(f"characterize:output:{name}", "characterize", "output not ours",
            ["characterize", "-o", f"{{fx}}/{name}", "--cache-dir", "{fx}/cache"], name)
    add("characterize:output:no_parent", "characterize", "output not ours",
        ["characterize", "-o", "{fx}/nowhere/x.h5", "--cache-dir", "{fx}/cache"], "nowhere")
    add("characterize:cache:is_file", "characterize", "output not ours",
        ["characterize", "-o", "{fx}/out_char.h5", "--cache-dir", "{fx}/precious.txt"], "precious.txt")
    add("characterize:cache:env_is_file", "characterize", "output not ours",
        ["characterize", "-o", "{fx}/out_char.h5"], "precious.txt", env=(("ANALOGATTN_CACHE", "{fx}/precious.txt"),))
    for bad in ("3", "0", "two", "-1", "1.5"):  # the lane count a forward pass works on
        add(f"run:env:lanes:{bad}", "run", "option range",
            ["run", "--model", "{fx}/tiny.gguf", "--text", "{fx}/text.txt"], "ANALOGATTN_LANES",
            env=(("ANALOGATTN_LANES", bad),))
    for only in ("bogus", "gaincell.bogus", "reram.", ","):
        add(f"characterize:only:{only}", "characterize", "option range", C + ["--only", only], "--only")
    for name in ("zero.h5", "garbage.h5", "truncated.h5", "foreign.h5", "adir", "missing.h5", "text.txt"):
        add(f"fit:characterization:{name}", "fit", "bad input file", ["fit", f"{{fx}}/{name}", "-o", "{fx}/out_bundle.h5"],
            name)
    for name in ("adir", "precious.txt", "foreign.h5", "nowhere/b.h5"):
        add(f"fit:output:{name}", "fit", "output not ours", ["fit", "{fx}/foreign.h5", "-o", f"{{fx}}/{name}"],
            name.split("/")[0])
    add("fit:plot:is_file", "fit", "output not ours", ["fit", "{fx}/foreign.h5", "-o", "{fx}/b.h5", "--plot",
                                                       "{fx}/precious.txt"], "precious.txt")
    for name, must in (("empty.txt", "empty.txt"), ("ws.txt", "ws.txt"), ("binary.bin", "binary.bin"),
                       ("latin1.txt", "latin1.txt"), ("controls.txt", "controls.txt"), ("adir", "adir"),
                       ("missing.txt", "missing.txt"), ("one.txt", "one.txt")):
        add(f"run:text:{name}", "run", "bad text", ["run", "--model", "{fx}/tiny.gguf", "--text", f"{{fx}}/{name}"],
            must)
        add(f"run:text_gaincell:{name}", "run", "bad text",
            ["run", "--model", "{fx}/tiny.gguf", "--attention", "gaincell", "--surrogates", "{fx}/bundle_stub.h5",
             "--text", f"{{fx}}/{name}"], must)
        if name != "one.txt":
            add(f"run:calibration_text:{name}", "run", "bad text",
                R + ["--attention", "sprint", "--surrogates", "{fx}/bundle_stub.h5", "--calibration-text",
                     f"{{fx}}/{name}"], must)
    for name in ("empty.gguf", "garbage.gguf", "truncated.gguf", "header.gguf", "noconfig", "badjson",
                 "missing.gguf", "text.txt"):
        add(f"run:model:{name}", "run", "bad model file", ["run", "--model", f"{{fx}}/{name}", "--text", "{fx}/text.txt"],
            name)
        add(f"generate:model:{name}", "generate", "bad model file",
            ["generate", "--model", f"{{fx}}/{name}", "--prompt", "the"], name)
    for name in ("zero.h5", "garbage.h5", "truncated.h5", "foreign.h5", "adir", "missing.h5"):
        for k in ("gaincell", "sprint"):
            add(f"run:surrogates_{k}:{name}", "run", "bad input file",
                R + ["--attention", k, "--surrogates", f"{{fx}}/{name}"], name)
    for name in ("zero.npz", "garbage.npz", "precious.txt", "adir", "nowhere/c.npz"):
        add(f"run:calibration_file:{name}", "run", "output not ours",
            R + ["--attention", "sprint", "--surrogates", "{fx}/bundle_stub.h5", "--calibration-file",
                 f"{{fx}}/{name}"], name.split("/")[0])
    for name in ("precious.txt", "foreign.json", "adir", "nowhere/r.json"):
        add(f"run:json:{name}", "run", "output not ours", R + ["--json", f"{{fx}}/{name}"], name.split("/")[0])
    add("run:surrogates_with_ideal", "run", "option of another kernel", R + ["--surrogates", "{fx}/bundle_stub.h5"],
        "--surrogates")
    add("run:gaincell_without_surrogates", "run", "missing option", R + ["--attention", "gaincell"], "--surrogates")
    add("run:stride_above_window", "run", "option range", R + ["--window", "16", "--stride", "17"], "--stride")
    add("run:max_sentences_causal", "run", "option of another model", R + ["--max-sentences", "3"], "--max-sentences")
    add("run:unknown_option", "run", "unknown option", R + ["--bogus", "1"], "--bogus")
    add("run:temperature_in_run", "run", "unknown option", R + ["--temperature", "1"], "--temperature")
    add("generate:prompt_empty", "generate", "bad text", ["generate", "--model", "{fx}/tiny.gguf", "--prompt", ""],
        "--prompt")
    add("generate:prompt_blank", "generate", "bad text", ["generate", "--model", "{fx}/tiny.gguf", "--prompt", "  "],
        "--prompt")
    add("generate:prompt_missing", "generate", "missing option", ["generate", "--model", "{fx}/tiny.gguf"], "--prompt")
    add("generate:top_k_above_vocab", "generate", "option range", G + ["--top-k", "100000"], "--top-k")
    add("generate:beyond_context", "generate", "option range", G + ["--max-new-tokens", "1000"], "--max-new-tokens")
    add("generate:text_with_ideal", "generate", "option of another kernel", G + ["--text", "{fx}/text.txt"], "--text")
    add("generate:encoder_model", "generate", "bad model file", ["generate", "--model", "{fx}/noconfig", "--prompt",
                                                                 "x"], "noconfig")
    # generate --teacher-forced (long decodes): the prompt is the text's start; sampling options,
    # files, context and text length checked before any decoding
    TF = ["generate", "--model", "{fx}/tiny.gguf", "--text", "{fx}/text.txt", "--teacher-forced"]
    add("generate:teacher_forced_with_prompt", "generate", "option of another mode", TF + ["--prompt", "the"],
        "--prompt")
    add("generate:teacher_forced_temperature", "generate", "option of another mode", TF + ["--temperature", "1"],
        "--temperature")
    add("generate:teacher_forced_top_k", "generate", "option of another mode", TF + ["--top-k", "3"], "--top-k")
    for name in ("json", "plot", "age_bin", "prompt_tokens"):
        flag = "--" + name.replace("_", "-")
        add(f"generate:{name}_without_teacher_forced", "generate", "option of another mode",
            G + [flag, "{fx}/tf_out" if name in ("json", "plot") else "4"], flag)
    add("generate:teacher_forced_beyond_context", "generate", "option range", TF + ["--max-new-tokens", "128"],
        "--max-new-tokens")
    add("generate:teacher_forced_prompt_beyond_context", "generate", "option range",
        TF + ["--max-new-tokens", "8", "--prompt-tokens", "121"], "--max-new-tokens")
    add("generate:teacher_forced_text_too_short", "generate", "bad text",
        ["generate", "--model", "{fx}/tiny.gguf", "--text", "{fx}/one.txt", "--teacher-forced"], "one.txt")
    for name in ("precious.txt", "foreign.json", "adir", "nowhere/r.json"):
        add(f"generate:json:{name}", "generate", "output not ours", TF + ["--json", f"{{fx}}/{name}"],
            name.split("/")[0])
    for name in ("precious.txt", "adir", "nowhere/p.png"):
        add(f"generate:plot:{name}", "generate", "output not ours", TF + ["--plot", f"{{fx}}/{name}"],
            name.split("/")[0])
    add("generate:teacher_forced_gaincell_without_surrogates", "generate", "missing option",
        TF + ["--attention", "gaincell"], "--surrogates")
    add("generate:teacher_forced_json_empty", "generate", "empty path", TF + ["--json", ""], "--json")
    add("generate:teacher_forced_plot_empty", "generate", "empty path", TF + ["--plot", ""], "--plot")
    for name in ("precious.txt",):
        add(f"demo:outdir:{name}", "demo", "output not ours", ["demo", "--outdir", f"{{fx}}/{name}"], name)
    add("demo:outdir:no_parent", "demo", "output not ours", ["demo", "--outdir", "{fx}/nowhere/d"], "nowhere")
    add("demo:text:empty", "demo", "bad text", ["demo", "--outdir", "{fx}/demo_out", "--text", "{fx}/empty.txt"],
        "empty.txt")
    add("demo:text:binary", "demo", "bad text", ["demo", "--outdir", "{fx}/demo_out", "--text", "{fx}/binary.bin"],
        "binary.bin")
    S = ["-o", "{fx}/sweep_out", "--cache-dir", "{fx}/cache"]
    for name, must in (("unknown_key", "bogus"), ("unknown_table", "bogus"), ("empty_axis", "storage_levels"),
                       ("no_axes", "[axes]"), ("out_of_range", "storage_levels"), ("design_out_of_range", "c_store"),
                       ("range_out_of_range", "c_store"), ("range_no_steps", "steps"),
                       ("unknown_strategy", "strategy"), ("kernel_unused_axis", "kernel.keep"),
                       ("family_unused_axis", "reram"), ("unknown_design_key", "bogus"), ("seed_axis", "seed"),
                       ("bad_objective", "objectives"), ("bad_corner", "corner"), ("zero_chips", "chips.n"),
                       ("bad_attention", "attention"), ("missing_model", "nope.gguf"), ("syntax", "TOML"),
                       ("link_unknown_key", "bogus"), ("link_unknown_follow", "follow"), ("link_bad_scale", "scale"),
                       ("link_not_table", "axes.links"), ("link_out_of_range", "w_read_n"),
                       ("link_non_numeric", "corner"), ("link_axis_twice", "w_read_p")):
        add(f"sweep:spec:{name}", "sweep", "bad spec file", ["sweep", f"{{fx}}/sweep_{name}.toml"] + S, must)
    for name in ("missing.toml", "binary.bin", "adir"):
        add(f"sweep:spec:{name}", "sweep", "bad spec file", ["sweep", f"{{fx}}/{name}"] + S, name)
    add("sweep:spec:none", "sweep", "missing option", ["sweep"] + S, "spec")
    add("sweep:output:precious", "sweep", "output not ours", ["sweep", "{fx}/sweep_ok.toml", "-o",
                                                              "{fx}/precious.txt"], "precious.txt")
    add("sweep:output:no_parent", "sweep", "output not ours", ["sweep", "{fx}/sweep_ok.toml", "-o",
                                                               "{fx}/nowhere/x/y"], "nowhere")
    add("sweep:scheduler:unreachable", "sweep", "unreachable scheduler",
        ["sweep", "{fx}/sweep_ok.toml", "--scheduler", "tcp://127.0.0.1:1"] + S, "--scheduler")
    add("sweep:scheduler:malformed", "sweep", "option range",
        ["sweep", "{fx}/sweep_ok.toml", "--scheduler", "127.0.0.1"] + S, "--scheduler")
    add("sweep:workers_with_scheduler", "sweep", "option range",
        ["sweep", "{fx}/sweep_ok.toml", "--scheduler", "tcp://127.0.0.1:8786", "--workers", "2"] + S, "--workers")
    for name in ("kcfg_unknown", "kcfg_range", "kcfg_table", "kcfg_window", "syntax", "nonutf8", "missing"):
        add(f"run:config:{name}", "run", "bad config file",
            R + ["--attention", "gaincell", "--surrogates", "{fx}/bundle_stub.h5", "--config", f"{{fx}}/{name}.toml"],
            "--config")
    add("run:config:with_ideal", "run", "option of another kernel", R + ["--config", "{fx}/kcfg_range.toml"], "--config")
    # --- an empty string where a file or folder is expected: Path("") is the current folder, so
    # an empty value must be refused by name, never read as "." (the demo once ran into cwd)
    empties = {
        "characterize": [("output", ["characterize", "-o", "", "--cache-dir", "{fx}/cache"], "-o"),
                         ("cache_dir", C[:3] + ["--cache-dir", ""], "--cache-dir"),
                         ("design", C + ["--design", ""], "--design")],
        "fit": [("characterization", ["fit", "", "-o", "{fx}/out_bundle.h5"], "characterization"),
                ("output", ["fit", "{fx}/foreign.h5", "-o", ""], "-o"),
                ("plot", ["fit", "{fx}/foreign.h5", "-o", "{fx}/out_bundle.h5", "--plot", ""], "--plot")],
        "run": [("model", ["run", "--model", "", "--text", "{fx}/text.txt"], "--model"),
                ("text", ["run", "--model", "{fx}/tiny.gguf", "--text", ""], "--text"),
                ("surrogates", R + ["--attention", "gaincell", "--surrogates", ""], "--surrogates"),
                ("json", R + ["--json", ""], "--json"),
                ("calibration_file", R + ["--attention", "sprint", "--surrogates", "{fx}/bundle_stub.h5",
                                          "--calibration-file", ""], "--calibration-file"),
                ("calibration_text", R + ["--attention", "sprint", "--surrogates", "{fx}/bundle_stub.h5",
                                          "--calibration-text", ""], "--calibration-text"),
                ("config", R + ["--attention", "gaincell", "--surrogates", "{fx}/bundle_stub.h5", "--config", ""],
                 "--config")],
        "generate": [("model", ["generate", "--model", "", "--prompt", "the"], "--model")],
        "demo": [("outdir", ["demo", "--outdir", ""], "--outdir"),  # ran the demo into cwd once
                 ("text", ["demo", "--outdir", "{fx}/demo_out", "--text", ""], "--text")],
        "sweep": [("spec", ["sweep", ""] + S, "spec"),
                  ("output", ["sweep", "{fx}/sweep_ok.toml", "-o", "", "--cache-dir", "{fx}/cache"], "-o"),
                  ("cache_dir", ["sweep", "{fx}/sweep_ok.toml", "-o", "{fx}/sweep_out", "--cache-dir", ""],
                   "--cache-dir")],
    }
    for command, rows in empties.items():
        for name, argv, must in rows:
            add(f"{command}:{name}:empty_path", command, "empty path", argv, must)
    add("top:no_command", "-", "missing option", [], "command")
    add("top:bogus_command", "-", "unknown option", ["bogus"], "bogus")
    ids = [c.id for c in out]
    assert len(ids) == len(set(ids)), [i for i in ids if ids.count(i) > 1]
    return out


def run_in_process(case: Case, fx: Path, timeout: float = 60.0):
    """(exit code, stdout, stderr, seconds) of ``analogattn <argv>`` run in this process."""
    import contextlib
    import io
    import signal
    import time

    from analogattn import cli
    argv, _ = case.resolved(fx)
    env = {k: v.replace("{fx}", str(fx)) for k, v in case.env}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    out, err = io.StringIO(), io.StringIO()

    def alarm(*_):
        raise TimeoutError(f"case {case.id} ran longer than {timeout} s")

    prev = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    t0 = time.perf_counter()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                rc = cli.main(argv)
            except SystemExit as e:
                rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, prev)
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return rc, out.getvalue(), err.getvalue(), time.perf_counter() - t0


def snapshot(folder: Path) -> dict:
    """{relative path: sha256 or 'dir'} of everything under ``folder``."""
    import hashlib
    snap = {}
    for root, dirs, files in os.walk(folder):
        for d in dirs:
            snap[os.path.relpath(os.path.join(root, d), folder)] = "dir"
        for n in files:
            p = os.path.join(root, n)
            with open(p, "rb") as fh:
                snap[os.path.relpath(p, folder)] = hashlib.sha256(fh.read()).hexdigest()
    return snap
