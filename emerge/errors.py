"""Exceptions users see. Each names what is wrong so the fix is obvious from the message."""


class EmergeError(Exception):
    """Base class for every error Emerge raises on purpose."""


class ConfigError(EmergeError, ValueError):
    """A configuration value is invalid; raised before any work starts.

    The message always starts with the offending field name so it can be found in a YAML
    run config or a Python call without reading a traceback.
    """

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(f"{field}: {message}")


class InputError(EmergeError):
    """The input cannot produce a meaningful run (e.g. a source folder with no usable document)."""
