"""The weight products of a forward pass (float32 rows @ weight matrix, into a given buffer), and
which BLAS computes them.

Each lane of a forward pass (:mod:`.lanes`) multiplies its rows by every weight matrix on one
thread. On the Intel machine of rounds 10-15 NumPy's BLAS (OpenBLAS, its SkylakeX kernel)
reached 146 / 183 GFLOP/s over two such lanes at SmolLM2's window-256 / 1024 shapes, while Intel
MKL's sequential sgemm reached 160-175 / 223-226 (paired rounds, 15 each, Dec 2026; Hugging Face
torch, which uses MKL with its own 2 threads: 207 / 232). So on an Intel processor (see below),
when the ``mkl`` package is installed (the ``mkl`` extra, x86-64 only) its ``libmkl_rt`` is loaded
through ctypes with the sequential threading layer (no threads of its own that would spin beside
the lanes), and the products go there; otherwise, or with ``ANALOGATTN_GEMM=numpy``, they go to
``np.matmul``. The two differ by float32 rounding
(different blocking of the sums); either gives the same result for a row whichever lane
computes it. The call releases the GIL (ctypes), so the lanes run in parallel. (The ideal
kernel's own products stay on NumPy's BLAS: through MKL they took 1.14x as long at window 256 and
the same at 1024, paired over 300 / 100 calls.)

On AMD processors MKL is the slower engine: on an AMD EPYC (Zen 4, AVX-512; Dec 2026) a SmolLM2
2-window prefill at window 1024 took 4.38 s through NumPy's BLAS against 4.92 s through MKL
(median of 5 paired rounds, fresh processes; MKL runs its ``_zen`` kernels there), so ``auto``
picks MKL only on an Intel processor (``vendor_id`` GenuineIntel in /proc/cpuinfo).

``ANALOGATTN_GEMM``: ``auto`` (default: MKL when installed and the processor is Intel's), ``mkl``
(MKL, an error when it is not installed), ``numpy``. :func:`check_environment` validates it (the
CLI calls it before work, and so does :func:`.loaders.load`).
"""
from __future__ import annotations

import ctypes
import glob
import os
import sys
import threading

import numpy as np

ENV = "ANALOGATTN_GEMM"
MIN_ROWS = 16  # fewer rows (decoding: 1) stream the weights once either way, bandwidth-bound: NumPy's
# BLAS, as before. (MKL's one-row product also sums in another order than its many-row one:
# teacher-forced decoding then differed from prefill by 1.1e-5 in a token's NLL, against 7e-6.)
CHOICES = ("auto", "mkl", "numpy")

_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112
_lock = threading.Lock()
_state: dict = {}  # "sgemm": the MKL function or None, "why": why not MKL


class GemmError(RuntimeError):
    """ANALOGATTN_GEMM names an engine that is not there (one line, for the user)."""


def _choice() -> str:
    v = os.environ.get(ENV, "").strip().lower()
    return v or "auto"


def cpu_vendor() -> str:
    """The processor's ``vendor_id`` from /proc/cpuinfo (e.g. GenuineIntel, AuthenticAMD); '' when
    it cannot be read (not Linux, not x86). Read once."""
    if "vendor" not in _state:
        vendor = ""
        try:
            with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
                for line in f:
                    if line.startswith("vendor_id"):
                        vendor = line.partition(":")[2].strip()
                        break
        except OSError:
            pass
        _state["vendor"] = vendor
    return _state["vendor"]


def _engine_fn():
    """MKL's sgemm when this process's products go to MKL, else None (NumPy's BLAS): ``numpy``
    never, ``mkl`` always (check_environment refuses it without MKL), ``auto`` on an Intel
    processor when MKL is installed."""
    c = _choice()
    if c == "numpy" or (c == "auto" and cpu_vendor() != "GenuineIntel"):
        return None
    return _mkl()


def check_environment() -> None:
    """Raise GemmError (one line) for an ANALOGATTN_GEMM value outside CHOICES, or ``mkl`` without
    MKL installed."""
    c = _choice()
    if c not in CHOICES:
        from ..params import _short
        raise GemmError(f"{ENV}={_short(os.environ.get(ENV))}: must be one of {', '.join(CHOICES)} "
                        "(auto: Intel MKL when the mkl package is installed on an Intel processor, else NumPy's BLAS)")
    if c == "mkl" and _mkl() is None:
        raise GemmError(f"{ENV}=mkl: Intel MKL is not installed ({_state['why']}); "
                        "pip install mkl, or unset it")


def _mkl_library() -> str | None:
    """libmkl_rt of the ``mkl`` package (installed into <prefix>/lib: the environment's, the base
    interpreter's or the user's site), if any."""
    import site
    for prefix in dict.fromkeys((sys.prefix, sys.base_prefix, site.USER_BASE or sys.prefix)):
        found = sorted(glob.glob(os.path.join(prefix, "lib", "libmkl_rt.so*")))
        if found:
            return found[0]
    return None


def _mkl():
    """cblas_sgemm of MKL's sequential layer, loaded once; None (and _state['why']) when absent."""
    if "sgemm" in _state:
        return _state["sgemm"]
    with _lock:
        if "sgemm" in _state:
            return _state["sgemm"]
        fn, why = None, ""
        path = _mkl_library()
        if path is None:
            why = "no libmkl_rt.so under " + os.path.join(sys.prefix, "lib")
        else:
            try:
                lib = ctypes.CDLL(path)
                lib.MKL_Set_Threading_Layer.argtypes = [ctypes.c_int]
                lib.MKL_Set_Threading_Layer.restype = ctypes.c_int
                # 1 = MKL_THREADING_SEQUENTIAL: each lane's call runs on the lane's own thread.
                # The layer is fixed by the first MKL call; a process that called MKL before (it
                # reports another layer) keeps NumPy's BLAS rather than threads beside the lanes.
                if lib.MKL_Set_Threading_Layer(1) != 1:
                    why = "libmkl_rt's threading layer was set before, not sequential"
                else:
                    p, i, f = ctypes.c_void_p, ctypes.c_int, ctypes.c_float
                    fn = lib.cblas_sgemm
                    fn.argtypes = [i, i, i, i, i, i, f, p, i, p, i, f, p, i]
                    fn.restype = None
            except (OSError, AttributeError) as e:
                fn, why = None, f"{path}: {e}"
        _state["sgemm"], _state["why"] = fn, why
        return fn


def engine() -> str:
    """'mkl' or 'numpy': what :func:`matmul` uses in this process (for reports and benchmarks)."""
    return "mkl" if _engine_fn() is not None else "numpy"


def _rows_ok(x, n_cols) -> bool:
    s = x.strides
    return (x.dtype == np.float32 and x.ndim == 2 and x.shape[1] == n_cols and s[1] == 4 and s[0] % 4 == 0
            and s[0] >= 4 * max(n_cols, 1))


def matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> np.ndarray:
    """out <- a @ b through MKL (when :func:`engine` is 'mkl') for float32 a (M, K), b (K, N),
    out (M, N), M >= MIN_ROWS, rows of a and out contiguous (row slices of C-ordered arrays), b's
    rows or columns contiguous, out sharing no memory with a or b; anything else, or no MKL, goes
    to ``np.matmul``."""
    fn = None if a.ndim != 2 or b.ndim != 2 or a.shape[0] < MIN_ROWS else _engine_fn()
    if fn is None:
        return np.matmul(a, b, out=out)
    m, k = a.shape
    n = b.shape[1]
    if _rows_ok(b, n):
        tb, ldb = _NO_TRANS, b.strides[0] // 4
    elif _rows_ok(b.T, k):  # b's columns contiguous (e.g. a tied embedding's transpose): sgemm reads b^T
        tb, ldb = _TRANS, b.strides[1] // 4
    else:
        tb = None
    if tb is None or not (_rows_ok(a, k) and _rows_ok(out, n) and b.shape[0] == k and out.shape[0] == m) \
            or np.may_share_memory(out, a) or np.may_share_memory(out, b):  # sgemm does not copy overlaps
        return np.matmul(a, b, out=out)
    if m == 0 or n == 0:
        return out
    if k == 0:
        out[...] = 0
        return out
    fn(_ROW_MAJOR, _NO_TRANS, tb, m, n, k, 1.0, a.ctypes.data, a.strides[0] // 4,
       b.ctypes.data, ldb, 0.0, out.ctypes.data, out.strides[0] // 4)
    return out
