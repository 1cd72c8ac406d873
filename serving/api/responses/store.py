"""The last few responses, kept in memory so `previous_response_id` can continue them.

Each entry is the whole conversation up to and including that response: the
earlier history, the request's input items and the response's output items,
all as typed input items. A follow-up prepends that list to its own input.
Lists share their item objects, so a long chain costs one pointer per item per
entry. Entries are evicted least-recently-used beyond `capacity`, and vanish
with the process; instructions are not kept (OpenAI does not carry them over).
"""

from __future__ import annotations

import threading
from collections import OrderedDict

DEFAULT_CAPACITY = 256


class ResponseStore:
    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self.capacity = capacity
        self._items: OrderedDict[str, tuple] = OrderedDict()
        self._lock = threading.Lock()  # waitress serves requests on several threads

    def put(self, response_id: str, items: list) -> None:
        with self._lock:
            self._items[response_id] = tuple(items)
            self._items.move_to_end(response_id)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)

    def get(self, response_id: str) -> list | None:
        with self._lock:
            items = self._items.get(response_id)
            if items is None:
                return None
            self._items.move_to_end(response_id)
            return list(items)

    def __len__(self) -> int:
        return len(self._items)
