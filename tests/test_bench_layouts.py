"""The benchmark suite's scale-out layouts: which it measures by default, and how an operator names others."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
sys.path.insert(0, str(BENCH))  # the suite's own imports (database, machine) are the bench folder's modules

from suite import default_layouts, parse_layouts  # noqa: E402


def test_two_cores_measure_one_and_two_processes() -> None:
    assert default_layouts(1) == [(1, 1), (2, 2)]
    assert default_layouts(2) == [(1, 1), (2, 2)]
    assert default_layouts(3) == [(1, 1), (2, 2)]


def test_more_cores_add_layouts_while_each_api_process_has_a_core() -> None:
    assert default_layouts(4) == [(1, 1), (2, 2), (4, 4)]
    assert default_layouts(12) == [(1, 1), (2, 2), (4, 4), (8, 8)]


def test_layouts_are_named_as_api_processes_plus_workers() -> None:
    assert parse_layouts("1+1, 2+2,4+2") == [(1, 1), (2, 2), (4, 2)]


@pytest.mark.parametrize("text", ["2", "2+", "+2", "a+1", "0+1", "1+0", "1+1,", "2x2"])
def test_a_malformed_layout_is_refused(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_layouts(text)


def test_the_command_line_says_what_is_wrong_with_a_layout() -> None:
    finished = subprocess.run(
        [sys.executable, str(BENCH / "suite.py"), "--layouts", "2x2"], capture_output=True, text=True
    )
    assert finished.returncode == 2
    assert "'2x2' is not a layout like 2+2" in finished.stderr
