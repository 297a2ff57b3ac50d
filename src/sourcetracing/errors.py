"""Typed errors of the toolkit. Library code raises these; each script maps them to one clear line.

``exit_code`` is the script's exit status for that kind of error (see :func:`sourcetracing.cli.run`).
"""

from __future__ import annotations


class SourceTracingError(Exception):
    """Base class: a problem the user can fix; printed as one line, never as a traceback."""

    exit_code = 1


class ConfigError(SourceTracingError, ValueError):
    """A configuration file or override is invalid."""

    exit_code = 2


class DataError(SourceTracingError, ValueError):
    """Protocols, audio files or corpora are missing or malformed."""


class MissingInputError(SourceTracingError, FileNotFoundError):
    """An earlier step's output is missing: the message names the step to run."""


class StaleInputError(SourceTracingError):
    """An earlier step's output no longer matches its inputs: the message names the step to rerun."""

    exit_code = 3


class WouldOverwriteError(SourceTracingError):
    """A step would overwrite finished results; rerun with ``--resume``/``--force`` or another exp_dir."""

    exit_code = 4


class LockedError(SourceTracingError):
    """Another process is writing the same place."""

    exit_code = 5


class BundleError(SourceTracingError, ValueError):
    """A tracer bundle is incomplete, altered since it was written, or of another format version."""
