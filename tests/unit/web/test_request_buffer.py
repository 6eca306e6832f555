"""RequestBuffer: when a request is complete, and which ones are refused before gunicorn parses them."""

from __future__ import annotations

import time

import pytest

from scep_server.web.request_buffer import Limits, Refusal, RequestBuffer

LIMITS = Limits(request_line_bytes=100, header_fields=4, header_field_bytes=64, body_bytes=1000)


def feed_all(data: bytes, *, step: int | None = None) -> tuple[Refusal | bool | None, RequestBuffer]:
    """Feed ``data`` whole, or ``step`` bytes at a time; the first verdict other than "more" wins."""
    buffer = RequestBuffer(LIMITS)
    step = step or len(data) or 1
    verdict: Refusal | bool | None = None
    for start in range(0, len(data), step):
        verdict = buffer.feed(data[start : start + step])
        if verdict is not None:
            break
    return verdict, buffer


def status(verdict: Refusal | bool | None) -> int | bool | None:
    return verdict.status if isinstance(verdict, Refusal) else verdict


@pytest.mark.parametrize("step", [None, 1, 7])
def test_a_get_is_complete_at_the_end_of_its_head(step: int | None) -> None:
    request = b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n"
    assert status(feed_all(request[:-1], step=step)[0]) is None
    verdict, buffer = feed_all(request, step=step)
    assert verdict is True and bytes(buffer.data) == request


def test_a_head_without_fields_and_one_leading_empty_line() -> None:
    assert feed_all(b"\r\nGET / HTTP/1.1\r\n\r\n")[0] is True
    assert feed_all(b"\r")[0] is None


@pytest.mark.parametrize("step", [None, 1, 5])
def test_a_body_of_known_length_is_waited_for(step: int | None) -> None:
    head = b"POST /scep?operation=PKIOperation HTTP/1.1\r\nContent-Length: 10\r\n\r\n"
    assert feed_all(head + b"012345678", step=step)[0] is None
    assert feed_all(head + b"0123456789", step=step)[0] is True


def test_the_request_line_limit_is_exact_and_needs_no_line_end() -> None:
    def line(length: int) -> bytes:
        return b"GET /" + b"a" * (length - len(b"GET / HTTP/1.1")) + b" HTTP/1.1"

    assert feed_all(line(100) + b"\r\n\r\n")[0] is True
    assert status(feed_all(line(101) + b"\r\n\r\n")[0]) == 414
    # Refused as soon as the line is known to be too long, whatever follows.
    verdict, buffer = feed_all(b"GET /" + b"a" * 200, step=10)
    assert status(verdict) == 414 and len(buffer.data) <= 110
    assert feed_all(line(100) + b"\r")[0] is None  # the CR may start the line's end


def test_the_414_answer_says_to_post() -> None:
    verdict = feed_all(b"GET /" + b"a" * 200)[0]
    assert isinstance(verdict, Refusal)
    response = verdict.response().decode()
    assert response.startswith("HTTP/1.1 414 URI Too Long\r\n")
    assert "Content-Type: text/plain; charset=utf-8\r\n" in response and "Connection: close\r\n" in response
    head, _, body = response.partition("\r\n\r\n")
    assert f"Content-Length: {len(body.encode())}\r\n" in head
    assert "POST" in body and "100 bytes" in body


def test_header_field_count_and_size() -> None:
    fields = b"".join(b"F%d: v\r\n" % i for i in range(4))
    assert feed_all(b"GET / HTTP/1.1\r\n" + fields + b"\r\n")[0] is True
    assert status(feed_all(b"GET / HTTP/1.1\r\n" + fields + b"F9: v\r\n\r\n")[0]) == 431
    # 64 bytes with the CRLF is the most a field line may take.
    field = b"X: " + b"v" * (64 - 5) + b"\r\n"
    assert feed_all(b"GET / HTTP/1.1\r\n" + field + b"\r\n")[0] is True
    assert status(feed_all(b"GET / HTTP/1.1\r\nX: " + b"v" * 60 + b"\r\n\r\n")[0]) == 431
    # An endless field is refused before its end.
    assert status(feed_all(b"GET / HTTP/1.1\r\nX: " + b"v" * 70, step=3)[0]) == 431


@pytest.mark.parametrize("head", [b"GET / HTTP/1.1\nHost: x\n\n", b"GET / HTTP/1.1\r\nHost: x\n\r\n", b"\n"])
def test_bare_lf_in_the_head_is_refused_at_once(head: bytes) -> None:
    assert status(feed_all(head)[0]) == 400


def test_bare_lf_in_a_body_is_data() -> None:
    body = b"\n\x30\n\n"
    assert feed_all(b"POST / HTTP/1.1\r\nContent-Length: 4\r\n\r\n" + body)[0] is True


def test_a_body_over_the_limit_is_refused_from_its_length() -> None:
    assert status(feed_all(b"POST / HTTP/1.1\r\nContent-Length: 1001\r\n\r\n")[0]) == 413
    assert feed_all(b"POST / HTTP/1.1\r\nContent-Length: 1000\r\n\r\n" + b"x" * 1000)[0] is True


@pytest.mark.parametrize("framing", [
    b"Content-Length: 5\r\nContent-Length: 6\r\n",  # ambiguous
    b"Content-Length: +5\r\n",
    b"Transfer-Encoding: gzip\r\n",  # not ending in chunked
    b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
])  # fmt: skip
def test_framing_gunicorn_refuses_is_passed_on_with_the_head(framing: bytes) -> None:
    assert feed_all(b"POST / HTTP/1.1\r\n" + framing + b"\r\n")[0] is True


@pytest.mark.parametrize("step", [None, 1, 4])
def test_a_chunked_body_is_followed_to_its_trailer_end(step: int | None) -> None:
    head = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
    body = b"3;ext=1\r\nabc\r\nA\r\n0123456789\r\n0\r\nTrailer: t\r\n\r\n"
    for cut in (len(body) - 1, len(body) - 14, 10):
        assert feed_all(head + body[:cut], step=step)[0] is None
    verdict, buffer = feed_all(head + body + b"GET /next", step=step)
    assert verdict is True and buffer.data.startswith(head + body)
    # What follows (a pipelined request) stays in the buffer for the parser.
    assert feed_all(head + body + b"GET /next")[1].data.endswith(body + b"GET /next")


def test_chunked_bodies_over_the_limit_or_malformed_are_refused() -> None:
    head = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
    assert status(feed_all(head + b"3e9\r\n")[0]) == 413
    assert status(feed_all(head + b"zz\r\n")[0]) == 400
    assert status(feed_all(head + b"3\r\nabcd\r\n")[0]) == 400
    assert status(feed_all(head + b"1" * 5000)[0]) == 400


def test_expect_continue_is_answered_here_and_removed_from_the_head() -> None:
    head = b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n"
    buffer = RequestBuffer(LIMITS)
    assert buffer.feed(head) is None and buffer.wants_continue
    assert buffer.feed(b"abc") is True
    assert bytes(buffer.data) == b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"


def test_expect_continue_is_left_alone_when_the_body_came_with_it() -> None:
    request = b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc"
    verdict, buffer = feed_all(request)
    assert verdict is True and not buffer.wants_continue and bytes(buffer.data) == request


def test_a_long_line_costs_linear_time() -> None:
    """8 MB arriving 8 KB at a time: each feed searches only what is new."""
    limits = Limits(request_line_bytes=16 * 1024 * 1024, header_fields=4, header_field_bytes=64, body_bytes=10)
    buffer = RequestBuffer(limits)
    chunk = b"a" * 8192
    started = time.process_time()
    for _ in range(1024):
        assert buffer.feed(chunk) is None
    assert time.process_time() - started < 0.5
