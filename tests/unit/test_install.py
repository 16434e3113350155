"""`caixa install-service`: units with this machine's paths that systemd-analyze accepts, and a
sandbox opened where caixa writes, as few mounts as possible (a rename cannot cross mounts).

Run this file (`python -m tests.unit.test_install`) to rewrite the reference units in systemd/.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from caixa.config.settings import Settings
from caixa.install import Layout, plan, render_unit, render_web_unit, writable_roots
from tests.conftest import CAIXA, World

SYSTEMD = Path(__file__).parents[2] / "systemd"
# The standard layouts the reference units in systemd/ are written for.
REFERENCES = {
    "caixa.service": Layout(
        user_unit=False,
        caixa=Path("/opt/caixa/bin/caixa"),
        rules=Path("/etc/caixa/rules.yaml"),
        home=Path("/var/lib/caixa"),
        writable=(Path("/var/lib/caixa"),),
        network=False,
        reads_homes=False,
        stop_timeout=80,
        memory_max="75%",
        groups=("video", "render"),
    ),
    "caixa-user.service": Layout(
        user_unit=True,
        caixa=Path("/home/ana/.local/share/caixa-venv/bin/caixa"),
        rules=Path("/home/ana/caixa/rules.yaml"),
        home=Path("/home/ana/.local/share/caixa"),
        writable=(Path("/home/ana"),),
        network=False,
        reads_homes=True,
        stop_timeout=80,
        memory_max="75%",
    ),
}

RULES = """
defaults:
  outputs: data/outputs
  processed: data/processed
  failed: data/failed
rules:
  - name: docs
    inbox: data/inbox/docs
    steps: [copy]
"""


def test_the_reference_units_are_what_install_service_writes() -> None:
    for name, layout in REFERENCES.items():
        assert (SYSTEMD / name).read_text() == render_unit(layout), (
            f"systemd/{name} is stale: python -m tests.unit.test_install"
        )
    assert (SYSTEMD / "caixa-web.service").read_text() == render_web_unit(
        REFERENCES["caixa.service"]
    ), "systemd/caixa-web.service is stale: python -m tests.unit.test_install"


def test_the_web_unit_passes_systemd_analyze_verify(world: World) -> None:
    world.write_rules(RULES)
    units = world.root / "units"
    args = ["install-service", "--rules", str(world.rules), "--home", str(world.root / "data/home")]
    done = world.caixa(*args, "--unit-dir", str(units), "--web")
    assert done.returncode == 0, done.stderr
    assert "systemctl enable --now caixa caixa-web" in done.stdout
    unit = (units / "caixa-web.service").read_text()
    home = world.root / "data" / "home"
    assert f"\nExecStart={CAIXA} web --host 127.0.0.1 --port 8484 --rules {world.rules}" in unit
    assert f" --home {home}\n" in unit
    dropin = units / "caixa-web.service.d" / "settings.conf"
    assert "#Environment=CAIXA_WEB_PASSWORD=None" in dropin.read_text()
    assert dropin.stat().st_mode & 0o077 == 0  # the password may be written there
    verify = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(units / "caixa-web.service")],
        env={**os.environ, "SYSTEMD_UNIT_PATH": f"{units}:", "XDG_RUNTIME_DIR": str(world.root)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (verify.returncode, verify.stderr) == (0, "")


@pytest.mark.parametrize("user", [False, True], ids=["system", "user"])
def test_the_generated_units_pass_systemd_analyze_verify(world: World, user: bool) -> None:
    world.write_rules(RULES)
    units = world.root / "units"
    world.env["CAIXA_LOG_LEVEL"] = "debug"
    args = ["install-service", "--rules", str(world.rules), "--home", str(world.root / "data/home")]
    done = world.caixa(*args, "--unit-dir", str(units), *(["--user"] if user else []))
    assert done.returncode == 0, done.stderr
    assert "systemctl" + (" --user" if user else "") + " enable --now caixa" in done.stdout
    unit = (units / "caixa.service").read_text()
    home = world.root / "data" / "home"
    assert f"\nExecStart={CAIXA} run --rules {world.rules} --home {home}\n" in unit
    dropin = (units / "caixa.service.d" / "settings.conf").read_text()
    assert "\nEnvironment=CAIXA_LOG_LEVEL=debug\n" in dropin
    assert "\n#Environment=CAIXA_STOP_TIMEOUT=80.0  # on SIGTERM" in dropin

    # SYSTEMD_UNIT_PATH makes verify read the drop-in beside the unit too. The system unit's
    # User=caixa need not exist for verify (it is checked when the service starts).
    verify = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *(["--user"] if user else []),
         str(units / "caixa.service")],
        env={**os.environ, "SYSTEMD_UNIT_PATH": f"{units}:", "XDG_RUNTIME_DIR": str(world.root)},
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip
    assert (verify.returncode, verify.stderr) == (0, "")


def test_one_wide_folder_is_opened_when_caixa_has_one_else_each_folder() -> None:
    own = [Path("/srv/caixa/home"), Path("/srv/caixa/in/a"), Path("/srv/caixa/out")]
    assert writable_roots(own) == (Path("/srv/caixa"),)
    apart = [Path("/var/lib/caixa"), Path("/srv/in"), Path("/srv/in/sub"), Path("/srv/out")]
    assert writable_roots(apart) == (Path("/srv/in"), Path("/srv/out"), Path("/var/lib/caixa"))
    people = [Path("/home/ana/in"), Path("/home/bia/in")]
    assert writable_roots(people) == tuple(people)
    assert writable_roots([Path("/home/ana/in"), Path("/home/ana/out")]) == (Path("/home/ana"),)


def test_the_sandbox_follows_the_rules(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    local = render_unit(plan(Settings(rules=rules), user_unit=False, home=tmp_path / "data/home"))
    assert "\nReadWritePaths=" + str(tmp_path / "data") + "\n" in local
    assert "\nRestrictAddressFamilies=AF_UNIX\n" in local
    assert "\nProtectHome=yes\n" in local
    assert "\nStateDirectory=" not in local
    assert "\nTimeoutStopSec=90\n" in local

    rules.write_text(
        RULES
        + "  - name: ask\n    inbox: data/inbox/ask\n    steps:\n"
        + "      - llm: {task: summarize, server: 'http://127.0.0.1:8080/v1'}\n"
        + "      - flaky: {needs: /home/ana/models/ready}\n"
    )
    served = render_unit(plan(Settings(rules=rules, stop_timeout=20), user_unit=False, home=None))
    assert "\nRestrictAddressFamilies=AF_UNIX AF_INET AF_INET6\n" in served  # the LLM server
    assert "\nProtectHome=read-only\n" in served  # a path under /home must stay readable
    assert "\nStateDirectory=caixa\n" in served  # the home: /var/lib/caixa
    assert "\nTimeoutStopSec=30\n" in served
    assert f"\nReadWritePaths={tmp_path / 'data'} /var/lib/caixa\n" in served


if __name__ == "__main__":
    for name, layout in REFERENCES.items():
        (SYSTEMD / name).write_text(render_unit(layout))
    (SYSTEMD / "caixa-web.service").write_text(render_web_unit(REFERENCES["caixa.service"]))
