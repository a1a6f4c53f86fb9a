"""``python -m fentry``: the fentry command."""

from .cli import main

raise SystemExit(main())
