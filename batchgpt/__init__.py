"""batchgpt: answer every prompt in a JSONL file through chatgpt.es, crash-safe and resumable.

What a library user needs: the provider and its session, the runner entry point, the errors.
"""

from batchgpt.config import RunConfig
from batchgpt.errors import (
    BatchGptError,
    JobError,
    MissingRequirementsError,
    ModelNotSupportedError,
    ProviderError,
    RetryableError,
)
from batchgpt.providers import ChatGptEs, ChatGptEsSession


def run(config: RunConfig) -> object:
    """Run a job (see `batchgpt.runner.run`); imported lazily to keep `import batchgpt` light."""
    from batchgpt.runner import run as run_job

    return run_job(config)


__all__ = [
    "BatchGptError",
    "ChatGptEs",
    "ChatGptEsSession",
    "JobError",
    "MissingRequirementsError",
    "ModelNotSupportedError",
    "ProviderError",
    "RetryableError",
    "RunConfig",
    "run",
]
