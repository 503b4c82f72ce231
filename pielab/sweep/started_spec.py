"""Moved to :mod:`pielab.folder.started_spec`. This alias keeps the old import path, which sweep folders' pickles
(``tune/tuner.pkl``, the searcher's state) written before the move name; it is the same module object."""

import sys

from pielab.folder import started_spec as _moved

sys.modules[__name__] = _moved
