"""memtune: model, watch and tune how a virtualization host manages memory under pressure."""

from memtune.core.hookspecs import hookimpl

__version__ = "0.1.0"
__all__ = ["hookimpl", "__version__"]
