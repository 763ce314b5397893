"""Every error slimtrain raises on purpose, under one base.

Two families, which the command line maps to its exit codes:

- :class:`BadInputError` (exit 2): something the user gave — a recipe key, a file, an argument, a model or
  layer slimtrain does not support — is wrong or refused; the message names it in the user's terms.
- :class:`WorkFailedError` (exit 1): the input was fine but the work failed — training diverged, a
  checkpoint or exported model is corrupted, an export does not reproduce its model.

Each class also derives from the built-in exception code written before this base would catch
(``ValueError``, ``FileNotFoundError``, ``RuntimeError``, ...), so ``except ValueError`` keeps working.
"""

from __future__ import annotations

__all__ = [
    "BadInputError",
    "CheckpointError",
    "DataFormatError",
    "DatasetNotFoundError",
    "ExportFormatError",
    "ExportMismatchError",
    "FactoryImportError",
    "FullBatchMemoryError",
    "OnnxMismatchError",
    "PeerLostError",
    "RecipeError",
    "RunBuildError",
    "SlimtrainError",
    "TrainingDiverged",
    "UnknownNameError",
    "UnsupportedChannelFlowError",
    "UnsupportedModelError",
    "WorkFailedError",
]


def one_line(text: object) -> str:  # not in __all__: a helper for the messages of these errors
    """``text`` on one line: every run of whitespace (torch's messages span several lines) becomes a space."""
    return " ".join(str(text).split())


class SlimtrainError(Exception):
    """Base of every error slimtrain raises on purpose (never raised itself)."""


class BadInputError(SlimtrainError, ValueError):
    """Invalid or unsupported input; the message names the culprit (command line: exit status 2)."""


class WorkFailedError(SlimtrainError, RuntimeError):
    """Valid input, failed work (command line: exit status 1)."""


# -- bad input ------------------------------------------------------------------------------------------
class RecipeError(BadInputError):
    """A recipe (or a ``--set`` override) is invalid; the message names the offending key."""


class RunBuildError(RecipeError):
    """The recipe is valid but its data, model or method set-up cannot be built from it.

    The message names the recipe section and the culprit (dataset, layer).
    """


class DatasetNotFoundError(BadInputError, FileNotFoundError):
    """No directory holding the files of a dataset was found; the message lists every place looked."""


class DataFormatError(BadInputError):
    """A data file is truncated, corrupted or not in the expected format; the message names the file."""


class UnknownNameError(BadInputError, KeyError):
    """A name no registry entry has (model, dataset, method, ...); the message lists the registered names."""

    def __str__(self) -> str:  # KeyError's would quote the whole message
        return str(self.args[0]) if self.args else ""


class FactoryImportError(BadInputError, ImportError):
    """An import path ``"package.module:name"`` cannot be imported; the message names the module.

    Raised for a recipe's ``model.factory`` or ``data.factory`` and for an export's recorded base factory.
    """


class UnsupportedModelError(BadInputError):
    """A model, or one of its modules, is refused by the function it was given to.

    The message names the module's path and type and what to do instead.
    """


class UnsupportedChannelFlowError(UnsupportedModelError):
    """The model routes channels through an operation the dependency graph cannot follow correctly."""


# -- failed work ----------------------------------------------------------------------------------------
class TrainingDiverged(WorkFailedError):
    """Training hit NaN/inf in the loss or gradients, or a factorization failed.

    The message names the step, the parameters (layers) involved and the last good checkpoint.
    """


class CheckpointError(WorkFailedError):
    """No usable checkpoint could be read; the message names the files tried."""


class ExportFormatError(WorkFailedError, ValueError):
    """An exported-model directory is missing, malformed or inconsistent; the message names the file."""


class ExportMismatchError(WorkFailedError):
    """The exported model's outputs differ from the compressed model's beyond the tolerance."""


class OnnxMismatchError(WorkFailedError):
    """The ONNX model's outputs differ from the PyTorch model's beyond the tolerance."""


class FullBatchMemoryError(WorkFailedError, MemoryError):
    """A full-batch NN-BCD problem is estimated not to fit the memory budget."""


class PeerLostError(WorkFailedError, ConnectionError):
    """A collective failed: another process of the run died or stopped answering within the timeout."""
