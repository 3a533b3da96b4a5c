"""``python -m tfcroloss.pipelines.cli``: the same as the ``tfcroloss`` command."""

import sys

from tfcroloss.pipelines.cli import main

sys.exit(main())
