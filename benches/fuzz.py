"""Fuzz every public function on both backends: only finite results or the four allowed errors.

``python benches/fuzz.py --calls 100000 [--seed S] [--backend rust|python|both] [--jobs J]``

Draws ``--calls`` calls per backend of every public function of ``rlhf_fast.reference.__all__``
(the controllers' ``update`` and ``PreferenceSet.make_dataset`` included) and of the five sweep
front ends, each argument valid, junk or left out (the generators: ``tests/fuzzing.py``), and
checks each outcome (issue 9): a result whose every float is finite, or ``ValueError``,
``TypeError``, ``MemoryError`` or ``FloatingPointError`` with a message, and no warning but
``KLWarning``. Anything else fails the run (exit status 1) with a reproducer.

The calls run in forked children with a memory cap (``RLIMIT_AS``: what the child has mapped
plus ``--headroom`` MiB) and a time limit (``--timeout`` seconds without progress). Before
each call a child writes the call's number to memory it shares with the parent, so an abort
or a hang is pinned on its call; the parent then carries on from the next call in a new
child. Call ``i`` of seed ``S`` is a function of ``(S, i)`` alone, the same on both backends:
``--replay i`` makes it again in this process and shows its traceback.
"""

from __future__ import annotations

import argparse
import collections
import mmap
import os
import pickle
import select
import signal
import struct
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import fuzzing  # noqa: E402  (tests/fuzzing.py: the generators and the outcome rule)
from _common import table  # noqa: E402

ALLOWED = ("ok", "ValueError", "TypeError", "MemoryError", "FloatingPointError")
MAX_FAILURES_KEPT = 5  # per function and failure class, per child


def make_call(seed: int, i: int, backend: fuzzing.Backend) -> fuzzing.Call:
    return fuzzing.draw_call(fuzzing.call_source(seed, i), backend=backend)


def run_calls(backend_name: str, seed: int, start: int, stop: int, progress: mmap.mmap | None) -> dict:
    """Calls ``start..stop`` on one backend: outcome counts per (function, class) and failures."""
    backend = fuzzing.Backend(backend_name)
    functions = {name: backend.function(name) for name in fuzzing.FUNCTIONS}
    counts: collections.Counter = collections.Counter()
    failures: list[tuple[int, str, str, str]] = []
    kept: collections.Counter = collections.Counter()
    with fuzzing.strict_warnings():
        for i in range(start, stop):
            if progress is not None:
                struct.pack_into("q", progress, 0, i)
            call = make_call(seed, i, backend)
            fn = functions[call.function]
            status, detail = fuzzing.outcome(lambda: fn(**call.kwargs), call.function)
            counts[call.function, status] += 1
            if status.startswith("FAIL") and kept[call.function, status] < MAX_FAILURES_KEPT:
                kept[call.function, status] += 1
                failures.append((i, call.function, status, detail[:500]))
    return {"counts": counts, "failures": failures}


def _limit_memory(headroom: int) -> None:
    import resource

    with open("/proc/self/status") as status:
        mapped = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize:"))
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = mapped + headroom if hard == resource.RLIM_INFINITY else min(mapped + headroom, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


class Child:
    """Calls ``start..stop`` of one backend in a forked, memory-capped child."""

    def __init__(self, backend: str, seed: int, start: int, stop: int, headroom: int):
        self.backend, self.start, self.stop = backend, start, stop
        self.progress = mmap.mmap(-1, 8)
        struct.pack_into("q", self.progress, 0, start)
        read, write = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:  # the child
            code = 0
            try:
                os.close(read)
                try:
                    _limit_memory(headroom)
                except (ImportError, OSError, StopIteration):
                    pass
                report = run_calls(backend, seed, start, stop, self.progress)
                data = pickle.dumps(report)
                with os.fdopen(write, "wb") as out:
                    out.write(data)
            except BaseException:  # noqa: BLE001 - the parent sees a non-zero status
                traceback.print_exc()
                code = 3
            finally:
                os._exit(code)
        os.close(write)
        self.fd = read
        self.data = bytearray()
        self.last_index = start
        self.last_change = time.monotonic()

    def current(self) -> int:
        return struct.unpack_from("q", self.progress, 0)[0]

    def poll(self, timeout: float) -> tuple[str, object] | None:
        """None while running; ``("done", report)`` or ``("crashed", (index, how))`` at the end."""
        ready, _, _ = select.select([self.fd], [], [], 0)
        if ready:
            chunk = os.read(self.fd, 1 << 20)
            if chunk:
                self.data += chunk
                self.last_change = time.monotonic()
                return None
            os.close(self.fd)
            _, status = os.waitpid(self.pid, 0)
            if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
                return "done", pickle.loads(bytes(self.data))
            how = (f"killed by {signal.Signals(os.WTERMSIG(status)).name}" if os.WIFSIGNALED(status)
                   else f"exit status {os.WEXITSTATUS(status)}")
            return "crashed", (self.current(), f"the process died ({how})")
        index = self.current()
        now = time.monotonic()
        if index != self.last_index:
            self.last_index, self.last_change = index, now
        elif now - self.last_change > timeout:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
            os.close(self.fd)
            return "crashed", (index, f"no progress for {timeout:g} s (a hang)")
        return None


def fuzz(backends: list[str], calls: int, seed: int, jobs: int, timeout: float, headroom: int, chunk: int):
    """Every backend's calls in chunks, ``jobs`` children at a time."""
    pending = [(b, a, min(a + chunk, calls)) for b in backends for a in range(0, calls, chunk)]
    running: list[Child] = []
    counts = {b: collections.Counter() for b in backends}
    failures = {b: [] for b in backends}
    seconds = collections.Counter()  # child-seconds per backend
    started: dict[int, float] = {}
    crashes = 0
    while pending or running:
        while pending and len(running) < jobs:
            backend, a, b = pending.pop(0)
            child = Child(backend, seed, a, b, headroom)
            started[id(child)] = time.perf_counter()
            running.append(child)
        time.sleep(0.02)
        for child in list(running):
            end = child.poll(timeout)
            if end is None:
                continue
            running.remove(child)
            seconds[child.backend] += time.perf_counter() - started.pop(id(child))
            kind, payload = end
            if kind == "done":
                counts[child.backend].update(payload["counts"])
                failures[child.backend] += payload["failures"]
                continue
            index, how = payload
            crashes += 1
            call = make_call(seed, index, fuzzing.Backend(child.backend))
            counts[child.backend][call.function, "FAIL:crash"] += 1
            failures[child.backend].append((index, call.function, "FAIL:crash", how))
            # the calls before it are lost with the child; count them again in a new one
            if index > child.start:
                pending.insert(0, (child.backend, child.start, index))
            if index + 1 < child.stop:
                pending.insert(0, (child.backend, index + 1, child.stop))
            if crashes > 20:
                print("more than 20 crashes: stopping", file=sys.stderr)
                pending.clear()
    return counts, failures, seconds


def replay(backends: list[str], seed: int, index: int) -> int:
    status = 0
    for name in backends:
        backend = fuzzing.Backend(name)
        call = make_call(seed, index, backend)
        print(f"[{name}] call {index} of seed {seed}:\n{call.describe(limit=2000)}")
        fn = backend.function(call.function)
        with fuzzing.strict_warnings():
            try:
                result = fn(**call.kwargs)
            except BaseException:  # noqa: BLE001 - shown
                traceback.print_exc()
                result = None
        call = make_call(seed, index, backend)
        with fuzzing.strict_warnings():
            verdict = fuzzing.outcome(lambda: backend.function(call.function)(**call.kwargs), call.function)
        print(f"[{name}] result: {result!r:.300}\n[{name}] outcome: {verdict}\n")
        status |= verdict[0].startswith("FAIL")
    return status


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=100_000, help="calls per backend")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--backend", choices=("rust", "python", "both"), default="both")
    parser.add_argument("--jobs", type=int, default=1, help="children at a time")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds without progress counted as a hang")
    parser.add_argument("--headroom", type=int, default=1024, help="MiB a child may map beyond its start")
    parser.add_argument("--chunk", type=int, default=25_000, help="calls per child")
    parser.add_argument("--replay", type=int, metavar="I", help="make call I in this process, with its traceback")
    args = parser.parse_args()
    backends = ["rust", "python"] if args.backend == "both" else [args.backend]
    if args.replay is not None:
        return replay(backends, args.seed, args.replay)

    wall = time.perf_counter()
    counts, failures, seconds = fuzz(backends, args.calls, args.seed, args.jobs, args.timeout, args.headroom << 20,
                                     args.chunk)
    wall = time.perf_counter() - wall

    classes = list(ALLOWED) + sorted({s for b in backends for _, s in counts[b] if s not in ALLOWED})
    for b in backends:
        total = sum(counts[b].values())
        print(f"\n== {b}: {total} calls in {seconds[b]:.1f} s ({total / max(seconds[b], 1e-9):,.0f} calls/s)")
        rows = []
        for name in fuzzing.FUNCTIONS:
            row = [counts[b][name, c] for c in classes]
            rows.append([name, *row, sum(row)])
        rows.append(["total", *[sum(counts[b][n, c] for n in fuzzing.FUNCTIONS) for c in classes], total])
        table(["function", *classes, "calls"], rows)
    n_fail = 0
    for b in backends:
        for index, function, status, detail in failures[b]:
            n_fail += 1
            call = make_call(args.seed, index, fuzzing.Backend(b))
            print(f"\nFAILURE [{b}] {status} in call {index}: {detail}\n{call.describe()}\n"
                  f"replay: python benches/fuzz.py --backend {b} --seed {args.seed} --replay {index}")
    grand = sum(sum(counts[b].values()) for b in backends)
    bad = sum(n for b in backends for (_, s), n in counts[b].items() if s not in ALLOWED)
    print(f"\n{grand} fuzzed calls ({', '.join(f'{b}: {sum(counts[b].values())}' for b in backends)}) "
          f"in {wall:.1f} s wall; {bad} failed")
    return 1 if bad or n_fail else 0


if __name__ == "__main__":
    sys.exit(main())
