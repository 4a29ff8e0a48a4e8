"""One error type for bad input: the CLI prints its message as one line and exits with code 2."""


class BenchError(Exception):
    """A user-facing error whose message names the file, line or field at fault."""
