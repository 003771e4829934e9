"""The one exception type a user should ever see: a clear sentence, no traceback."""


class LabError(Exception):
    """Bad input or a refused operation. The CLI prints its message and exits with status 2."""
