"""Shim: the RHAPSODY bridge is now ``tal_telemetry.bridge``.

The bridge moved into tal's Python package (``python/tal_telemetry`` in
this repository, installed by ``pip install tal-telemetry``). This script
stays so that code written against it keeps working: with the package
importable, or this repository's ``python/`` directory beside it,
``import tal_bridge`` gives the same ``Forwarder`` and ``forwarder``.
"""

import os
import sys

try:
    from tal_telemetry.bridge import Forwarder, forwarder
except ImportError:
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
    from tal_telemetry.bridge import Forwarder, forwarder

__all__ = ["Forwarder", "forwarder"]
