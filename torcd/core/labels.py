"""Job labels being served (Torc's `run --label`): a job with a label is claimed here only while
a `torcctl run WF --label L` follows its workflow. The follow's event stream holds the label, so
a client that ends, however it ends, stops serving it."""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Callable, Iterator


class ServedLabels:
    def __init__(self) -> None:
        self._serving: Counter[tuple[int, str]] = Counter()
        self._listeners: list[Callable[[], None]] = []

    def on_change(self, listener: Callable[[], None]) -> None:
        self._listeners.append(listener)

    @contextlib.contextmanager
    def serving(self, workflow_id: int, label: str) -> Iterator[None]:
        key = (workflow_id, label)
        self._serving[key] += 1
        self._changed()
        try:
            yield
        finally:
            self._serving[key] -= 1
            if not self._serving[key]:
                del self._serving[key]
            self._changed()

    def served(self) -> list[tuple[int, str]]:
        return sorted(self._serving)

    def _changed(self) -> None:
        for listener in self._listeners:
            listener()


MAX_LABEL = 256


def label_problem(label: str) -> str | None:
    """Why a label is refused (Torc's rule: not empty, no spaces at its ends), or None."""
    if not label or len(label) > MAX_LABEL:
        return f"a label is 1 to {MAX_LABEL} characters"
    if label != label.strip():
        return f"label {label[:40]!r} has spaces at its ends"
    if any(ord(c) < 32 or ord(c) == 127 for c in label):
        return f"label {label[:40]!r} holds a control character"
    return None
