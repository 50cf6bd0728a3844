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


def yaml_syntax_error(field: str, path, exc) -> ConfigError:
    """A ConfigError for a YAML file that does not parse, naming the file, line and column."""
    mark = getattr(exc, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return ConfigError(field, f"{path} is not valid YAML{where}: {problem}")
