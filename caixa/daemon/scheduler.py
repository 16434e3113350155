"""Lanes: CPU phases run in parallel up to a limit; accelerator steps run strictly one at a
time, on one lane that owns the GPU (or, with no GPU, the heavy model work on the CPU)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from caixa import log
from caixa.daemon.workers import JobRunner
from caixa.pipelines.base import Resource

logger = log.get("caixa.scheduler")


class Scheduler:
    def __init__(self, runner: JobRunner, cpu_workers: int, wake: threading.Event) -> None:
        self.runner = runner
        self.wake = wake
        self._lanes = {
            Resource.cpu: ThreadPoolExecutor(cpu_workers, thread_name_prefix="caixa-cpu"),
            Resource.accelerator: ThreadPoolExecutor(1, thread_name_prefix="caixa-accelerator"),
        }
        self._active: set[str] = set()
        self._lock = threading.Lock()
        self._stopping = False

    def submit(self, job_id: str) -> None:
        """Start a job unless it is already in flight; it then runs phase after phase."""
        with self._lock:
            if job_id in self._active or self._stopping:
                return
            self._active.add(job_id)
        self._dispatch(job_id)

    def _dispatch(self, job_id: str) -> None:
        self._send(job_id, self.runner.lane_of(self.runner.journal.get(job_id)))

    def _send(self, job_id: str, lane: Resource) -> None:
        try:
            self._lanes[lane].submit(self._work, job_id, lane)
        except RuntimeError:  # the lane shut down while stopping; the job resumes next start
            self._done(job_id)

    def _work(self, job_id: str, lane: Resource) -> None:
        """Run the job's phases while they stay on this lane, then hand it to the next lane."""
        try:
            following = self.runner.advance(job_id)
            while following is lane and not self._stopping:
                following = self.runner.advance(job_id)
        except Exception:
            # The journal or the disk failed under us; the job stays unfinished and the next
            # poll picks it up again.
            logger.exception("job phase crashed", job=job_id)
            following = None
        if following is not None and not self._stopping:
            self._send(job_id, following)
        else:
            self._done(job_id)

    def _done(self, job_id: str) -> None:
        with self._lock:
            self._active.discard(job_id)
        self.wake.set()

    def busy(self) -> int:
        with self._lock:
            return len(self._active)

    def stop(self) -> None:
        """Take no new phase; let running ones finish (their jobs resume at the next start)."""
        self._stopping = True
        for lane in self._lanes.values():
            lane.shutdown(wait=True, cancel_futures=True)
