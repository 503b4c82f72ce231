import sys

from pielab.cli import main

sys.exit(main())
