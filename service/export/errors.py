"""What an exporter raises when the trial cannot be exported in its format (the server answers
``FAILED_PRECONDITION`` with the message, which says what to do instead)."""


class ExportError(Exception):
    """This trial cannot be exported in this format; the message says why and what to do."""
