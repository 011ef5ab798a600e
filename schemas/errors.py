"""Exceptions shared by the whole package.

``VideoPoetError`` subclasses are *user-facing*: the CLI prints their message as one line and exits
non-zero, with no traceback. Anything else reaching the CLI is a bug and shows its traceback.
"""


class VideoPoetError(Exception):
    """A failure the user can act on; ``exit_code`` is what the CLI returns."""

    exit_code = 2


class ConfigError(VideoPoetError, ValueError):
    """A config could not be loaded or failed validation."""


class SchemaVersionError(VideoPoetError, ValueError):
    """Data written with a schema version this code cannot read."""


class RecordError(VideoPoetError, ValueError):
    """A serialized record is malformed."""


class VocabularyError(VideoPoetError, ValueError):
    """A token id or code lies outside its range."""


class DatasetError(VideoPoetError):
    """A dataset could not be found, read or committed."""


class ImmutableVersionError(DatasetError):
    """Publishing different content under an existing name@version."""


class PublishedMeanwhileError(DatasetError):
    """The shared staging area this process used was published by another process of the same build."""


class VerifyError(DatasetError):
    """A dataset failed verification (missing, truncated or altered shards)."""

    exit_code = 1


class DiskFullError(DatasetError):
    """The disk (or quota) filled up while a dataset was written; the build stays resumable."""
