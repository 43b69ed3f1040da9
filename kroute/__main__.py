"""`python -m kroute`: see kroute.cli."""

import sys

from kroute.cli import main

sys.exit(main())
