"""Settings from CAIXA_* environment variables (pydantic-settings); the CLI overrides a few."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from caixa.daemon.journal import journal_path


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
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @property
    def journal_path(self) -> Path:
        return journal_path(self.home)

    @property
    def work_dir(self) -> Path:
        return self.home / "work"
