"""Errors raised when a dataset cannot be found or its files are malformed."""

from __future__ import annotations


class DatasetNotFoundError(FileNotFoundError):
    """No directory holding the files of a dataset was found; the message lists every place looked."""


class DataFormatError(ValueError):
    """A data file is truncated, corrupted or not in the expected format; the message names the file."""
