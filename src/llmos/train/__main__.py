"""`python -m llmos.train pretrain ...`: the training commands without the rest of the CLI
(what `torchrun --nproc_per_node N -m llmos.train pretrain ...` runs)."""

import sys

from llmos.train.cli import main

sys.exit(main())
