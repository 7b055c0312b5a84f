"""The options of one run, as ``pyflyte run --remote`` takes them, checked before anything is sent.

    reg.with_options(overwrite_cache=True, envs={"LOG_LEVEL": "debug"}).launch("pipeline", n=3)
    nightly = LaunchOptions(labels={"team": "ml"}, tags=["nightly"])
    reg.with_options(nightly).launch("pipeline", n=3)

`LaunchOptions` checks every value as it is made, by the rules FlyteAdmin applies (label keys and values,
at most 16 labels, run names) and those of the Kubernetes objects a run becomes (annotation keys,
environment variable and service account names), so a bad value is one `LaunchOptionRefused` naming the
option, before any request. `flytekit_arguments` is what flytekit's ``FlyteRemote.execute_remote_task_lp``
takes for them (its `Options` and keywords, as ``pyflyte run`` builds them), which puts them in the run's
ExecutionSpec; `from_spec` reads them back from one. `options_text` is the line a run's view shows.
`parse_form_options` reads the launch form's "Options" section.
"""

from __future__ import annotations

import dataclasses
import difflib
import html
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from fastreg_magic.errors import RunError

# Kubernetes' own checks (k8s.io/apimachinery/pkg/util/validation), which FlyteAdmin calls for labels
# (validation.go: IsQualifiedName, IsValidLabelValue); no Python package carries them, so they are here.
_NAME_PART = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_ENV_NAME = re.compile(r"[-._a-zA-Z][-._a-zA-Z0-9]*")  # IsEnvVarName
# FlyteAdmin takes a run name of at most 63 characters matching ^[a-z][a-z\-0-9]*$ (execution_validator.go);
# the run then becomes a Kubernetes object of that name, which must also end with a letter or digit.
_RUN_NAME = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
NAME_MAX = 63
MAX_LABELS = 16  # FlyteAdmin's maxLabelArrayLength
MAX_ANNOTATION_BYTES = 256 * 1024  # Kubernetes' TotalAnnotationSizeLimitB
INT32_MAX = 2**31 - 1  # ExecutionSpec.max_parallelism is an int32


class LaunchOptionRefused(RunError):
    """One launch option's value cannot be sent; ``option`` and ``problem`` let the form show it by its field."""

    def __init__(self, option: str, problem: str, hint: str):
        end = "" if problem.endswith((".", "?", "!")) else "."
        super().__init__(f"Launch option {option}: {problem}{end}", hint)
        self.option = option
        self.problem = problem


@dataclass(frozen=True)
class LaunchOptions:
    """How one run is launched (its inputs aside). Every field left at its default changes nothing.

    ``overwrite_cache`` recomputes ``cache=True`` tasks and stores their new outputs; ``envs`` are
    environment variables of every task; ``labels``, ``annotations`` and ``tags`` mark the run;
    ``service_account``, ``raw_output_prefix`` (where offloaded data goes, ``s3://bucket/raw``),
    ``max_parallelism`` (nodes run at once), ``cluster_pool`` and ``interruptible`` override the launch
    plan's; ``name`` names the run instead of a fresh name.
    """

    overwrite_cache: bool = False
    envs: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    tags: tuple[str, ...] = ()
    service_account: str | None = None
    raw_output_prefix: str | None = None
    max_parallelism: int | None = None
    cluster_pool: str | None = None
    interruptible: bool | None = None
    name: str | None = None

    def __post_init__(self):
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, _CHECKS[f.name](getattr(self, f.name)))

    def __bool__(self) -> bool:
        return bool(self.changed())

    def changed(self) -> dict[str, Any]:
        """The options set to something other than their default, by name."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if getattr(self, f.name) != _default_of(f)}

    def merged(self, changes: Mapping[str, Any]) -> "LaunchOptions":
        """These options with ``changes`` (by option name) on top; an unknown name is refused by name."""
        for option in changes:
            if option not in _CHECKS:
                close = difflib.get_close_matches(option, list(_CHECKS), n=1)
                raise RunError(
                    f"There is no launch option {option!r}." + (f" Did you mean {close[0]!r}?" if close else ""),
                    f"The options are: {', '.join(_CHECKS)}. A workflow's inputs go to .launch(...).",
                )
        return dataclasses.replace(self, **changes)

    def flytekit_arguments(self) -> dict[str, Any]:
        """The keywords of ``FlyteRemote.execute_remote_task_lp`` that carry these options (not ``name``,
        which is the execution's name), as ``pyflyte run`` builds them (``options_from_run_params``)."""
        from flytekit.core.options import Options
        from flytekit.models import common as common_models
        from flytekit.models import security

        options = Options(
            labels=common_models.Labels(dict(self.labels)) if self.labels else None,
            annotations=common_models.Annotations(dict(self.annotations)) if self.annotations else None,
            raw_output_data_config=(common_models.RawOutputDataConfig(output_location_prefix=self.raw_output_prefix)
                                    if self.raw_output_prefix else None),
            security_context=(security.SecurityContext(run_as=security.Identity(k8s_service_account=self.service_account))
                              if self.service_account else None),
            max_parallelism=self.max_parallelism,
        )
        return dict(
            options=options,
            overwrite_cache=True if self.overwrite_cache else None,
            interruptible=self.interruptible,
            envs=dict(self.envs) or None,
            tags=list(self.tags) or None,
            cluster_pool=self.cluster_pool or None,
        )

    @classmethod
    def from_spec(cls, spec) -> "LaunchOptions":
        """The options an ``admin.ExecutionSpec`` records, as the backend keeps them (not checked again).

        ``max_parallelism`` is left out: FlyteAdmin writes the value it resolved from its own settings
        there, so a run launched without one would seem to have been given it."""
        values = dict(
            overwrite_cache=spec.overwrite_cache,
            envs={kv.key: kv.value for kv in spec.envs.values},
            labels=dict(spec.labels.values),
            annotations=dict(spec.annotations.values),
            tags=tuple(spec.tags),
            service_account=spec.security_context.run_as.k8s_service_account or None,
            raw_output_prefix=spec.raw_output_data_config.output_location_prefix or None,
            cluster_pool=spec.cluster_assignment.cluster_pool_name or None,
            interruptible=spec.interruptible.value if spec.HasField("interruptible") else None,
        )
        return cls._unchecked(values)

    def without_name(self) -> "LaunchOptions":
        """The same options for another run, which gets a name of its own."""
        return self._unchecked({**self.changed(), "name": None})

    @classmethod
    def _unchecked(cls, values: Mapping[str, Any]) -> "LaunchOptions":
        """Options as a backend recorded them, or as they were checked already: not checked (again)."""
        options = object.__new__(cls)
        for f in dataclasses.fields(cls):
            object.__setattr__(options, f.name, values.get(f.name, _default_of(f)))
        return options

    def __repr__(self) -> str:
        return f"LaunchOptions({options_text(self, limit=None)})"


def _default_of(f: dataclasses.Field) -> Any:
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def combined(options: "LaunchOptions | None", changes: Mapping[str, Any]) -> LaunchOptions:
    """``options`` (a `LaunchOptions`, or None) with ``changes`` by name on top: what ``with_options`` takes."""
    if options is not None and not isinstance(options, LaunchOptions):
        raise RunError(
            f"with_options() takes a LaunchOptions or keywords, not the {type(options).__name__} {options!r}.",
            "Pass the options by name: with_options(overwrite_cache=True, envs={'KEY': 'value'}).",
        )
    return (options or LaunchOptions()).merged(changes)


# ---------------------------------------------------------------- one check per option


def _check_flag(option: str, value: Any, *, optional: bool = False) -> bool | None:
    if optional and value is None:
        return None
    if not isinstance(value, bool):
        allowed = "True, False or None" if optional else "True or False"
        raise LaunchOptionRefused(option, f"expected {allowed}, got {_described(value)}", f"Pass {option}=True or False.")
    return value


def _check_mapping(option: str, value: Any, example: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise LaunchOptionRefused(option, f"expected a dict of str to str, got {_described(value)}", f"Pass {option}={example}.")
    checked = {}
    for key, item in value.items():
        if not isinstance(key, str):
            raise LaunchOptionRefused(option, f"the key {key!r} is {_a(key)}, not a str", f"Pass {option}={example}.")
        if not isinstance(item, str):
            raise LaunchOptionRefused(
                option, f"the value of {key!r} is {_described(item)}, not a str",
                f"Every value is text: pass {option}={{{key!r}: {str(item)!r}}}.",
            )
        checked[key] = item
    return checked


def _check_envs(value: Any) -> dict[str, str]:
    envs = _check_mapping("envs", value, "{'LOG_LEVEL': 'debug'}")
    for key, item in envs.items():
        if not _ENV_NAME.fullmatch(key):
            raise LaunchOptionRefused(
                "envs", f"{key!r} is not a valid environment variable name",
                "Use letters, digits, '_', '-' and '.', not starting with a digit, as Kubernetes requires.",
            )
        if "\0" in item:
            raise LaunchOptionRefused("envs", f"the value of {key!r} holds a NUL character", "Remove it.")
    return envs


def _check_labels(value: Any) -> dict[str, str]:
    labels = _check_mapping("labels", value, "{'team': 'ml'}")
    if len(labels) > MAX_LABELS:
        raise LaunchOptionRefused("labels", f"{len(labels)} labels given; FlyteAdmin takes at most {MAX_LABELS}",
                                  "Keep the ones you filter by; put the rest in annotations=.")
    for key, item in labels.items():
        problem = qualified_name_problem(key)
        if problem:
            raise LaunchOptionRefused("labels", f"{key!r} is not a valid label key ({problem})", _LABEL_KEY_HINT)
        if not is_label_value(item):
            raise LaunchOptionRefused(
                "labels", f"the value {item!r} of {key!r} is not a valid label value",
                f"A label value is empty, or at most {NAME_MAX} letters, digits, '-', '_' or '.', starting and "
                "ending with a letter or digit, as FlyteAdmin checks it; free text goes in annotations=.",
            )
    return labels


_LABEL_KEY_HINT = "Use a key such as 'team' or 'example.com/team', as FlyteAdmin requires."


def is_label_value(value: str) -> bool:
    """Kubernetes' IsValidLabelValue, which FlyteAdmin applies to a run's label values."""
    return len(value) <= NAME_MAX and bool(_LABEL_VALUE.fullmatch(value))


def _check_annotations(value: Any) -> dict[str, str]:
    annotations = _check_mapping("annotations", value, "{'owner': 'Jane Doe'}")
    for key in annotations:
        problem = qualified_name_problem(key.lower())  # as Kubernetes' ValidateAnnotations checks keys
        if problem:
            raise LaunchOptionRefused("annotations", f"{key!r} is not a valid annotation key ({problem})",
                                      "Use a key such as 'owner' or 'example.com/owner', as Kubernetes requires.")
    size = sum(len(k) + len(v) for k, v in annotations.items())
    if size > MAX_ANNOTATION_BYTES:
        raise LaunchOptionRefused("annotations", f"{size} characters in all; Kubernetes takes at most {MAX_ANNOTATION_BYTES}",
                                  "Store large text elsewhere and annotate the run with where it is.")
    return annotations


def qualified_name_problem(key: str) -> str:
    """What Kubernetes' IsQualifiedName finds wrong with ``key`` ("" when nothing)."""
    prefix, slash, name = key.rpartition("/")
    if slash and (not prefix or "/" in prefix):
        return "at most one '/', after a non-empty prefix"
    if slash and (len(prefix) > 253 or not _DNS_SUBDOMAIN.fullmatch(prefix)):
        return f"the prefix {prefix!r} must be a lower-case DNS name (example.com)"
    if not name:
        return "the name part is empty"
    if len(name) > NAME_MAX:
        return f"the name part is longer than {NAME_MAX} characters"
    if not _NAME_PART.fullmatch(name):
        return f"at most {NAME_MAX} letters, digits, '-', '_' and '.', starting and ending with a letter or digit"
    return ""


def _check_tags(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str) or not isinstance(value, (list, tuple, set, frozenset)):
        raise LaunchOptionRefused("tags", f"expected a list of str, got {_described(value)}", "Pass tags=['nightly', 'v2'].")
    tags: list[str] = []
    for tag in value:
        if not isinstance(tag, str) or not tag.strip():
            raise LaunchOptionRefused("tags", f"each tag is a non-empty str, got {_described(tag)}", "Pass tags=['nightly', 'v2'].")
        if tag not in tags:  # FlyteAdmin stores each tag of a run once
            tags.append(tag)
    return tuple(tags)


def _check_text(option: str, value: Any, example: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or value != value.strip():
        raise LaunchOptionRefused(option, f"expected a non-empty str without surrounding spaces, got {_described(value)}",
                                  f"Pass {option}={example!r}, or leave it out.")
    return value


def _check_service_account(value: Any) -> str | None:
    account = _check_text("service_account", value, "flyte-runner")
    if account is not None and (len(account) > 253 or not _DNS_SUBDOMAIN.fullmatch(account)):
        raise LaunchOptionRefused("service_account", f"{account!r} is not a valid Kubernetes service account name",
                                  "Use lower-case letters, digits, '-' and '.', starting and ending with a letter or digit.")
    return account


def _check_max_parallelism(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= INT32_MAX:
        raise LaunchOptionRefused(
            "max_parallelism", f"expected a whole number from 1 to {INT32_MAX}, got {_described(value)}",
            "It is how many nodes of the run may run at once; leave it out for the backend's default.",
        )
    return value


def _check_name(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > NAME_MAX or not _RUN_NAME.fullmatch(value):
        raise LaunchOptionRefused(
            "name", f"{value!r} is not a valid run name" if isinstance(value, str) else f"expected a str, got {_described(value)}",
            f"A run name is at most {NAME_MAX} lower-case letters, digits and '-', starting with a letter and not "
            "ending with '-'; leave it out for a fresh one.",
        )
    return value


_CHECKS = {
    "overwrite_cache": lambda v: _check_flag("overwrite_cache", v),
    "envs": _check_envs,
    "labels": _check_labels,
    "annotations": _check_annotations,
    "tags": _check_tags,
    "service_account": _check_service_account,
    "raw_output_prefix": lambda v: _check_text("raw_output_prefix", v, "s3://bucket/raw"),
    "max_parallelism": _check_max_parallelism,
    "cluster_pool": lambda v: _check_text("cluster_pool", v, "gpu"),
    "interruptible": lambda v: _check_flag("interruptible", v, optional=True),
    "name": _check_name,
}


def _a(value: Any) -> str:
    kind = type(value).__name__
    return f"an {kind}" if kind[:1] in "aeiou" else f"a {kind}"


def _described(value: Any) -> str:
    """``the int 3``, ``the str 'a,b'``, ``None``."""
    return "None" if value is None else f"the {type(value).__name__} {value!r}"


# ---------------------------------------------------------------- shown with a run


def options_text(options: LaunchOptions | None, limit: int | None = 60) -> str:
    """``overwrite_cache=True, envs={'A': '1'}``: what a run was launched with, beyond the defaults
    (not its name, which the run shows already), each value cut short; "" when nothing."""
    if not options:
        return ""
    parts = []
    for option, value in options.changed().items():
        if option == "name" and limit is not None:
            continue
        shown = repr(list(value) if option == "tags" else value)
        if limit is not None and len(shown) > limit:
            shown = shown[: limit - 1] + "…"
        parts.append(f"{option}={shown}")
    return ", ".join(parts)


def options_html(options: LaunchOptions | None) -> str:
    """The run view's line under its inputs; "" when it was launched with the defaults."""
    text = options_text(options)
    if not text:
        return ""
    return ("<div class='fastreg-options' style='color:var(--jp-content-font-color2,#616161);line-height:1.45;"
            f"overflow-wrap:anywhere'>options <code>{html.escape(text)}</code></div>")


# ---------------------------------------------------------------- the launch form's section

FORM_FIELDS = {"overwrite_cache": "overwrite cache", "envs": "env vars", "labels": "labels", "tags": "tags"}


def parse_form_options(raw: Mapping[str, Any]) -> tuple[LaunchOptions, dict[str, str]]:
    """The form's options (``overwrite_cache`` a bool; ``envs`` and ``labels`` KEY=VALUE lines; ``tags``
    separated by commas) as `LaunchOptions`, and each problem by option name (then the options are the
    defaults: nothing may be launched)."""
    values, problems = {}, {}
    readers = {"overwrite_cache": bool, "envs": key_value_lines, "labels": key_value_lines, "tags": _comma_separated}
    for option, read in readers.items():
        if option not in raw:
            continue
        try:
            values[option] = _CHECKS[option](read(raw[option]))
        except (LaunchOptionRefused, ValueError) as err:
            problems[option] = getattr(err, "problem", None) or str(err)
    if problems:
        return LaunchOptions(), problems
    return LaunchOptions(**values), {}


def key_value_lines(text: str) -> dict[str, str]:
    """``KEY=VALUE`` lines (spaces around each dropped, blank lines and ``#`` comments skipped), as
    ``pyflyte run --env KEY=VALUE`` reads one; ValueError naming the line that is not one."""
    pairs: dict[str, str] = {}
    seen_on: dict[str, int] = {}
    for number, line in enumerate((text or "").splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        key, equals, value = stripped.partition("=")
        key = key.strip()
        if not equals or not key:
            raise ValueError(f"line {number}: expected KEY=VALUE, got {stripped!r}")
        if key in seen_on:
            raise ValueError(f"line {number}: {key} is set on line {seen_on[key]} already")
        seen_on[key] = number
        pairs[key] = value.strip()
    return pairs


def _comma_separated(text: str) -> list[str]:
    return [part.strip() for part in (text or "").split(",") if part.strip()]
