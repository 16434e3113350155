"""External programs a step runs (tesseract, pdftoppm, espeak-ng...), run one way: a missing
program names the Debian package that brings it, a timeout and a failure say which program and
why, stderr of a failed run is logged, and each program's version goes into the manifest so a
result can be traced to the tool that made it."""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache

from caixa import log
from caixa.errors import StepError

logger = log.get("caixa.program")


class ProgramError(StepError):
    """A program is missing, timed out, or failed; the message says which and why."""


@dataclass(frozen=True)
class Program:
    name: str  # the executable, found on PATH
    package: str  # the Debian package that installs it
    version_args: tuple[str, ...] = ("--version",)
    error: type[ProgramError] = field(default=ProgramError, compare=False)

    def run(
        self,
        args: Sequence[str],
        *,
        timeout: float,
        what: str = "",
        env: Mapping[str, str] | None = None,
        stdin: bytes | None = None,
    ) -> subprocess.CompletedProcess[bytes]:
        """Run it with `args`; the finished process, whatever its exit status (callers know
        what their program's statuses mean: see `failed`). `what` names the input, for
        messages ("page 3", "report.pdf")."""
        try:
            return subprocess.run(
                [self.name, *args],
                input=stdin,
                env=env,
                capture_output=True,
                timeout=timeout,
                check=False,
            )
        except FileNotFoundError as exc:
            raise self.error(
                f"{self.name} is not installed; install it with: apt-get install {self.package}"
            ) from exc
        except subprocess.TimeoutExpired as exc:
            on = f" on {what}" if what else ""
            raise self.error(f"{self.name} took more than {timeout:.0f} s{on}") from exc

    def check(self, done: subprocess.CompletedProcess[bytes], what: str = "") -> None:
        """Raise when the run failed, with the end of its stderr; log all of it."""
        if done.returncode == 0:
            return
        raise self.error(f"{self.name} failed{f' on {what}' if what else ''}: {self.failed(done)}")

    def failed(self, done: subprocess.CompletedProcess[bytes]) -> str:
        """What a failed run said (its stderr's distinct lines, the last 300 characters), after
        logging it whole."""
        stderr = done.stderr.decode("utf-8", "replace")
        logger.warning(
            "program failed", program=self.name, status=done.returncode, stderr=stderr[-4000:]
        )
        lines = [line.strip() for line in stderr.splitlines() if line.strip()]
        return "; ".join(dict.fromkeys(lines))[-300:] or f"exit status {done.returncode}"

    def version(self) -> str:
        return _version(self.name, self.version_args)


@cache
def _version(name: str, args: tuple[str, ...]) -> str:
    """The first line a program prints about its version ("tesseract 5.3.0"); "unknown" when
    it will not say."""
    try:
        done = subprocess.run([name, *args], capture_output=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    text = (done.stdout or done.stderr).decode("utf-8", "replace").strip()
    return text.splitlines()[0].strip() if text else "unknown"


def versions(*programs: Program) -> dict[str, str]:
    """The manifest's record of the programs a step ran: {"tesseract": "tesseract 5.3.0"}."""
    return {p.name: p.version() for p in programs}
