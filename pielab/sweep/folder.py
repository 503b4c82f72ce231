"""Moved to the :mod:`pielab.folder` package (layout, records, reader). This alias keeps the old import
path, which sweep folders' pickles written before the move name (``pielab.sweep.folder.TrialRecord``)."""

from pielab.errors import PielabError  # noqa: F401  (the old module re-exported these)
from pielab.folder import *  # noqa: F401,F403
from pielab.folder.records import _dominates  # noqa: F401
from pielab.text import one_line  # noqa: F401
