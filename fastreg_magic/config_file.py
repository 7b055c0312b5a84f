"""What a Flyte config file says, checked before flytekit reads it.

flytekit only warns about a YAML file it cannot parse ("Error ... reading yaml config file ...,
ignoring") and falls back to ``localhost:30080``: the user would be told that a backend they never
named is unreachable. Here a file that cannot be read, or that names no endpoint, is one message
naming the file; and a file written by ``fastreg sandbox`` says which sandbox (data dir) it belongs to.

    check_readable("~/.flyte/config.yaml")     # BackendError naming the line of a YAML error
    names_endpoint(path)                       # False: "names no admin.endpoint"
"""

from __future__ import annotations

import os
from pathlib import Path

from fastreg_magic.errors import BackendError

SANDBOX_CONFIG_MARKER = "# Written by `fastreg sandbox`"
# The line naming the sandbox's data dir in the config files it writes (see sandbox.server.config_text).
DATA_DIR_MARKER = "# Data dir: "
SANDBOX_STATE_NAME = "sandbox.json"  # what a sandbox keeps in its data dir (sandbox.background.STATE_NAME)


def is_yaml(config_file: str) -> bool:
    """flytekit reads a config as YAML by its name, and as the legacy INI format otherwise."""
    return config_file.endswith(("yaml", "yml"))


def check_readable(config_file: str) -> None:
    """BackendError when flytekit would ignore the file: a YAML syntax error (with its line), or no mapping."""
    if not is_yaml(config_file):
        return
    import yaml

    try:
        with open(config_file, encoding="utf-8") as handle:
            content = yaml.safe_load(handle)
    except yaml.YAMLError as exc:
        raise BackendError(f"Flyte config {config_file} cannot be read: {_yaml_problem(exc)}.",
                           "Fix the YAML there (indentation, `key: value` pairs), or pass another --config.") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise BackendError(f"Flyte config {config_file} cannot be read: {exc}.",
                           "Check the file, or pass another --config.") from exc
    if content is not None and not isinstance(content, dict):
        raise BackendError(f"Flyte config {config_file} cannot be read: it holds a {type(content).__name__}, "
                           "not `section: settings` pairs.", "Start it with `admin:` and its settings, or pass another --config.")


def _yaml_problem(exc) -> str:
    """The YAML error in one line, with the (1-based) line it is on."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    context = getattr(exc, "context", None)
    text = f"{context}, {problem}" if context else problem
    return f"{text} (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else text


def no_endpoint_error(config_file: str) -> BackendError:
    return BackendError(
        f"Flyte config {config_file} names no admin.endpoint (and FLYTE_PLATFORM_URL is not set).",
        "Add the backend to it (`admin:` then `  endpoint: dns:///HOST:PORT`), pass --endpoint HOST:PORT, "
        "or pass another --config.",
    )


def written_by_sandbox(config_file: str) -> bool:
    """`fastreg sandbox` opens the config files it writes with this comment (see sandbox.server.config_text)."""
    try:
        with open(config_file, encoding="utf-8") as f:
            return f.readline().startswith(SANDBOX_CONFIG_MARKER)
    except OSError:
        return False


def sandbox_data_dir(config_file: str) -> str | None:
    """The data dir of the sandbox that wrote ``config_file``: named in the file, or the folder it is
    in when that folder is the data dir (its own ``config.yaml``, beside its state file)."""
    try:
        with open(config_file, encoding="utf-8") as f:
            for line in f:
                if line.startswith(DATA_DIR_MARKER):
                    return line[len(DATA_DIR_MARKER):].strip()
    except OSError:
        return None
    folder = Path(config_file).parent
    return str(folder) if (folder / SANDBOX_STATE_NAME).exists() else None


def not_running_hint(config_file: str) -> str:
    """What to do when the sandbox that wrote ``config_file`` does not answer: nothing restarts it by itself."""
    data_dir = sandbox_data_dir(config_file)
    where = f"--data-dir {data_dir}" if data_dir else "--data-dir DIR (the data dir it had)"
    return (f"The sandbox that wrote {config_file} is not running: start it again "
            f"(`fastreg sandbox {where} --config-out {config_file}`) or pass another --config.")


def endpoint_from_environment() -> bool:
    """Whether FLYTE_PLATFORM_URL sets the endpoint (flytekit lets it win over the config file's)."""
    return bool(os.environ.get("FLYTE_PLATFORM_URL"))
