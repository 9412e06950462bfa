"""The project's exceptions, each mapped to the exit code the CLI documents.

Every failure a user can cause or meet ends as one of these, so the CLI turns it
into a one-line message and an exit code in exactly one place (``cli.main``).
"""

from __future__ import annotations

import atexit
import os
import sys

EXIT_OK = 0
EXIT_GATE_FAILED = 1
EXIT_USAGE = 2
EXIT_TOOLCHAIN = 3
EXIT_UNVERIFIED = 4
EXIT_INTERRUPTED = 130


def outcome_code(error_codes: list[int], failed: bool, unverified: bool) -> int:
    """The exit code of a run of several packages, by precedence: a toolchain error (3), then
    any other job error (its own code, e.g. 2), then a failed gate (1), then an unverified
    package (4: built, but its runtime could not run it, and not allowed), then 0.

    Each step down is a milder fault: an error built nothing, a failed gate built something
    measured to be wrong, an unverified package built something nobody measured. A script
    checking ``$? -ne 0`` stops on all of them; one that tolerates 4 (``--allow-unverified``
    says the same) still stops on anything that did run and fail."""
    if error_codes:
        return EXIT_TOOLCHAIN if EXIT_TOOLCHAIN in error_codes else error_codes[0]
    if failed:
        return EXIT_GATE_FAILED
    return EXIT_UNVERIFIED if unverified else EXIT_OK


def exit_process(code: int) -> None:
    """End the process with ``code`` once its exit handlers have run and its output is flushed,
    without tearing down its modules: for torch and the toolchains that teardown costs ~2 s
    (5.3 vs 7.4 s for a bare import of all three) and frees nothing anyone needs. The CLI and
    each worker process end this way."""
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(code)


class EdgeExportError(Exception):
    """Base class: a message for the user plus an optional hint on what to do."""

    exit_code = EXIT_USAGE

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def one_line(self) -> str:
        text = " ".join(self.message.split())
        return f"{text} (hint: {self.hint})" if self.hint else text


class UsageError(EdgeExportError):
    """Bad flags, bad model spec, bad data files, bad recipes: exit 2."""


class CannotCarry(UsageError):
    """A target without a way to ship what the user's own quantization computes: refused when
    named, left out (and reported) when ``--target all`` brought it in."""


class UnsafeInputError(UsageError):
    """A file we refuse to read because reading it could run code or escape a directory."""


class PackageError(UsageError):
    """A model package that is malformed (manifest, schema, layout)."""


class OutputError(UsageError):
    """The output folder cannot take what we write (disk full, read-only, no permission)."""


def output_error(exc: BaseException) -> OutputError | None:
    """An OSError that is the output location's fault, as the user's error; else None."""
    import errno

    if not isinstance(exc, OSError):
        return None
    where = f" writing {exc.filename}" if exc.filename else ""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return OutputError(f"no space left on device{where}; nothing was published and "
                           "temporaries were removed", hint="free space or choose another --out")
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return OutputError(f"cannot write{where}: {exc.strerror}",
                           hint="choose a writable --out")
    return None


class ToolchainError(EdgeExportError):
    """torch.export or a target toolchain failed to export/lower the model: exit 3."""

    exit_code = EXIT_TOOLCHAIN


class GateFailed(EdgeExportError):
    """A parity or accuracy gate failed, or a package does not verify: exit 1."""

    exit_code = EXIT_GATE_FAILED


class Unverified(EdgeExportError):
    """The artifact could not be run on its runtime here, and --allow-unverified was not
    given: exit 4 (the package is kept under OUT/.failed/, never published)."""

    exit_code = EXIT_UNVERIFIED


class Interrupted(EdgeExportError):
    """Ctrl-C: workers stopped and temporaries removed: exit 130."""

    exit_code = EXIT_INTERRUPTED


def summarize_exception(exc: BaseException, limit: int = 240) -> str:
    """The root cause of a toolchain exception in one line (no traceback)."""
    root = exc
    while root.__cause__ is not None:
        root = root.__cause__
    lines = [ln.strip() for ln in str(root).strip().splitlines() if ln.strip()]
    text = lines[0] if lines else ""
    text = f"{type(root).__name__}: {text}" if text else type(root).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"
