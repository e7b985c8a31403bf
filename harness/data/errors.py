"""The data layer's one error type (a leaf module: readers and the downloader both raise it)."""


class DataError(RuntimeError):
    """Data missing or unreadable; the message says where we looked and how to get it."""
