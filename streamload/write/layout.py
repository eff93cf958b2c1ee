"""Moved to :mod:`streamload.places.layout` (the storage layer, issue 20 §5).

Kept so that older imports (``streamload.write.layout``, used by benchmarks) get the very same module object.
"""

import sys

from ..places import layout

sys.modules[__name__] = layout
