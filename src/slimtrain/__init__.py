"""slimtrain: compression-aware training for PyTorch.

Train a network once so that it can afterwards be pruned (unstructured or by whole filters) or factorized
to low rank at many levels with little accuracy lost, and export the result as a model that is really
smaller and faster.
"""

__version__ = "0.1.0"
