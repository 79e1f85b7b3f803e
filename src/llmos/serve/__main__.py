"""`python -m llmos.serve [MODEL ...] [flags]`: the same as `llmos serve`."""

import sys

from llmos.serve.cli import main

sys.exit(main())
