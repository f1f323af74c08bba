"""Run ai2text roles as real processes and watch what they log."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from tests.wav import SAMPLE_RATE, speech_pcm, write_wav

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[2]
# Tests of the machinery (restarts, kills, leases, outages) run the fast English model on
# English speech: what they check does not depend on the model, and it halves their time.
# The default multilingual model runs in test_up, test_languages and the others.
FAST_MODEL = {"AI2TEXT_ASR__MODEL": "tiny.en"}


def wait_until(
    check: Callable[[], T | None], *, timeout: float, what: str, every: float = 0.1
) -> T:
    """Poll ``check`` until it returns something truthy, or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)


class Service:
    """One ``ai2text <role>`` process with JSON logs captured to a file."""

    def __init__(
        self, role: str, env: dict[str, str], log_path: Path, args: tuple[str, ...] = ()
    ) -> None:
        self.role = role
        self.args = args
        self.env = {**os.environ, **env, "AI2TEXT_LOG_FORMAT": "json", "PYTHONUNBUFFERED": "1"}
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Service:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ai2text", self.role, *self.args],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
        log.close()
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def events(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
        return out

    def wait_for_event(
        self, event: str, *, timeout: float = 60, where: Callable[[dict[str, Any]], bool] = bool
    ) -> dict[str, Any]:
        def find() -> dict[str, Any] | None:
            self.check_alive()
            return next((e for e in self.events() if e.get("event") == event and where(e)), None)

        return wait_until(find, timeout=timeout, what=f"{self.role} to log {event!r}")

    def count(self, event: str, where: Callable[[dict[str, Any]], bool] = bool) -> int:
        return sum(1 for e in self.events() if e.get("event") == event and where(e))

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            tail = self.log_path.read_text()[-4000:]
            raise AssertionError(f"{self.role} exited with {self.proc.returncode}:\n{tail}")

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signum)

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM and wait for a clean exit; return the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)


def cli_json(env: dict[str, str], *args: str) -> Any:
    """Run an ``ai2text`` query command with ``--json`` and parse its stdout."""
    done = subprocess.run(
        [sys.executable, "-m", "ai2text", *args, "--json"],
        env={**os.environ, **env},
        capture_output=True,
        timeout=120,
        cwd=REPO,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    return json.loads(done.stdout)


def cli_text(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "ai2text", *args],
        env={**os.environ, **env},
        capture_output=True,
        timeout=120,
        cwd=REPO,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    return done.stdout.decode()


def normalise(text: str) -> str:
    """Lower-case, punctuation stripped, single spaces: what WER is measured on."""
    kept = "".join(c if c.isalnum() or c.isspace() else " " for c in text.lower())
    return " ".join(kept.split())


def write_long_wav(path: Path, source: Path, repeat: int) -> float:
    """A long 16 kHz mono WAV made of real speech repeated; returns its duration."""
    pcm = speech_pcm(source, repeat=repeat)
    write_wav(path, pcm)
    return len(pcm) / 2 / SAMPLE_RATE
