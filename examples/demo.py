"""Script for `make demo`: imports the `shop` module and runs it.

The logic lives in examples/shop.py so that its functions belong to the module
`shop` (not `__main__`) and a filter like `-l 'shop:*'` selects them.
"""

import os
import sys

# Make `import shop` work however this file is started (python, runpy, fentry run).
HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import shop  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(shop.main())
