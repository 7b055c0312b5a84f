"""Secrets for tasks that ask for them: ``@task(secret_requests=[Secret(group="g", key="k")])``.

On a cluster, Flyte's secret webhook gives a task each secret it requests, and only those: as a
file under ``FLYTE_SECRETS_DEFAULT_DIR`` and, when asked, as an ``_FSEC_<GROUP>_<KEY>`` variable;
flytekit's ``current_context().secrets.get("g", "k")`` reads either. The sandbox has no secret
store of its own, so it takes a requested secret from this machine, in this order:

* the sandbox's own environment: ``_FSEC_G_K`` (group, version and key upper-cased, joined by ``_``);
* a file in its data dir: ``<data dir>/secrets/g/k`` (lower-cased, as flytekit names the file),
  whose content is the value (surrounding blanks and newlines dropped, as flytekit drops them)

and gives it to the task both ways, as the cluster would. A requested secret found in neither
place fails the task before it starts, naming the secret and both places to put it, instead of
flytekit's "Please make sure to add secret_requests" from inside the task.

    env = secrets_env(template, secrets_dir)   # raises MissingSecret
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

from flyteidl.core import security_pb2, tasks_pb2

SECRETS_DIR = "secrets"  # under the sandbox's data dir
ENV_PREFIX = "_FSEC_"  # flytekit's default SecretsConfig.env_prefix, and the cluster webhook's


class MissingSecret(Exception):
    """A task requests a secret this machine does not have; the message says where to put it."""


def secrets_env(
    template: tasks_pb2.TaskTemplate, secrets_dir: Path | None, environ: Mapping[str, str] = os.environ
) -> dict[str, str]:
    """The variables that give a task the secrets it requests (none when it requests none)."""
    requested = list(template.security_context.secrets)
    if not requested:
        return {}
    env = {"FLYTE_SECRETS_ENV_PREFIX": ENV_PREFIX}
    if secrets_dir is not None:
        env.update(FLYTE_SECRETS_DEFAULT_DIR=str(secrets_dir), FLYTE_SECRETS_FILE_PREFIX="")
    for secret in requested:
        value, file = _lookup(secret, secrets_dir, environ)
        if value is None:
            raise MissingSecret(_missing_message(template, secret, secrets_dir))
        env[env_name(secret)] = value
        if secret.env_var:  # a name of the user's choosing: the value, or the file's path if mounted as a file
            as_file = secret.mount_requirement != security_pb2.Secret.ENV_VAR and file is not None
            env[secret.env_var] = str(file) if as_file else value
    return env


def env_name(secret: security_pb2.Secret) -> str:
    """``_FSEC_G_K``: the variable flytekit reads a secret from (``SecretsManager.get_secrets_env_var``)."""
    return ENV_PREFIX + "_".join(part.upper() for part in _parts(secret))


def secret_file(secret: security_pb2.Secret, secrets_dir: Path) -> Path:
    """``<secrets dir>/g/k``: the file flytekit reads a secret from (``SecretsManager.get_secrets_file``)."""
    return secrets_dir.joinpath(*(part.lower() for part in _parts(secret)))


def _parts(secret: security_pb2.Secret) -> list[str]:
    return [part for part in (secret.group, secret.group_version, secret.key) if part]


def _lookup(secret, secrets_dir: Path | None, environ: Mapping[str, str]) -> tuple[str | None, Path | None]:
    """The secret's value (None: not found) and its file, if it is one."""
    file = secret_file(secret, secrets_dir) if secrets_dir is not None else None
    has_file = file is not None and file.is_file()
    value = environ.get(env_name(secret))
    if value is None and has_file:
        try:
            value = file.read_text().strip()
        except (OSError, UnicodeDecodeError):
            value = None
    return value, file if has_file else None


def _missing_message(template, secret, secrets_dir: Path | None) -> str:
    shown = ", ".join(f"{field}={getattr(secret, field)!r}" for field in ("group", "group_version", "key")
                      if getattr(secret, field))
    places = f"set {env_name(secret)} in the sandbox's environment"
    if secrets_dir is not None:
        places = f"put its value in the file {secret_file(secret, secrets_dir)}, or {places} (then restart it)"
    return (
        f"Task {template.id.name!r} requests the secret Secret({shown}), which the sandbox does not have: "
        f"{places}, and run again."
    )
