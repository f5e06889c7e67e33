"""Stimulus sources shared by the circuit families."""
from __future__ import annotations

K_BOLTZMANN = 1.380649e-23


def white_noise_pwl(sigma: float, dt: float, t_stop: float, rng) -> str:
    """A seeded white Gaussian sequence (sigma, one sample every dt, linear in between) as a
    PWL source: what ngspice's trnoise does, but reproducible (trnoise's generator cannot be
    reseeded through the shared library), so noisy runs cache and resume like any other."""
    n = int(t_stop / dt) + 2
    z = rng.standard_normal(n) * sigma
    z[0] = 0.0
    return "pwl(" + " ".join(f"{k * dt:.6g} {v:.6g}" for k, v in enumerate(z)) + ")"
