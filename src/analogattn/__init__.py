"""analogattn: transistor-level circuit simulation turned into transformer inference.

Data flows one way: circuits -> characterize (HDF5) -> surrogates (bundle) -> attention.
"""
__version__ = "0.1.0"
