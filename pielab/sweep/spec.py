"""Moved to :mod:`pielab.spec.sweep_spec`. This alias keeps the old import path, which the searcher's pickled
state of a sweep with constraints (``pielab.sweep.spec.Constraint``) written before the move names; it is the
same module object."""

import sys

from pielab.spec import sweep_spec as _moved

sys.modules[__name__] = _moved
