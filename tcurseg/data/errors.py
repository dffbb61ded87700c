"""Exception type shared by the data layer."""


class DataError(ValueError):
    """A data list or data file is missing or invalid; the message names the file."""
