"""A tiny local package used by local_modules.ipynb: it lives beside the notebook, not on PyPI.

`%%flyte_fast --copy auto` finds that the cell imports it and ships it with the cell.
"""

from textkit.clean import normalize_whitespace
from textkit.stats import word_count

__all__ = ["normalize_whitespace", "word_count"]
