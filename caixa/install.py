"""`caixa install-service`: a systemd unit with this machine's paths (the venv's `caixa`, the
rules file, the home, the folders the rules write), a drop-in for the settings, and the
systemctl commands to run.

The system unit runs as a dedicated user in a sandbox: the whole system read-only except the
folders caixa writes. Those are opened as few, wide folders rather than one per path, because
each ReadWritePaths= entry becomes a mount of its own and rename(2) fails across mounts (EXDEV)
even on one filesystem: every claim, publish and archive would become a copy.
"""

from __future__ import annotations

import grp
import os
import pwd
import shlex
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from caixa.config import rules as rules_file
from caixa.config.settings import Settings
from caixa.errors import CaixaError

SYSTEM_HOME = Path("/var/lib/caixa")
SYSTEM_UNITS = Path("/etc/systemd/system")
SERVICE_USER = "caixa"
WATCHDOG_SECONDS = 60
STOP_MARGIN = 10  # seconds between the daemon's grace for steps and systemd's SIGKILL
GPU_GROUPS = ("video", "render")  # /dev/dri and /dev/kfd (AMD); NVIDIA's nodes are open to all
# Folders too wide to open whole: several of caixa's folders under one of these stay apart.
SHARED = {Path(p) for p in ("/", "/home", "/srv", "/var", "/var/lib", "/mnt", "/media", "/opt",
                            "/run", "/run/media", "/tmp", "/usr", "/usr/local", "/etc")}  # fmt: skip
HOMES = (Path("/home"), Path("/root"), Path("/run/user"))


class InstallError(CaixaError):
    """The unit cannot be written where it belongs."""


@dataclass(frozen=True)
class Layout:
    """Everything about this machine that goes into the unit."""

    user_unit: bool
    caixa: Path  # the executable, in its virtual environment
    rules: Path
    home: Path
    writable: tuple[Path, ...]  # ReadWritePaths=, already merged
    network: bool  # a rule talks to an LLM server: AF_INET/AF_INET6 allowed
    reads_homes: bool  # something caixa needs lies under /home: ProtectHome=read-only
    stop_timeout: float
    memory_max: str
    groups: tuple[str, ...] = ()


def plan(settings: Settings, user_unit: bool, home: Path | None) -> Layout:
    """The layout of this machine: the rules are read (and must be valid) for their folders."""
    ruleset = rules_file.load(settings.rules)
    home = (home or (settings.home if user_unit else SYSTEM_HOME)).expanduser().absolute()
    folders = [home, *ruleset.inboxes(), ruleset.outputs, ruleset.processed, ruleset.failed]
    params = [p for r in ruleset.rules for s in r.steps for p in s.params.values()]
    caixa = executable()
    read = [caixa, ruleset.source, *folders, *(Path(p) for p in params if _is_abs_path(p))]
    return Layout(
        user_unit=user_unit,
        caixa=caixa,
        rules=ruleset.source,
        home=home,
        writable=writable_roots(folders),
        network=any(s.params.get("server") for r in ruleset.rules for s in r.steps),
        reads_homes=any(p.is_relative_to(h) for p in read for h in HOMES),
        stop_timeout=settings.stop_timeout,
        memory_max=settings.memory_max,
        groups=() if user_unit else tuple(g for g in GPU_GROUPS if _group_exists(g)),
    )


def executable() -> Path:
    """The `caixa` beside this Python: the virtual environment's, not one found first on PATH."""
    beside = Path(sys.executable).parent / "caixa"
    found = beside if beside.exists() else Path(shutil.which("caixa") or "")
    if not found.name:
        raise InstallError("cannot find the `caixa` command; install caixa, then run this again")
    return found.absolute()


def writable_roots(folders: list[Path]) -> tuple[Path, ...]:
    """The folders to open: folders that share a folder of their own (not /, /home, /srv...)
    are opened as that one folder; the others each apart."""
    roots: list[Path] = []
    for folder in sorted(set(folders)):
        for i, root in enumerate(roots):
            common = Path(os.path.commonpath([root, folder]))
            if common not in SHARED.union(HOMES) and common.parent != Path("/run/user"):
                roots[i] = common
                break
        else:
            roots.append(folder)
    return tuple(sorted(r for r in roots if not any(r != o and r.is_relative_to(o) for o in roots)))


def _is_abs_path(value: object) -> bool:
    return isinstance(value, str) and value.startswith("/") and "\n" not in value


def _group_exists(name: str) -> bool:
    try:
        grp.getgrnam(name)
    except KeyError:
        return False
    return True


def quote(value: str, command: bool = False) -> str:
    """One word of a unit file: '%' starts a specifier, and in a command '$' a variable, so
    they are doubled; a word with blanks or quotes is put in double quotes."""
    value = value.replace("%", "%%")
    if command:
        value = value.replace("$", "$$")
    if any(c in value for c in " \t\"'\\"):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return value


def render_unit(layout: Layout) -> str:
    """The unit file's text."""
    families = "AF_UNIX AF_INET AF_INET6" if layout.network else "AF_UNIX"
    run = [str(layout.caixa), "run", "--rules", str(layout.rules), "--home", str(layout.home)]
    lines = [
        "# caixa: drop a file in an inbox, get the local AI result.",
        "# Written by `caixa install-service`; run it again after moving the rules, the home or",
        "# the folders the rules name. Settings: the drop-in caixa.service.d/settings.conf.",
        "[Unit]",
        "Description=caixa: local AI results for the files dropped in its inboxes",
        *([] if layout.user_unit else [f"RequiresMountsFor={_paths(layout.writable)}"]),
        "",
        "[Service]",
        "# READY once the inboxes are scanned; STATUS with the queue; the watchdog petted only",
        "# while the watcher, the scheduler and the workers answer",
        "Type=notify",
        "NotifyAccess=main",
        f"WatchdogSec={WATCHDOG_SECONDS}",
        f"ExecStart={' '.join(quote(a, command=True) for a in run)}",
        "# reloads the rules (so does any change to the rules file)",
        "ExecReload=kill -HUP $MAINPID",
        "Restart=on-failure",
        "RestartSec=5",
        "# exit 3: the rules file is invalid; restarting cannot help until it is fixed",
        "RestartPreventExitStatus=3",
        "# SIGTERM to caixa alone: it lets running steps finish for CAIXA_STOP_TIMEOUT, then",
        "# leaves; what is left resumes at the next start",
        "KillMode=mixed",
        f"TimeoutStopSec={layout.stop_timeout + STOP_MARGIN:g}",
        f"MemoryMax={layout.memory_max}",
    ]
    lines += _user_sandbox() if layout.user_unit else _system_sandbox(layout)
    lines += [
        f"RestrictAddressFamilies={families}",
        "",
        "[Install]",
        f"WantedBy={'default.target' if layout.user_unit else 'multi-user.target'}",
    ]
    return "\n".join(lines) + "\n"


def render_web_unit(layout: Layout, host: str = "127.0.0.1", port: int = 8484) -> str:
    """The page's unit (`caixa web`): its own process beside the daemon, as the same user and
    sandbox, since a retry moves sources back and a drop writes into the inboxes."""
    run = [str(layout.caixa), "web", "--host", host, "--port", str(port)]
    run += ["--rules", str(layout.rules), "--home", str(layout.home)]
    lines = [
        "# caixa's page: see, search, ask, drop and fix. Written by `caixa install-service --web`.",
        "# Off loopback (--host) it needs CAIXA_WEB_PASSWORD, set in caixa-web.service.d/settings.conf.",
        "[Unit]",
        "Description=caixa's web page",
        "After=network.target caixa.service",
        *([] if layout.user_unit else [f"RequiresMountsFor={_paths(layout.writable)}"]),
        "",
        "[Service]",
        "Type=simple",
        f"ExecStart={' '.join(quote(a, command=True) for a in run)}",
        "Restart=on-failure",
        "RestartSec=5",
        f"MemoryMax={layout.memory_max}",
    ]
    lines += _user_sandbox() if layout.user_unit else _system_sandbox(layout)
    lines += [
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
        "",
        "[Install]",
        f"WantedBy={'default.target' if layout.user_unit else 'multi-user.target'}",
    ]
    return "\n".join(lines) + "\n"


def _paths(paths: tuple[Path, ...]) -> str:
    return " ".join(quote(str(p)) for p in paths)


def _system_sandbox(layout: Layout) -> list[str]:
    state = (
        [f"StateDirectory={layout.home.relative_to('/var/lib')}"]
        if layout.home.is_relative_to("/var/lib") and layout.home != Path("/var/lib")
        else []
    )
    groups = [f"SupplementaryGroups={' '.join(layout.groups)}"] if layout.groups else []
    return [
        f"User={SERVICE_USER}",
        f"Group={SERVICE_USER}",
        *groups,
        *state,
        "CacheDirectory=caixa",
        "Environment=XDG_CACHE_HOME=%C/caixa",
        "# results are shared with the group caixa, the people who drop files",
        "UMask=0007",
        "# Sandbox: the system read-only but for the home and the rules' folders",
        "ProtectSystem=strict",
        f"ReadWritePaths={_paths(layout.writable)}",
        f"ProtectHome={'read-only' if layout.reads_homes else 'yes'}",
        "PrivateTmp=yes",
        "# no PrivateDevices=: the GPU's device nodes (/dev/nvidia*, /dev/dri, /dev/kfd) stay",
        "# no MemoryDenyWriteExecute=: the model libraries compile code at run time",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=",
        "ProtectProc=invisible",
        "ProtectKernelTunables=yes",
        "ProtectKernelModules=yes",
        "ProtectKernelLogs=yes",
        "ProtectControlGroups=yes",
        "ProtectClock=yes",
        "ProtectHostname=yes",
        "RestrictNamespaces=yes",
        "RestrictRealtime=yes",
        "RestrictSUIDSGID=yes",
        "LockPersonality=yes",
        "RemoveIPC=yes",
        "SystemCallArchitectures=native",
        "SystemCallFilter=@system-service",
        "SystemCallErrorNumber=EPERM",
    ]


def _user_sandbox() -> list[str]:
    return [
        "# Sandbox: what works without user namespaces. ProtectSystem=, PrivateTmp= and the like",
        "# need them in a user unit, and some distributions forbid them: the service would not",
        "# start at all.",
        "NoNewPrivileges=yes",
        "RestrictRealtime=yes",
        "RestrictSUIDSGID=yes",
        "LockPersonality=yes",
        "SystemCallArchitectures=native",
        "SystemCallFilter=@system-service",
        "SystemCallErrorNumber=EPERM",
    ]


def render_dropin(environ: dict[str, str]) -> str:
    """The settings drop-in: the CAIXA_* variables set now, and every other one commented out
    with its default, so the settings are found where they are changed."""
    lines = [
        "# Settings of the caixa service (CAIXA_* variables; README, Settings). After a change:",
        "#   systemctl daemon-reload && systemctl restart caixa",
        "# CAIXA_STOP_TIMEOUT and CAIXA_MEMORY_MAX are also in the unit (TimeoutStopSec=,",
        "# MemoryMax=): after changing them, run `caixa install-service` again.",
        "[Service]",
    ]
    for name, field in Settings.model_fields.items():
        if name in ("rules", "home"):  # on the command line of ExecStart=
            continue
        var = f"CAIXA_{name.upper()}"
        value = environ.get(var)
        if value is None:
            default = field.get_default(call_default_factory=True)
            about = f"  # {field.description}" if field.description else ""
            lines.append(f"#Environment={quote(f'{var}={default}')}{about}")
        else:
            lines.append(f"Environment={quote(f'{var}={value}')}")
    return "\n".join(lines) + "\n"


def unit_dir(user_unit: bool) -> Path:
    if not user_unit:
        return SYSTEM_UNITS
    config = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(config) / "systemd" / "user"


def install(layout: Layout, target: Path, environ: dict[str, str], web: bool = False) -> list[Path]:
    """Write the unit and its drop-in under `target` (and the page's, with `web`); return the
    files written. The drop-ins are readable by their owner alone: the page's password may
    be there."""
    units = [("caixa", render_unit(layout))]
    if web:
        units.append(("caixa-web", render_web_unit(layout)))
    written = []
    try:
        for name, text in units:
            unit = target / f"{name}.service"
            dropin = target / f"{name}.service.d" / "settings.conf"
            dropin.parent.mkdir(parents=True, exist_ok=True)
            unit.write_text(text)
            dropin.touch(mode=0o600)
            dropin.chmod(0o600)
            dropin.write_text(render_dropin(environ))
            written += [unit, dropin]
    except OSError as exc:
        hint = (
            "run it as root (sudo), or give --print to see the unit"
            if isinstance(exc, PermissionError)
            else "give --unit-dir a folder that can be written"
        )
        raise InstallError(f"cannot write {exc.filename}: {exc.strerror}; {hint}") from None
    return written


def next_steps(layout: Layout, web: bool = False) -> list[str]:
    """What to run next, in order, and notes on anything the layout costs."""
    units = "caixa caixa-web" if web else "caixa"
    page = ["# the page: http://127.0.0.1:8484/"] if web else []
    if layout.user_unit:
        return [
            "systemctl --user daemon-reload",
            f"systemctl --user enable --now {units}",
            *page,
            "loginctl enable-linger  # to keep it running while you are logged out",
            "journalctl --user -u caixa -f  # its log; `systemctl --user status caixa`: the queue",
        ]
    notes = []
    if len(layout.writable) > 1:
        notes.append(
            "note: caixa writes in folders with no common folder of its own ("
            + ", ".join(map(str, layout.writable))
            + "); inside the service each is a mount of its own, so files move between them"
            " by copying, not renaming. Keep the home, inboxes and outputs under one folder."
        )
    steps = []
    if not _user_exists(SERVICE_USER):
        steps.append(
            f"useradd --system --user-group --home-dir {SYSTEM_HOME} --shell /usr/sbin/nologin"
            f" {SERVICE_USER}"
        )
    for root in layout.writable:
        where = shlex.quote(str(root))
        if root.is_relative_to(layout.home) and layout.home.is_relative_to("/var/lib"):
            continue  # StateDirectory= makes it, owned by caixa
        if not root.exists():
            steps.append(f"install -d -o {SERVICE_USER} -g {SERVICE_USER} -m 2770 {where}")
        else:
            notes.append(
                f"note: the user {SERVICE_USER} must be able to write {root}, e.g."
                f" chgrp -R {SERVICE_USER} {where} && chmod -R g+rwX {where}"
            )
    if any(layout.caixa.is_relative_to(h) for h in HOMES):
        notes.append(f"note: the user {SERVICE_USER} must be able to read {layout.caixa.parent}")
    return [
        *steps,
        "systemctl daemon-reload",
        f"systemctl enable --now {units}",
        "journalctl -u caixa -f  # its log; `systemctl status caixa`: the queue",
        *page,
        *notes,
    ]


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True
