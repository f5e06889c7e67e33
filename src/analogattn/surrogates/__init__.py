"""Compact models of the characterized circuits: fit (scikit-learn), validate on held-out SPICE
points, export to one HDF5 bundle, load and evaluate with NumPy only."""
