"""Moved to :mod:`streamload.places.generations` (the storage layer, issue 20 §5).

Kept so that older imports (``streamload.write.generations``, used by benchmarks) get the very same module object.
"""

import sys

from ..places import generations

sys.modules[__name__] = generations
