"""The README's five-minute tour, run as a new user would: `paymux demo`, paste its exports, paste each block."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]


def tour_blocks() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Five-minute tour", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.*?)```", section, flags=re.DOTALL)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[tuple[list[str], Path]]:
    """A `paymux demo` server on a fresh embedded database; yields the export lines it printed."""
    port = free_port()
    log_path = tmp_path / "demo.log"
    env = {key: value for key, value in os.environ.items() if not key.startswith("PAYMUX_")}
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "paymux", "demo", "--port", str(port)],
            cwd=tmp_path,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, log_path.read_text()
            time.sleep(0.2)
        else:
            pytest.fail(f"paymux demo did not start:\n{log_path.read_text()}")
        exports = [line for line in log_path.read_text().splitlines() if line.startswith("export ")]
        yield exports, tmp_path
    finally:
        process.terminate()
        process.wait(timeout=20)


def test_the_readme_tour_works_with_copy_and_paste(demo: tuple[list[str], Path]) -> None:
    exports, workdir = demo
    assert [line.split("=", 1)[0] for line in exports] == [
        "export BASE",
        "export PAYMUX_CLIENT_ID",
        "export PAYMUX_CLIENT_SECRET",
        "export PAYMUX_STORE_ID",
    ]
    blocks = tour_blocks()
    assert len(blocks) >= 8, "the tour lost its steps"
    script = "\n".join(["set -euo pipefail", *exports, *blocks])
    result = subprocess.run(
        ["bash", "-c", script],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": os.environ["PATH"], "HOME": str(workdir)},
        check=False,
    )
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    lines = result.stdout.splitlines()
    assert lines[0] == "requires_payment_method"
    assert lines[1] == "succeeded"  # confirmed with the payment token
    assert lines[2:4] == ["1500", "payment_token_consumed"]
    assert lines[4] == "succeeded"  # the refund
    assert sorted(lines[5:7]) == ["payment succeeded 1500", "refund succeeded 500"]
    assert lines[7] in {"True", "False"}
    assert lines[8] == lines[9]  # the retry got the same intent
    assert lines[8].startswith("pi_")
    assert lines[10] == "idempotency_key_reused"
    assert lines[11] == "failed card_declined"
    assert '"code":"invalid_state_transition"' in lines[12]
    assert lines[13] == "succeeded"  # the external payment, captured
    assert lines[14:16] == [  # its events, newest first
        "payment_intent.succeeded",
        "payment_intent.created",
    ]
    assert lines[16:18] == ["requires_action display_qr_code", "succeeded"]  # the PayPay QR payment
    # The ledger: 1,500 paid - 500 refunded + 3,000 captured at the terminal + 980 by QR code.
    assert lines[18:] == ["available 4980 JPY", "payment 980 pi_", "payment 3000 pi_", "refund -500 txn"]
