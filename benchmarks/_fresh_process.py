"""Measurements in fresh processes: each job runs in a new process forked from a forkserver that has imported torch
and transformers (and run nothing), with the kernel's peak-RSS mark and the memory it can read."""
from __future__ import annotations

import platform


# ---- process measurements ---------------------------------------------------------------------------------------
def status_kib(field: str) -> int:
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def reset_peak_rss() -> bool:
    """Set the kernel's peak-RSS mark (VmHWM) to the current RSS; False where the kernel refuses."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def available_bytes() -> int:
    for line in open("/proc/meminfo"):
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()



_CONTEXT = None


def _context():
    """A forkserver that has imported torch and transformers (and run no torch op): cheap, clean fresh processes."""
    global _CONTEXT
    if _CONTEXT is None:
        import multiprocessing
        _CONTEXT = multiprocessing.get_context("forkserver")
        _CONTEXT.set_forkserver_preload(["torch", "transformers", "safetensors.torch"])
    return _CONTEXT


def _child(connection, fn, args) -> None:
    try:
        connection.send(fn(*args))
    except BaseException as err:  # report, do not hang the parent
        import traceback
        connection.send({"error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()[-3000:]})
    finally:
        connection.close()


def in_fresh_process(fn, *args) -> dict:
    context = _context()
    receive, send = context.Pipe(duplex=False)
    process = context.Process(target=_child, args=(send, fn, args))
    process.start()
    send.close()
    try:
        result = receive.recv()
    except EOFError:
        result = None
    process.join()
    if result is None:
        result = {"error": f"process died with exit code {process.exitcode} (killed for memory?)"}
    return result

