"""``python -m lmfuse``: the same as the ``lmfuse`` console script."""

from lmfuse.cli import main

raise SystemExit(main())
