"""Every error workhorse raises on purpose.

    WorkhorseError
    ├── ConfigError            a workspace, plan or parameter is wrong
    ├── DependencyError        an optional heavy package (vllm, ...) is not installed
    ├── EngineError            the local vLLM engine could not start, answer or stop
    │   └── EngineStartTimeout
    ├── DataError              input data is unusable as a whole (not row-level: rows are quarantined)
    │   ├── ContractError      too many rows broke a data contract
    │   └── VersionExistsError an immutable version (golden set) is already there: never overwritten
    ├── ProviderError          a model call failed for good (after bounded retries)
    └── RolloutError           a rollout transition is not allowed (another rollout in progress, ...)

Messages name the use case, model and item where they are known. Catch at the flow boundary.
"""


class WorkhorseError(Exception):
    """Base class of workhorse's own errors."""


class ConfigError(WorkhorseError):
    """A workspace, migration plan or parameter is wrong."""


class DependencyError(WorkhorseError):
    """An optional package is missing; the message says how to install it."""


class EngineError(WorkhorseError):
    """The local inference engine failed."""


class EngineStartTimeout(EngineError):
    """The engine did not become healthy in time."""


class DataError(WorkhorseError):
    """An input is unusable as a whole (empty, binary, wrong format)."""


class ContractError(DataError):
    """More rows broke a data contract than the policy allows."""


class VersionExistsError(DataError):
    """A versioned artifact already exists; immutable versions are never overwritten."""


class ProviderError(WorkhorseError):
    """A model call failed after its bounded retries."""

    def __init__(self, message: str, *, error_type: str):
        super().__init__(message)
        self.error_type = error_type


class RolloutError(WorkhorseError):
    """A rollout transition is not allowed in the current state; the message names the use case."""
