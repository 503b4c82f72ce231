"""Moved to :mod:`pielab.spec.space`. This alias keeps the old import path, which the Tune state of sweep
folders written before the move names (``tune/tuner.pkl`` and the searcher's state pickle
``pielab.sweep.space.SearchSpace``); it is the same module object."""

import sys

from pielab.spec import space as _moved

sys.modules[__name__] = _moved
