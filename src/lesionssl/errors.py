"""The one exception type users see: the CLI prints its message on one line, no traceback."""


class LesionSSLError(Exception):
    """A problem with the user's input (data, labels, config, checkpoint) explained in one line."""
