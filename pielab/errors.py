"""Errors that the command line turns into one clear line and a non-zero exit."""


class PielabError(Exception):
    """Any user-facing error: bad input, missing data, an unusable folder."""


class ConfigError(PielabError):
    """A configuration, sweep spec or search space that cannot be used as given."""


class DataError(PielabError):
    """Data that cannot be found, downloaded or read."""


class Diverged(PielabError):
    """Training produced a non-finite loss; the trial ends as diverged."""
