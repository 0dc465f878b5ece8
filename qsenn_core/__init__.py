"""qsenn_core: the compute library behind the Q-SENN DVC pipeline."""

__version__ = "0.1.0"
