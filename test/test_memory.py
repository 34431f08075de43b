"""retain_freed_memory: freed heap blocks are reused by a worker thread instead of being faulted in again."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from espnet_ros.core.memory import MALLOC_TUNING_ENV

# A worker thread allocates and frees the same mix of large blocks (like a forward pass's activations) twelve
# times; after two rounds of warm-up the page faults per round are counted.
_PROBE = textwrap.dedent("""
    import resource, sys, threading
    from espnet_ros.core.memory import retain_freed_memory
    applied = retain_freed_memory() if sys.argv[1] == "tune" else False
    import numpy as np
    out = {}
    def work():
        for i in range(12):
            if i == 2:
                out["f0"] = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            alive = []
            for mb in (24, 8, 16, 24, 4, 12, 30):
                a = np.empty(mb << 20, np.uint8); a.fill(1); alive.append(a)
            del alive
        out["f1"] = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    t = threading.Thread(target=work); t.start(); t.join()
    print(applied, (out["f1"] - out["f0"]) / 10)
""")


def _probe(mode: str, **env: str) -> tuple[bool, float]:
    run_env = {k: v for k, v in os.environ.items() if k != MALLOC_TUNING_ENV} | env
    out = subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True, text=True, check=True,
                         env=run_env, timeout=120).stdout.split()
    return out[0] == "True", float(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_worker_thread_reuses_freed_blocks_after_tuning() -> None:
    applied, tuned = _probe("tune")
    assert applied
    assert tuned <= 5, f"{tuned} page faults per round with the heap tuned"
    _, untuned = _probe("plain")
    assert untuned > 100 * max(tuned, 1), f"untuned {untuned} vs tuned {tuned} page faults per round"


def test_tuning_can_be_switched_off() -> None:
    applied, _ = _probe("tune", **{MALLOC_TUNING_ENV: "0"})
    assert not applied
