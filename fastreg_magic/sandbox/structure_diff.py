"""Where two versions of a registered entity differ, for the "different structure" refusal.

FlyteAdmin appends a JSON diff of the old and new compiled entity to its message; this
names the differing field paths instead (``template.interface.outputs``,
``template.container.args[5]``), which is what a user needs to see why the same version
cannot be registered twice with other content.
"""

from __future__ import annotations

from google.protobuf.message import Message

MAX_PATHS = 5


def differing_paths(old: Message, new: Message, limit: int = MAX_PATHS) -> list[str]:
    """Up to ``limit`` dotted field paths whose values differ between ``old`` and ``new``."""
    found: list[str] = []
    _walk(old, new, "", found, limit)
    return found


def _walk(old, new, path: str, found: list[str], limit: int) -> None:
    if len(found) >= limit or old == new:
        return
    if not isinstance(old, Message) or not isinstance(new, Message):
        found.append(path or "(value)")
        return
    names = {f.name: f for f, _ in old.ListFields()} | {f.name: f for f, _ in new.ListFields()}
    for name in sorted(names):
        field = names[name]
        child = f"{path}.{name}" if path else name
        left, right = getattr(old, name), getattr(new, name)
        if field.is_repeated and not _is_map(field):
            if len(left) != len(right):
                found.append(f"{child} ({len(left)} -> {len(right)} items)")
            else:
                for index, (a, b) in enumerate(zip(left, right)):
                    _walk(a, b, f"{child}[{index}]", found, limit)
        elif _is_map(field):
            for key in sorted(set(left) | set(right)):
                if key not in left or key not in right:
                    found.append(f"{child}[{key!r}] ({'added' if key not in left else 'removed'})")
                else:
                    _walk(left[key], right[key], f"{child}[{key!r}]", found, limit)
        else:
            _walk(left, right, child, found, limit)
        if len(found) >= limit:
            return


def _is_map(field) -> bool:
    return field.message_type is not None and field.message_type.GetOptions().map_entry
