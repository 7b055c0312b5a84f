"""Imported first by every benchmark: measure the checkout the script is in.

The project's virtualenv has the package installed from one checkout; a benchmark run from another
(an older commit, to compare) would otherwise import the installed copy, in this process and in the
processes it starts (the sandbox, a fresh interpreter for `%load_ext`).
"""

import os
import sys
from pathlib import Path

CHECKOUT = str(Path(__file__).resolve().parent.parent)
sys.path.insert(0, CHECKOUT)
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (CHECKOUT, os.environ.get("PYTHONPATH")) if p)
