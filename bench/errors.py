"""One error type for bad input: the CLI prints its message as one line and exits with code 2."""


class BenchError(Exception):
    """A user-facing error whose message names the file, line or field at fault."""


def optional(module: str, feature: str, extra: str):
    """Import a module of an optional extra, or fail with one line naming the extra to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise BenchError(f"{feature} needs {module}: pip install -e '.[{extra}]'") from None
