"""Server-Sent Events parsing by the WHATWG rules, fed bytes as they arrive."""

from __future__ import annotations

import codecs
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Message:
    """One dispatched frame: its ``event`` type, its ``data`` lines joined, the id in force."""

    event: str
    data: str
    id: str


class Decoder:
    """Lines end in CRLF, LF or CR; ``:`` starts a comment; one space after a field's colon
    is dropped; ``data`` lines join with ``\\n``; a blank line dispatches the frame. A frame
    cut off by the end of a connection is never dispatched, which is why ``last_event_id``
    only moves when a frame is complete."""

    def __init__(self, last_event_id: str = "") -> None:
        self.last_event_id = last_event_id
        self.retry_ms: int | None = None
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._text = ""
        self._started = False
        self._event = ""
        self._data: list[str] = []
        self._id = last_event_id

    def restart(self) -> None:
        """A new connection: forget a frame the old one cut off; keep the id and ``retry``."""
        self._utf8.reset()
        self._text = ""
        self._started = False
        self._event = ""
        self._data = []
        self._id = self.last_event_id

    def feed(self, chunk: bytes) -> list[Message]:
        text = self._text + self._utf8.decode(chunk)
        if not self._started and text:
            self._started = True
            text = text.removeprefix("\ufeff")
        messages: list[Message] = []
        start = 0
        while True:
            cr, lf = text.find("\r", start), text.find("\n", start)
            end = lf if cr < 0 else cr if lf < 0 else min(cr, lf)
            if end < 0:
                break
            following = end + 1
            if text[end] == "\r":
                if following == len(text):
                    break  # an LF may follow in the next chunk
                if text[following] == "\n":
                    following += 1
            message = self._line(text[start:end])
            if message is not None:
                messages.append(message)
            start = following
        self._text = text[start:]
        return messages

    def _line(self, line: str) -> Message | None:
        if not line:
            return self._dispatch()
        name, colon, value = line.partition(":")
        if colon and not name:
            return None  # a comment, such as the keep-alive
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self._id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            self.retry_ms = int(value)
        return None

    def _dispatch(self) -> Message | None:
        self.last_event_id = self._id
        data, event = self._data, self._event or "message"
        self._data, self._event = [], ""
        if not data:
            return None
        return Message(event=event, data="\n".join(data), id=self.last_event_id)
