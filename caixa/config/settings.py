"""Settings from CAIXA_* environment variables (pydantic-settings); the CLI overrides a few."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_home() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "caixa"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CAIXA_", extra="ignore")

    home: Path = Field(default_factory=_default_home, description="journal, work area, logs")
    rules: Path = Field(default=Path("rules.yaml"), description="the rules file")
    cpu_workers: int = Field(default=max(1, min(4, os.cpu_count() or 1)), ge=1)
    settle_seconds: float = Field(
        default=1.0, ge=0, description="quiet time before taking a file seen with no close event"
    )
    closed_settle_seconds: float = Field(
        default=0.05, ge=0, description="quiet time after a writer closed the file"
    )
    open_wait_seconds: float = Field(
        default=30.0,
        ge=0,
        description="take a file still open for writing after this long unchanged",
    )
    scan_interval: float = Field(default=30.0, gt=0, description="reconciliation scan period")
    poll_interval: float = Field(default=2.0, gt=0, description="scan period of polled inboxes")
    max_attempts: int = Field(default=3, ge=1, description="tries of a step on transient errors")
    retry_backoff: float = Field(default=2.0, ge=0, description="first retry delay, doubling")
    step_timeout: float = Field(
        default=1800.0, gt=0, description="seconds a step may run; a rule's `timeout` overrides"
    )
    device: str = Field(
        default="auto",
        pattern=r"^(auto|cpu|cuda(:\d+)?)$",
        description="where models run: auto, cpu, cuda or cuda:N (ROCm GPUs are cuda too)",
    )
    keep_alive: float = Field(
        default=300.0, ge=0, description="seconds an unused model stays loaded in its worker"
    )
    swap_bound: int = Field(
        default=8,
        ge=0,
        description="steps the accelerator lane may run on its loaded model while a step of"
        " another model waits; 0: first come, first served",
    )
    model_memory_mb: int = Field(
        default=0,
        ge=0,
        description="MB the accelerator worker's models may hold; 0: 80% of the GPU, or a"
        " quarter of the RAM on the CPU",
    )
    accelerator_threads: int = Field(
        default=0,
        ge=0,
        description="cores for model work with no GPU; 0: half of them while CPU steps run or"
        " wait, every core while none does (a number: that many, always)",
    )
    log_format: Literal["auto", "json", "console", "journal"] = "auto"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    journal_socket: Path = Field(
        default=Path("/run/systemd/journal/socket"),
        description="journald's socket, for structured logs (format journal, or auto under systemd)",
    )
    stop_timeout: float = Field(
        default=80.0,
        ge=0,
        description="on SIGTERM, running steps get this long to finish; the rest resume at next start",
    )
    stall_seconds: float = Field(
        default=30.0,
        gt=0,
        description="a part of the daemon silent this long stops systemd's watchdog pings",
    )
    min_free: str = Field(
        default="auto",
        pattern=r"^(auto|\d+(\.\d+)?[KMGTkmgt]?|\d{1,2}(\.\d+)?%)$",
        description="free space each filesystem caixa writes to must keep, or work pauses:"
        " auto (1 GiB or 5% of it, whichever is smaller), a size with K/M/G/T, or a %",
    )
    memory_max: str = Field(
        default="75%",
        pattern=r"^(\d+(\.\d+)?[KMGT]?|\d{1,3}%|infinity)$",
        description="the service's MemoryMax= (bytes with K/M/G/T, a % of RAM, or infinity)",
    )
    web_password: SecretStr | None = Field(
        default=None,
        description="the page's password; required to bind `caixa web` to any address but"
        " loopback, and asked for on loopback too when set",
    )
    web_max_upload_mb: int = Field(
        default=1024, ge=1, description="the largest file the page's Drop takes, in MB"
    )
    ray_address: str = Field(
        default="",
        description="a Ray cluster to run accelerator steps on: its address (host:port, ray://..."
        " or auto); empty: local workers only",
    )
    ray_resource: str = Field(
        default="accelerator",
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="the Ray resource a node offers to take caixa's accelerator steps",
    )
    ray_local_steps: list[str] = Field(
        default=["index"],
        description="steps that stay on this machine even with a cluster: they keep state in"
        " caixa's home (the search index)",
    )
