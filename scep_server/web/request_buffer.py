"""Reading one HTTP/1.1 request into memory, and telling when it is complete without parsing it fully.

``RequestBuffer`` is fed the bytes a connection delivers. It follows the lines of the head,
measures the request line, the number and size of header fields against their limits, and works out
the framing of the body (Content-Length, or chunked) so that it can say when the whole request has
arrived. Everything else (methods, header syntax, singleton fields, request smuggling) is left to
gunicorn's parser, which then reads the request from memory and never waits on the socket.

Each feed resumes where the previous one stopped: a long line costs linear time, not the quadratic
time of re-scanning a growing buffer on every read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

CRLF = b"\r\n"
_CR = 0x0D
_HEX = re.compile(rb"[0-9A-Fa-f]+")
_CHUNK_SIZE_LINE_LIMIT = 4096  # the hex size and any chunk extensions
_HEX_DIGITS_LIMIT = 16


@dataclass(frozen=True, slots=True)
class Refusal:
    """A final answer given instead of passing the request on; the connection closes after it."""

    status: int
    reason: str
    text: str

    def response(self) -> bytes:
        body = (self.text + "\n").encode()
        head = (
            f"HTTP/1.1 {self.status} {self.reason}\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n"
        )
        return head.encode("ascii") + body


def line_too_long(length: int, limit: int) -> Refusal:
    return Refusal(
        414, "URI Too Long",
        f"The request line is {length} bytes or more, over this server's limit of {limit} bytes. "
        "Send SCEP PKIOperation messages with POST (the server advertises POSTPKIOperation), not GET.",
    )  # fmt: skip


def body_too_large(limit: int) -> Refusal:
    return Refusal(413, "Content Too Large", f"The request body exceeds this server's limit of {limit} bytes.")


HEAD_TOO_LARGE = Refusal(431, "Request Header Fields Too Large", "Too many or too large request header fields.")
TIMED_OUT = Refusal(408, "Request Timeout", "The request did not arrive in time.")
BARE_LF = Refusal(400, "Bad Request", "Every line of the request head must end with CRLF.")
BAD_CHUNK = Refusal(400, "Bad Request", "The chunked request body is malformed.")


@dataclass(frozen=True, slots=True)
class Limits:
    """What ``RequestBuffer`` enforces (gunicorn's parser is given the same head limits)."""

    request_line_bytes: int
    header_fields: int
    header_field_bytes: int  # one field line with its CRLF, as gunicorn counts it
    body_bytes: int

    @property
    def fields_bytes(self) -> int:
        """The most a header (or trailer) section can hold within the limits."""
        return self.header_fields * self.header_field_bytes + 2


class RequestBuffer:
    """The bytes of one request (and any that follow it) while they arrive.

    ``feed`` returns ``None`` while more is needed, ``True`` once the request is complete, or a
    ``Refusal``. When the client waits for ``100 Continue`` before sending its body,
    ``wants_continue`` becomes true and the ``Expect`` field is removed from the buffered head:
    the interim response is sent from here, and gunicorn must not send a second one.
    """

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.data = bytearray()
        self.wants_continue = False
        self._line_start = -1  # where the request line starts (after one tolerated empty line)
        self._line_end = -1  # the request line's CR
        self._last_lf = -1  # the LF of the last complete line of the head
        self._fields = 0
        self._head_end = -1  # just past the head's empty line
        self._scanned = 0  # bytes of the head already searched for LFs
        self._body_end = -1
        self._chunks: _ChunkScanner | None = None

    @property
    def head_done(self) -> bool:
        return self._head_end >= 0

    def feed(self, data: bytes) -> Refusal | bool | None:
        self.data += data
        if self._head_end < 0:
            verdict = self._scan_head()
            if verdict is not None or self._head_end < 0:
                return verdict
        if self._chunks is not None:
            return self._chunks.scan(self.data)
        return True if len(self.data) >= self._body_end else None

    # -- the head

    def _scan_head(self) -> Refusal | None:
        data = self.data
        if self._line_start < 0:
            if data == b"\r":
                return None
            # RFC 9112 section 2.2: one empty line before the request line is tolerated.
            self._line_start = self._scanned = 2 if data[:2] == CRLF else 0
        pos = data.find(b"\n", self._scanned)
        while pos >= 0:
            if pos == 0 or data[pos - 1] != _CR:
                return BARE_LF
            refusal = self._line_ended(pos - 1)
            if refusal is not None or self._head_end >= 0:
                return refusal
            pos = data.find(b"\n", pos + 1)
        self._scanned = len(data)
        return self._check_partial_line()

    def _line_ended(self, cr: int) -> Refusal | None:
        """A line of the head ends with the CRLF at ``cr``."""
        limits = self.limits
        if self._line_end < 0:
            length = cr - self._line_start
            if length > limits.request_line_bytes:
                return line_too_long(length, limits.request_line_bytes)
            self._line_end = cr
        elif cr == self._last_lf + 1:
            self._head_end = cr + 2
            return self._frame_body()
        else:
            self._fields += 1
            if self._fields > limits.header_fields or cr - self._last_lf + 1 > limits.header_field_bytes:
                return HEAD_TOO_LARGE
        self._last_lf = cr + 1
        return None

    def _check_partial_line(self) -> Refusal | None:
        """The line still arriving may already be over its limit."""
        data, limits = self.data, self.limits
        # A trailing CR may be the start of the line's end: it does not count yet.
        pending = len(data) - (1 if data.endswith(b"\r") else 0)
        if self._line_end < 0:
            length = pending - self._line_start
            return line_too_long(length, limits.request_line_bytes) if length > limits.request_line_bytes else None
        too_large = pending - self._last_lf - 1 + 2 > limits.header_field_bytes
        return HEAD_TOO_LARGE if too_large else None

    # -- the body

    def _frame_body(self) -> Refusal | None:
        """Find the body's framing; a framing gunicorn's parser refuses is passed on as it is."""
        fields = _framing_fields(bytes(self.data[self._line_end + 2 : self._head_end - 2]))
        lengths = fields.get(b"content-length", [])
        codings = _codings(fields.get(b"transfer-encoding", []))
        self._body_end = self._head_end
        if codings:
            if codings[-1] == b"chunked" and codings.count(b"chunked") == 1 and not lengths:
                self._chunks = _ChunkScanner(self._head_end, self.limits)
        elif len(lengths) == 1 and lengths[0].isdigit():
            length = int(lengths[0])
            if length > self.limits.body_bytes:
                return body_too_large(self.limits.body_bytes)
            self._body_end += length
        if self._expects_continue(fields):
            self._drop_expect()
        return None

    def _expects_continue(self, fields: dict[bytes, list[bytes]]) -> bool:
        request_line = bytes(self.data[self._line_start : self._line_end])
        body_missing = self._chunks is not None or len(self.data) < self._body_end
        expect = [value.lower() for value in fields.get(b"expect", [])]
        return request_line.endswith(b" HTTP/1.1") and body_missing and expect == [b"100-continue"]

    def _drop_expect(self) -> None:
        data = self.data
        start = self._line_end + 2
        while start < self._head_end - 2:
            end = data.find(CRLF, start)
            if data[start:end].partition(b":")[0].lower() == b"expect":
                removed = end + 2 - start
                del data[start : end + 2]
                self._head_end -= removed
                self._body_end -= removed
                if self._chunks is not None:
                    self._chunks = _ChunkScanner(self._head_end, self.limits)
                self.wants_continue = True
                return
            start = end + 2


def _framing_fields(block: bytes) -> dict[bytes, list[bytes]]:
    """The values of the fields that decide the body's framing, by lower-case name."""
    fields: dict[bytes, list[bytes]] = {}
    for line in block.split(CRLF):
        name, colon, value = line.partition(b":")
        key = name.lower()
        if colon and key in (b"content-length", b"transfer-encoding", b"expect"):
            fields.setdefault(key, []).append(value.strip(b" \t"))
    return fields


def _codings(values: list[bytes]) -> list[bytes]:
    return [coding.strip(b" \t").lower() for value in values for coding in value.split(b",")]


class _ChunkScanner:
    """Follows a chunked body (RFC 9112 section 7.1) through the buffer until its trailer section ends."""

    def __init__(self, start: int, limits: Limits) -> None:
        self.pos = start
        self.limits = limits
        self.decoded = 0
        self.chunk_left = -1  # chunk data still to skip; -1 while a size line is expected
        self.trailer_start = -1

    def scan(self, data: bytearray) -> Refusal | bool | None:
        while self.trailer_start < 0:
            if self.chunk_left >= 0:
                end = self.pos + self.chunk_left
                if len(data) < end + 2:
                    return None
                if data[end : end + 2] != CRLF:
                    return BAD_CHUNK
                self.pos, self.chunk_left = end + 2, -1
                continue
            verdict = self._size_line(data)
            if verdict is not None:
                return verdict
            if self.chunk_left < 0 and self.trailer_start < 0:
                return None
        return self._trailer(data)

    def _size_line(self, data: bytearray) -> Refusal | None:
        eol = data.find(CRLF, self.pos)
        if eol < 0:
            return BAD_CHUNK if len(data) - self.pos > _CHUNK_SIZE_LINE_LIMIT else None
        digits = _HEX.match(data, self.pos, eol)
        if digits is None or eol - self.pos > _CHUNK_SIZE_LINE_LIMIT or len(digits.group()) > _HEX_DIGITS_LIMIT:
            return BAD_CHUNK
        size = int(digits.group(), 16)
        self.decoded += size
        if self.decoded > self.limits.body_bytes:
            return body_too_large(self.limits.body_bytes)
        self.pos = eol + 2
        if size:
            self.chunk_left = size
        else:
            self.trailer_start = self.pos
        return None

    def _trailer(self, data: bytearray) -> Refusal | bool | None:
        while True:
            eol = data.find(CRLF, self.pos)
            if eol < 0:
                return HEAD_TOO_LARGE if len(data) - self.trailer_start > self.limits.fields_bytes else None
            if eol == self.pos:
                return True
            self.pos = eol + 2
            if self.pos - self.trailer_start > self.limits.fields_bytes:
                return HEAD_TOO_LARGE
