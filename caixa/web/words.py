"""Words the page shows for values that come from the daemon (states, kinds of failure),
marked for the catalogs here and translated where they are shown."""

from __future__ import annotations

from typing import Any


def N_(message: str) -> str:  # noqa: N802 (gettext's own name for "mark, translate later")
    return message


STATES = {
    "claiming": N_("being taken"),
    "queued": N_("queued"),
    "running": N_("running"),
    "publishing": N_("publishing"),
    "settling": N_("finishing"),
    "done": N_("done"),
    "duplicate": N_("duplicate"),
    "failed": N_("failed"),
}

# A failure's kind (the exception's class) -> what happened, in plain words, and the way out.
FAILURES = {
    "InputError": (
        N_(
            "The file itself cannot be used: it is empty, damaged, or not of a type this step reads."
        ),
        N_("Put a good copy of the file in the inbox, or retry once the file is fixed."),
    ),
    "BadPdfError": (
        N_("The PDF is damaged or protected, so its pages cannot be read."),
        N_(
            "Save it again from the program that made it (or remove its password), then drop it again."
        ),
    ),
    "StepUnavailableError": (
        N_("A program or model this step needs is not installed on this machine."),
        N_("Install what the Rules page says is missing, then retry."),
    ),
    "ModelNotFoundError": (
        N_("The model the rule names was not found on disk."),
        N_("Check the model's path in the rules file, then retry."),
    ),
    "StepTimeoutError": (
        N_("The step took longer than it is allowed to."),
        N_("Raise the rule's timeout (or CAIXA_STEP_TIMEOUT), then retry."),
    ),
    "WorkerDiedError": (
        N_("The worker running the step stopped, most often because memory ran out."),
        N_("Close other programs or choose a smaller model, then retry."),
    ),
    "PermissionError": (
        N_("caixa was not allowed to read or write a file it needed."),
        N_("Give the caixa user access to the file and its folders, then retry."),
    ),
    "OrphanedWork": (
        N_("The file was found in the work area with no job to finish it."),
        N_("Move it back into an inbox."),
    ),
}
STEP_FAILED = (
    N_("The step could not do its work on this file."),
    N_(
        "Read the message below, fix its cause (a setting in the rules, a model, the file), then retry."
    ),
)


def failure(error: dict[str, Any] | None) -> tuple[str, str]:
    """What happened and how to fix it, untranslated, for an error.json-like record."""
    kind = (error or {}).get("error", "")
    return FAILURES.get(kind, STEP_FAILED)
