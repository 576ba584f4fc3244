"""Run work in a forked child with a memory cap and a time limit.

Until the Rust side of issue 9 lands, an oversized count can make the core allocate without
bound (the process is aborted, or the machine runs out of memory) or loop for hours. Tests
that pass such input run it here, so that an abort, a hang or a runaway allocation fails
that test instead of ending the test run, or taking the machine with it.

The child is forked, so it needs nothing pickled but what it sends back. It caps its own
address space (``RLIMIT_AS``) at what it has mapped plus ``headroom``: past that, Python
raises ``MemoryError`` and Rust aborts. The work reports each call before making it
(``report(description)``), so the parent can say which call crashed or hung.
"""

from __future__ import annotations

import multiprocessing
import signal
import warnings
from collections.abc import Callable
from typing import Any

HEADROOM = 2 << 30


def _limit_memory(headroom: int) -> None:
    try:
        import resource

        with open("/proc/self/status") as status:
            mapped = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize:"))
    except (ImportError, OSError, StopIteration):  # not Linux: no cap, only the time limit
        return
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = mapped + headroom if hard == resource.RLIM_INFINITY else min(mapped + headroom, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def _child(work: Callable[[Callable[[str], None]], Any], sender, headroom: int) -> None:
    _limit_memory(headroom)
    result = work(lambda description: sender.send(("call", description)))
    sender.send(("done", result))
    sender.close()


def forked(
    work: Callable[[Callable[[str], None]], Any], *, timeout: float = 20.0, headroom: int = HEADROOM
) -> tuple[Any, str | None]:
    """``(work(report), None)`` computed in a forked child, or ``(None, what went wrong)``.

    The child is killed when ``timeout`` seconds pass without a report or a result; a child
    that dies (an abort, the memory cap in Rust) is described by its signal and the last call
    it reported. The result must pickle.
    """
    context = multiprocessing.get_context("fork")
    receiver, sender = context.Pipe(duplex=False)
    with warnings.catch_warnings():
        # Python 3.12 warns that forking a process with threads (rayon's) may deadlock the
        # child; a deadlocked child is what the time limit is for.
        warnings.simplefilter("ignore", DeprecationWarning)
        process = context.Process(target=_child, args=(work, sender, headroom), daemon=True)
        process.start()
    sender.close()
    last = "before any call"
    try:
        while receiver.poll(timeout):
            try:
                kind, payload = receiver.recv()
            except EOFError:
                break
            if kind == "done":
                return payload, None
            last = payload
        else:
            process.kill()
            process.join()
            return None, f"no answer within {timeout:g} s, at {last}"
    finally:
        receiver.close()
    process.join()
    code = process.exitcode
    how = f"killed by {signal.Signals(-code).name}" if code is not None and code < 0 else f"exit status {code}"
    return None, f"the child died ({how}) at {last}"


def outcome_of(call: Callable[[], Any]) -> tuple[str, str]:
    """``("ok", "")`` or ``(exception type name, message)``. A BaseException other than
    Ctrl-C and exit (pyo3's PanicException) is an outcome too, to be compared and refused."""
    try:
        call()
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as err:  # noqa: BLE001 - the outcome is what is compared
        return type(err).__name__, str(err)
    return "ok", ""
