"""The version of cnnlens, in a module of its own so that a low layer (the checkpoint
writer) can record it without importing the package's top level, which imports every layer."""

__version__ = "0.1.0"
