"""The SCEP load: client processes x threads POSTing pre-built PKCSReqs, then checking every answer.

Each client process (forked, so the messages and keys are shared, not copied through pipes) runs its
share of the threads; each thread is one device slot: with ``keep_alive`` it holds one connection for
all its messages (a busy client), without it opens a connection per enrollment (a fleet of devices).
All processes start together on a barrier and stop taking new messages at the deadline; a request in
flight is finished. A PENDING answer is polled (CertPoll) until it is final, as a device does; the
latency is from the first byte sent to the final answer.

After the window (the parent has taken its CPU samples by then) every process verifies its answers
in full (:func:`bench.messages.verify`) and reports the issued serials, so uniqueness is checked
across all processes.
"""

from __future__ import annotations

import functools
import http.client
import multiprocessing
import multiprocessing.context
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from multiprocessing.queues import Queue
from typing import Any

from cryptography import x509

from bench.machine import CpuMeter, CpuSample
from bench.messages import KeyPool, Message, cert_poll, quick_status, verify
from scep_server.scep.types import PKIStatus

PKI_MESSAGE = "application/x-pki-message"
START_TIMEOUT = 120.0


@dataclass(frozen=True, slots=True)
class Plan:
    """Where to send, what, and how hard. ``issuer`` names the CA in CertPolls; ``trusted`` sign CertReps."""

    host: str
    port: int
    path: str
    messages: Sequence[Message]
    keys: KeyPool
    recipient: x509.Certificate
    issuer: x509.Name
    trusted: tuple[x509.Certificate, ...]
    concurrency: int
    processes: int
    duration: float
    keep_alive: bool = True
    timeout: float = 120.0
    poll_interval: float = 0.5
    pending_timeout: float = 60.0


@dataclass(slots=True)
class LoadResult:
    """What a load measured; ``serials`` are the issued ones that passed the full check."""

    elapsed: float = 0.0
    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    serials: list[int] = field(default_factory=list)
    ok: int = 0  # answers that passed every check
    sent: int = 0
    polls: int = 0
    exhausted: bool = False
    client_cpu: float = 0.0
    verify_seconds: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)
    busy: float = 0.0

    def duplicates(self) -> int:
        """Certificates whose serial another certificate of the run also has."""
        return sum(n for n in Counter(self.serials).values() if n > 1)


@dataclass(slots=True)
class _Answer:
    index: int
    body: bytes
    nonce: bytes
    latency: float


@dataclass(slots=True)
class _Shard:
    errors: Counter[str] = field(default_factory=Counter)
    answers: list[_Answer] = field(default_factory=list)
    polls: int = 0
    sent: int = 0


def _post(conn: http.client.HTTPConnection, path: str, body: bytes) -> tuple[int, bytes]:
    conn.request("POST", path + "?operation=PKIOperation", body=body,
                 headers={"Content-Type": PKI_MESSAGE, "Content-Length": str(len(body))})  # fmt: skip
    response = conn.getresponse()
    return response.status, response.read()


class _Device:
    """One client thread's connection and its exchange of one message (with CertPolls while PENDING)."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.conn: http.client.HTTPConnection | None = None

    def connection(self) -> http.client.HTTPConnection:
        if self.conn is None:
            self.conn = http.client.HTTPConnection(self.plan.host, self.plan.port, timeout=self.plan.timeout)
        return self.conn

    def warm_up(self) -> None:
        conn = self.connection()
        conn.request("GET", self.plan.path + "?operation=GetCACaps")
        conn.getresponse().read()

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def exchange(self, message: Message) -> tuple[bytes, bytes, int]:
        """The final answer's body, the nonce it must echo, and how many CertPolls it took."""
        status, body = self._send(message.der)
        nonce, polls, began = message.sender_nonce, 0, time.monotonic()
        while status == 200 and quick_status(body)[0] is PKIStatus.PENDING:
            if time.monotonic() - began > self.plan.pending_timeout:
                raise _Failed("still PENDING at the poll deadline")
            time.sleep(self.plan.poll_interval)
            poll = cert_poll(message, self.plan.keys, self.plan.recipient, self.plan.issuer)
            status, body = self._send(poll.der)
            nonce, polls = poll.sender_nonce, polls + 1
        if status != 200:
            raise _Failed(f"HTTP {status}")
        return body, nonce, polls

    def _send(self, der: bytes) -> tuple[int, bytes]:
        try:
            return _post(self.connection(), self.plan.path, der)
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            raise _Failed(type(exc).__name__) from exc
        finally:
            if not self.plan.keep_alive:
                self.close()


class _Failed(Exception):
    pass


class _Counter:
    """The next message to send, shared by every thread of every client process."""

    def __init__(self, context: multiprocessing.context.BaseContext) -> None:
        self._value = context.Value("q", 0)

    def next(self) -> int:
        with self._value.get_lock():
            value = int(self._value.value)
            self._value.value = value + 1
        return value

    def peek(self) -> int:
        return int(self._value.value)


def _slot(plan: Plan, counter: _Counter, start: threading.Barrier,
          deadline: list[float], out: _Shard, lock: threading.Lock) -> None:  # fmt: skip
    device, mine = _Device(plan), _Shard()
    if plan.keep_alive:
        try:
            device.warm_up()
        except (OSError, http.client.HTTPException) as exc:
            mine.errors[f"warm-up {type(exc).__name__}"] += 1
            device.close()
    start.wait()
    while time.monotonic() < deadline[0] and (i := counter.next()) < len(plan.messages):
        message = plan.messages[i]
        began = time.monotonic()
        mine.sent += 1
        try:
            body, nonce, polls = device.exchange(message)
        except _Failed as exc:
            mine.errors[str(exc)] += 1
            continue
        latency, mine.polls = time.monotonic() - began, mine.polls + polls
        status, problem = quick_status(body)
        if status is PKIStatus.SUCCESS:
            mine.answers.append(_Answer(i, body, nonce, latency))
        else:
            mine.errors[problem or f"pkiStatus {status}"] += 1
    device.close()
    with lock:
        out.errors.update(mine.errors)
        out.answers += mine.answers
        out.polls, out.sent = out.polls + mine.polls, out.sent + mine.sent


def _child(
    plan: Plan, counter: _Counter, index: int, wait_start: Callable[[], None], report: Callable[[Any], None]
) -> None:
    threads_here = plan.concurrency // plan.processes + (index < plan.concurrency % plan.processes)
    lock, out, deadline = threading.Lock(), _Shard(), [0.0]
    start = threading.Barrier(threads_here + 1)
    threads = [threading.Thread(target=_slot, args=(plan, counter, start, deadline, out, lock), daemon=True)
               for _ in range(threads_here)]  # fmt: skip
    for thread in threads:
        thread.start()
    wait_start()
    cpu_before = time.process_time()
    deadline[0] = time.monotonic() + plan.duration
    start.wait()
    for thread in threads:
        thread.join()
    exhausted = counter.peek() > len(plan.messages)  # a thread asked for one more than there is
    report(WindowReport(time.monotonic(), time.process_time() - cpu_before,
                        (out.errors, out.sent, out.polls, exhausted)))  # fmt: skip
    began, serials, latencies, problems = time.monotonic(), [], [], Counter[str]()
    for answer in out.answers:
        verdict = verify(answer.body, plan.messages[answer.index], answer.nonce, plan.keys, plan.trusted)
        if verdict.serial is not None:
            serials.append(verdict.serial)
            latencies.append(answer.latency)
        else:
            problems[verdict.problem or "?"] += 1
    report((serials, latencies, problems, time.monotonic() - began))


def run(plan: Plan, meter: CpuMeter, at_window_end: Callable[[], None] = lambda: None) -> LoadResult:
    """Drive ``plan``; ``meter`` is sampled at the start and the end of the timed window, then
    ``at_window_end`` runs (e.g. kill the server) while the clients verify their answers."""
    wait = plan.duration + plan.timeout + plan.pending_timeout + 60
    counter = _Counter(multiprocessing.get_context("fork"))
    fanned = fan_out(plan.processes, functools.partial(_child, plan, counter), meter, wait, at_window_end)
    result = LoadResult(elapsed=fanned.elapsed, client_cpu=fanned.client_cpu, cpu=fanned.cpu, busy=fanned.busy)
    for errors, sent, polls, exhausted in fanned.window:
        result.errors.update(errors)
        result.sent += sent
        result.polls += polls
        result.exhausted = result.exhausted or exhausted
    for serials, latencies, problems, seconds in fanned.after:
        result.serials += serials
        result.latencies += latencies
        result.errors.update(problems)
        result.verify_seconds = max(result.verify_seconds, seconds)
    result.ok = len(result.serials)
    return result


# --- processes started together ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WindowReport:
    """What a client process reports when its timed window is over: when, its CPU, and its figures."""

    ended: float  # time.monotonic(), which is system-wide
    cpu: float
    figures: Any


@dataclass(frozen=True, slots=True)
class FanOut:
    elapsed: float
    client_cpu: float
    cpu: dict[str, float]
    busy: float
    window: list[Any]
    after: list[Any]


# A client process: (its index, wait for the common start, send a report to the parent). It sends a
# WindowReport when its window is over, then one more report (whatever it checked after the window).
Child = Callable[[int, Callable[[], None], Callable[[Any], None]], None]


def fan_out(processes: int, child: Child, meter: CpuMeter, wait: float,
            at_window_end: Callable[[], None] = lambda: None) -> FanOut:  # fmt: skip
    """Fork ``processes`` clients that start together; sample ``meter`` around their common window."""
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(processes + 1)
    messages: Queue[Any] = context.Queue()

    def start() -> None:
        barrier.wait(START_TIMEOUT)

    def main(index: int) -> None:
        child(index, start, messages.put)

    children = [context.Process(target=main, args=(k,), daemon=True) for k in range(processes)]
    for process in children:
        process.start()
    try:
        barrier.wait(START_TIMEOUT)
        began, before = time.monotonic(), meter.sample()
        reports = _Reports(messages, children)
        window = reports.take(len(children), wait, windows=True)
        after: CpuSample = meter.sample()
        at_window_end()
        later = reports.take(len(children), 3600, windows=False)
    finally:
        for process in children:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
    cpu, busy = CpuMeter.spent(before, after)
    return FanOut(max(w.ended for w in window) - began, sum(w.cpu for w in window), cpu, busy,
                  [w.figures for w in window], later)  # fmt: skip


class _Reports:
    """The children's reports, window reports first whatever order they arrive in; a dead child is an error."""

    def __init__(self, queue: Queue[Any], children: Sequence[BaseProcess]) -> None:
        self._queue, self._children = queue, children
        self._windows: list[WindowReport] = []
        self._others: list[Any] = []

    def take(self, count: int, timeout: float, *, windows: bool) -> list[Any]:
        deadline = time.monotonic() + timeout
        wanted: list[Any] = self._windows if windows else self._others
        while len(wanted) < count:
            try:
                report = self._queue.get(timeout=1.0)
            except queue.Empty:
                dead = [c.exitcode for c in self._children if c.exitcode not in (None, 0)]
                if dead or time.monotonic() > deadline:
                    why = f"a client process failed (exit {dead})" if dead else "the clients timed out"
                    raise RuntimeError(why) from None
                continue
            (self._windows if isinstance(report, WindowReport) else self._others).append(report)
        return list(wanted)
