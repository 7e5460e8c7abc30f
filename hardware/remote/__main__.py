"""``python -m hardware.remote``: the same as ``hwnas-device`` (serve-device without the rest of hwnas)."""
import sys

from hardware.remote.server import main

sys.exit(main())
