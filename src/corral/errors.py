"""The whole exception tree of corral, and the exit code each class maps to.

    CorralError                      base; carries a message that says what to do next
    ├── UsageError (exit 2)          cannot be carried out as given; nothing was started
    │   ├── SpecError                a problem in corral.yaml: file:line:column, field path
    │   ├── MissingFileError         a file or directory the spec names is missing
    │   ├── PortInUseError           a route port already taken
    │   ├── PrerequisiteError        a missing prerequisite such as `bwrap`
    │   └── StalePlanError           a saved plan whose recorded state has changed
    ├── OperationFailed (exit 1)     tried and failed, or rolled back
    │   ├── RolloutFailed            a roll-out that was rolled back
    │   ├── BakeError                an image could not be baked
    │   ├── DriverError              the runtime failed to start/stop/observe an instance
    │   ├── StateError               the state store failed or holds something impossible
    │   ├── AgentError               the agent could not be reached or answered an error
    │   └── MetricsError             a metrics provider (Prometheus) could not answer
    ├── LockedError (exit 3)         the lock is held by someone else (names the holder)
    └── DriftFound (exit 4)          the auditor found drift

Third-party exceptions are translated at the boundary (`raise X(...) from exc`); the CLI maps
classes to exit codes in one place (`exit_code_for`).
"""

from __future__ import annotations

from typing import Any


class CorralError(Exception):
    """Base of every error corral raises on purpose."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}\n{self.hint}"
        return self.message


class UsageError(CorralError):
    """The request cannot be carried out as given. Nothing was started (exit 2)."""

    exit_code = 2


class SpecError(UsageError):
    """One or more problems in a spec file, each with its position and field path."""

    def __init__(self, problems: list[SpecProblem], *, file: str) -> None:
        self.problems = problems
        self.file = file
        lines = [p.render() for p in problems]
        super().__init__(
            "\n".join(lines),
            hint=f"Fix {file} and run `corral validate` again.",
        )


class SpecProblem:
    """One problem in a spec: where it is, which field, what is wrong, what to do."""

    def __init__(
        self,
        *,
        file: str,
        line: int | None,
        column: int | None,
        path: str,
        message: str,
        hint: str | None = None,
    ) -> None:
        self.file = file
        self.line = line
        self.column = column
        self.path = path
        self.message = message
        self.hint = hint

    def render(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        text = f"{where}: {self.path or '(top level)'}: {self.message}"
        if self.hint:
            text += f" ({self.hint})"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "path": self.path,
            "message": self.message,
            "hint": self.hint,
        }


class MissingFileError(UsageError):
    """A file or directory that the spec names does not exist."""


class PortInUseError(UsageError):
    """A route port is already taken by another process."""


class PrerequisiteError(UsageError):
    """A program corral needs (such as `bwrap`) is missing."""


class StalePlanError(UsageError):
    """A saved plan was made against recorded state that has changed since."""


class OperationFailed(CorralError):
    """Tried and failed, or rolled back (exit 1)."""

    exit_code = 1


class RolloutFailed(OperationFailed):
    """A roll-out failed and was rolled back."""


class BakeError(OperationFailed):
    """An image could not be baked."""


class DriverError(OperationFailed):
    """The runtime failed to start, stop or observe an instance."""


class StateError(OperationFailed):
    """The state store failed, or holds something impossible."""


class AgentError(OperationFailed):
    """The agent could not be reached, or answered with an error."""


class MetricsError(OperationFailed):
    """A metrics provider could not answer: unreachable, a bad query, no data of that shape.

    An analysis that meets it is inconclusive (with this message), never a crash."""


class LockedError(CorralError):
    """The lock is held by someone else (exit 3). The message names the holder."""

    exit_code = 3

    def __init__(
        self, message: str, *, holder: dict[str, Any] | None = None, hint: str | None = None
    ) -> None:
        super().__init__(
            message,
            hint=hint or "Wait for it to finish, or if its holder is dead: `corral lock release`.",
        )
        self.holder = holder or {}


class DriftFound(CorralError):
    """The auditor found drift (exit 4)."""

    exit_code = 4


def exit_code_for(error: BaseException) -> int:
    """The one place that maps an error to the process exit code."""
    if isinstance(error, CorralError):
        return error.exit_code
    return 1
