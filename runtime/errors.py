"""User-facing errors. Each carries the exit code the CLI returns and a message that names the
problem and the fix; the CLI prints the message alone unless --debug asks for the traceback."""

from __future__ import annotations


class RuntimeUserError(Exception):
    """Bad input or configuration: exit code 2."""

    exit_code = 2


class UnsupportedModelError(RuntimeUserError):
    """An architecture, rope type or feature this runtime does not implement."""


class ModelNotFoundError(RuntimeUserError):
    """A model id, folder or file that cannot be found or read."""


class CapacityError(RuntimeUserError):
    """A request that would not fit the KV cache."""


class ConfigError(RuntimeUserError):
    """A benchmark YAML that is missing, malformed or holds an unknown key or a wrong type."""


class RuntimeFailure(Exception):
    """A failure while running (out of memory, non-finite logits): exit code 1."""

    exit_code = 1
