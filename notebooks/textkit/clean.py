"""Text cleaning helpers shipped with the notebook's workflow."""

import re

_SPACES = re.compile(r"\s+")


def normalize_whitespace(text: str) -> str:
    """Collapse runs of whitespace to one space and trim the ends."""
    return _SPACES.sub(" ", text).strip()
