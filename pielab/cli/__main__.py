"""``python -m pielab.cli``: the ``pielab`` command."""

from pielab.cli import main

raise SystemExit(main())
