"""ood_flow.allocator: glibc keeps freed memory for reuse in the oodflow command, unless told not to."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

GLIBC = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"

# Allocates and frees a 64 MiB block 20 times (above glibc's largest mmap threshold, 32 MiB) and counts
# the minor page faults: with glibc's defaults every round maps and faults the block in anew. As in the
# command, the setting comes first, then the imports of a command that computes (their many small blocks
# shape the heap). Eight rounds come first, uncounted: with memory kept, the first few rounds may still
# fault the block in while the heap settles (with torch alone on a bare heap; and, depending on the
# interpreter's path, with the command's imports too: up to 6 of 20 counted rounds, a flaky failure),
# where glibc's defaults fault it in on every round, counted or not.
PROBE = """
import resource, sys
from ood_flow.allocator import keep_freed_memory
kept = keep_freed_memory() if sys.argv[1] == "call" else False
import torch, ood_flow.flows
for _ in range(8):
    torch.ones(16 * 2**20)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    torch.ones(16 * 2**20)
print(int(kept), resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _probe(call: bool, **env) -> tuple[bool, int]:
    out = subprocess.run([sys.executable, "-c", PROBE, "call" if call else "no"], capture_output=True, text=True,
                         check=True, env={**os.environ, **env}).stdout.split()
    return bool(int(out[0])), int(out[1])


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's; elsewhere keep_freed_memory does nothing")
def test_freed_blocks_are_reused_instead_of_faulted_in_again():
    kept, faults_kept = _probe(True, OODFLOW_MALLOC="")
    plain, faults_plain = _probe(False)
    assert kept and not plain
    # glibc's defaults fault every round's block in again (20 rounds); kept, only the first round or two do.
    # Relative, so that it holds with huge pages too (fewer, larger faults).
    assert faults_kept * 5 <= faults_plain, (faults_kept, faults_plain)


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's")
def test_oodflow_malloc_system_keeps_glibcs_defaults():
    kept, faults = _probe(True, OODFLOW_MALLOC="system")
    assert not kept and faults >= 5 * _probe(True, OODFLOW_MALLOC="")[1]


def test_the_command_calls_it_first(monkeypatch):
    from ood_flow.cli import main as cli_main

    calls = []
    monkeypatch.setattr(cli_main, "keep_freed_memory", lambda: calls.append(1) or True)
    monkeypatch.setattr(sys, "argv", ["oodflow", "--version"])
    with pytest.raises(SystemExit) as exit_:
        cli_main.main()
    assert exit_.value.code == 0 and calls == [1]
