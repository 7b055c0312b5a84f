"""Which files under a source root are never shipped, and why.

Five kinds of reasons, checked in this order:

    secret        .env*, *.pem, *.key, id_rsa*, .netrc, cloud credential files, ..., and any
                  file holding a private key or an AWS secret key's value, whatever its name;
                  never shipped, whatever the copy mode; always reported. A Python module is
                  judged by its content only: code that merely names a key (`id_rsa_tools.py`,
                  `aws_secret_access_key=os.environ[...]`) is code, not a credential
    junk          .git, __pycache__, *.pyc, virtualenvs, .ipynb_checkpoints, node_modules, ...
                  left out silently, as flytekit's own standard ignores (`.cache`, `__pycache__`, `*.pyc`)
    tool state    folders tools keep their state in, never code: IPython's and Jupyter's (profiles,
                  command history, kernel connection files), ~/.local, the fastreg sandbox's data dir
                  (wherever it is), pyenv/conda/npm/cargo homes, `fastreg serialize`'s output folders;
                  left out as `dir/`, with a notice
    .gitignore    gitignore semantics, nested .gitignore files and the ones above the root
                  up to the repository's top, plus .git/info/exclude
    .flyteignore  gitignore semantics
    .dockerignore patterns anchored at the root, as Docker reads them

Matching uses ``pathspec`` (gitignore semantics without needing git or a repository);
flytekit's own ``flytekit.tools.ignore`` shells out to ``git`` twice per use and imports
flytekit, which costs about a second, and it cannot tell which file ignored a path.

    rules = IgnoreRules(Path("~/proj").expanduser())
    rules.file_reason("config/.env")      # "secret (never shipped)"
    rules.file_reason("mylib/x.py")       # None: shipped
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pathspec

SECRET = "secret (never shipped)"

SECRET_PATTERNS = (
    ".env", ".env*", "*.env", ".envrc",
    "*.pem", "*.key", "*.p12", "*.pfx", "*.jks", "*.keystore", "*.ppk",
    "id_rsa*", "id_dsa*", "id_ecdsa*", "id_ed25519*", ".ssh/",
    ".netrc", "_netrc", ".git-credentials", ".pgpass", ".htpasswd", ".npmrc", ".pypirc",
    "**/.aws/credentials", "**/.aws/config", "credentials.json", "client_secret*.json",
    # gcloud's credentials live in ~/.config/gcloud/; a package of the project named `gcloud` is code.
    "application_default_credentials.json", "**/.config/gcloud/", ".azure/", "**/.kube/config", "kubeconfig",
    "**/.docker/config.json", "**/.streamlit/secrets.toml", "secrets.toml", ".gnupg/",
)  # fmt: skip
# What gives away a credentials file whatever its name (a service-account key saved as `sa.json`, a
# copy of ~/.aws/credentials): secret VALUES, not the words that name them in code. Files up to this
# size are read.
#   a private key block: the PEM header, a line break, then a line of key material (also inside a JSON
#   string, where line breaks are written \n), possibly after the headers of an encrypted key
#   (Proc-Type, DEK-Info); not the header alone, as code that parses keys writes it
_BREAK = rb"[ \t]*(?:\r?\n|(?:\\r)?\\n)\s*"
_KEY_LINE = rb"[A-Za-z0-9+/]+={0,2}(?=[ \t]*(?:\r?\n|$)|\\[rn]|[\"',])"
_PRIVATE_KEY = rb"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----" + _BREAK + rb"(?:[A-Za-z-]+: [^\n\\]*" + _BREAK + rb")*" + _KEY_LINE
#   an AWS secret key given a value on a line of its own, as in ~/.aws/credentials, a .env file, YAML
#   or JSON: `aws_secret_access_key = wJalr...`, `export AWS_SECRET_ACCESS_KEY="..."`, `"SecretAccessKey": "..."`
_AWS_SECRET = (
    rb"""^[ \t]*(?:export[ \t]+)?["']?(?:aws_)?secret_?access_?key["']?[ \t]*[=:][ \t]*"""
    rb"""(?P<quote>["']?)[A-Za-z0-9/+=]+(?P=quote)[ \t]*,?[ \t]*\r?$"""
)
#   an AWS secret key's value written inline, in code or config: a quoted 40-character key after its name
#   (`boto3.client(..., aws_secret_access_key="wJalr...")`, `{"key": ..., "secret": "wJalr..."}`), whatever
#   follows it on the line
_AWS_SECRET_INLINE = rb"""(?:secret_?access_?key|["']secret)["']?[ \t]*[=:][ \t]*(?P<quote2>["'])[A-Za-z0-9/+]{40}(?P=quote2)"""
SECRET_CONTENT = re.compile(
    rb"(?P<key>" + _PRIVATE_KEY + rb")|(?P<aws>" + _AWS_SECRET + rb")|(?P<inline>" + _AWS_SECRET_INLINE + rb")",
    re.IGNORECASE | re.MULTILINE,
)
SECRET_CONTENT_MAX_BYTES = 1024 * 1024

JUNK_DIRS = frozenset(
    {".git", ".hg", ".svn", "__pycache__", ".ipynb_checkpoints", ".venv", "venv", "node_modules",
     ".mypy_cache", ".pytest_cache", ".ruff_cache", ".tox", ".nox", ".eggs", ".cache"}
)  # fmt: skip


# A folder of this name holds a tool's state, whatever is above it (a notebook in the home folder).
TOOL_STATE_DIRS = {
    ".ipython": "IPython's own folder (profiles, command history), not code",
    ".jupyter": "Jupyter's own folder (settings, runtime files), not code",
    ".local": "installed packages and programs' data (~/.local), not code",
    ".virtualenvs": "virtualenvs, not code",
    ".pyenv": "Python installations (pyenv), not code",
    ".conda": "conda's packages and environments, not code",
    ".npm": "npm's own folder, not code",
    ".cargo": "cargo's own folder, not code",
    ".rustup": "rustup's own folder, not code",
}
SANDBOX_DATA = "the fastreg sandbox's data dir (its database, uploads and secrets), not code"
IPYTHON_PROFILE = "an IPython profile (settings, command history), not code"
SERIALIZED_MANIFEST = "fastreg-manifest.json"  # what `fastreg serialize -o DIR` writes into each release folder
SERIALIZED_RELEASE = "a release `fastreg serialize` wrote (shipping it would change every next version), not code"
# Where the environment puts these tools' folders, whatever they are called.
_TOOL_STATE_VARIABLES = {
    "IPYTHONDIR": TOOL_STATE_DIRS[".ipython"],
    "JUPYTER_CONFIG_DIR": TOOL_STATE_DIRS[".jupyter"],
    "JUPYTER_DATA_DIR": TOOL_STATE_DIRS[".jupyter"],
    "JUPYTER_RUNTIME_DIR": TOOL_STATE_DIRS[".jupyter"],
    "PIP_CACHE_DIR": "pip's cache, not code",
    "WORKON_HOME": TOOL_STATE_DIRS[".virtualenvs"],
}


class _Spec:
    """A gitignore spec with a one-regex pre-check. pathspec tries its patterns one by one in
    Python; most paths match none, and one alternation of the including patterns tells so in a
    single regex call (a path no including pattern matches is never ignored)."""

    def __init__(self, lines: list[str]):
        self.spec = pathspec.GitIgnoreSpec.from_lines(lines)
        including = [p.regex.pattern for p in self.spec.patterns if p.include and p.regex is not None]
        # Named groups may repeat across patterns; the pre-check needs none of them.
        merged = "|".join(f"(?:{re.sub(r'[(][?]P<[^>]+>', '(?:', rx)})" for rx in including)
        self._any = re.compile(merged) if merged else None

    def match_file(self, relpath: str) -> bool:
        if self._any is None or not self._any.match(relpath):
            return False
        return self.spec.match_file(relpath)


JUNK_FILES = _Spec(["*.pyc", "*.pyo", ".DS_Store", "*.egg-info/", "*.swp"])
_SECRETS = _Spec(list(SECRET_PATTERNS))


@dataclass(frozen=True)
class Found:
    """A regular file under the root: its posix path relative to the root, and its size."""

    relpath: str
    path: Path
    size: int


@dataclass(frozen=True)
class Skipped:
    relpath: str
    reason: str


class IgnoreRules:
    """The ignore files of one source root, loaded once."""

    def __init__(self, root: Path):
        self.root = root
        self._flyte = _spec_from_file(root / ".flyteignore")
        self._docker = _docker_spec(root / ".dockerignore")
        # (where, prefix, spec) per .gitignore that applies, outermost first: it covers the
        # root-relative paths starting with `where`, which it sees as `prefix` + the rest.
        # Those above the root have where "" and a prefix; nested ones are added as found.
        self._git: list[tuple[str, str, _Spec]] = list(_outer_gitignores(root))
        self._loaded_dirs: set[str] = set()
        self._tool_dirs: dict[str, str] | None = None  # looked up by the first walk (--copy all) only

    def is_secret(self, relpath: str) -> bool:
        """Whether the path's name marks it as a credentials file (a Python module never does)."""
        return not relpath.endswith(".py") and _SECRETS.match_file(relpath)

    def dir_reason(self, reldir: str, name: str, path: Path) -> str | None:
        """Why the walk should not descend into ``reldir`` (root-relative, no trailing slash)."""
        if name in JUNK_DIRS or name.endswith(".egg-info") or _is_environment(path):
            return "junk"
        tool_state = self._tool_state_reason(name, path)
        if tool_state is not None:
            return tool_state
        return self._file_rules_reason(reldir + "/")

    def _tool_state_reason(self, name: str, path: Path) -> str | None:
        if name in TOOL_STATE_DIRS:
            return TOOL_STATE_DIRS[name]
        if self._tool_dirs is None:
            self._tool_dirs = _tool_state_dirs_under(self.root)
        if str(path) in self._tool_dirs:
            return self._tool_dirs[str(path)]
        if (path / "sandbox.db").is_file():  # any sandbox's, wherever --data-dir put it
            return SANDBOX_DATA
        if (path / SERIALIZED_MANIFEST).is_file():  # `fastreg serialize -o _pb_output` inside the source root
            return SERIALIZED_RELEASE
        if name.startswith("profile_") and (path / "history.sqlite").is_file():
            return IPYTHON_PROFILE
        return None

    def file_reason(self, relpath: str) -> str | None:
        """Why ``relpath`` is left out, or None when it is shipped."""
        if self.is_secret(relpath):
            return SECRET
        if JUNK_FILES.match_file(relpath) or any(part in JUNK_DIRS for part in relpath.split("/")[:-1]):
            return "junk"
        self._load_nested_gitignores(relpath)
        return self._file_rules_reason(relpath)

    def _file_rules_reason(self, relpath: str) -> str | None:
        for where, prefix, spec in self._git:
            if relpath.startswith(where) and spec.match_file(prefix + relpath[len(where) :]):
                return "ignored by .gitignore"
        if self._flyte is not None and self._flyte.match_file(relpath):
            return "ignored by .flyteignore"
        if self._docker is not None and self._docker.match_file(relpath):
            return "ignored by .dockerignore"
        return None

    def _load_nested_gitignores(self, relpath: str) -> None:
        parts = relpath.split("/")[:-1]
        for depth in range(1, len(parts) + 1):
            reldir = "/".join(parts[:depth])
            self.load_dir(reldir)

    def load_dir(self, reldir: str) -> None:
        """Take the .gitignore of a directory under the root into account (once)."""
        if reldir in self._loaded_dirs or reldir == "":
            return
        self._loaded_dirs.add(reldir)
        spec = _spec_from_file(self.root / reldir / ".gitignore")
        if spec is not None:
            self._git.append((reldir + "/", "", spec))


def _tool_state_dirs_under(root: Path) -> dict[str, str]:
    """The tools' folders the environment names (and the fastreg sandbox's and archive cache's
    default places), as found under ``root``: path -> why it is left out."""
    import platformdirs

    named = {os.environ.get(variable): reason for variable, reason in _TOOL_STATE_VARIABLES.items()}
    named[platformdirs.user_data_dir("fastreg")] = SANDBOX_DATA
    named[platformdirs.user_cache_dir("fastreg")] = "fastreg's archive cache, not code"
    found = {}
    for folder, reason in named.items():
        if not folder:
            continue
        resolved = Path(folder).expanduser().resolve()
        if resolved != root and resolved.is_relative_to(root):
            found[str(resolved)] = reason
    return found


def _is_environment(path: Path) -> bool:
    """A virtualenv (any name) or a conda environment: installed packages, not the project's code."""
    return (path / "pyvenv.cfg").is_file() or (path / "conda-meta").is_dir()


def walk(root: Path, rules: IgnoreRules) -> tuple[list[Found], list[Skipped]]:
    """Every shippable file under ``root`` (sorted), and what was left out and why.

    Junk is left out silently; directories ignored by an ignore file are reported once, as
    ``dir/``, without walking into them; secrets are reported one by one.
    """
    found: list[Found] = []
    skipped: list[Skipped] = []
    _walk_dir(root, "", rules, found, skipped)
    found.sort(key=lambda f: f.relpath)
    skipped.sort(key=lambda s: s.relpath)
    return found, skipped


def _walk_dir(path: Path, reldir: str, rules: IgnoreRules, found: list[Found], skipped: list[Skipped]) -> None:
    rules.load_dir(reldir)
    try:
        entries = sorted(os.scandir(path), key=lambda e: e.name)
    except FileNotFoundError:
        return  # removed since its parent was listed: nothing to ship, nothing to tell
    except OSError as exc:
        skipped.append(Skipped(reldir + "/", f"unreadable directory ({exc.strerror})"))
        return
    for entry in entries:
        rel = f"{reldir}/{entry.name}" if reldir else entry.name
        if entry.is_dir(follow_symlinks=False):
            reason = rules.dir_reason(rel, entry.name, Path(entry.path))
            if reason is None:
                _walk_dir(Path(entry.path), rel, rules, found, skipped)
            elif reason != "junk":
                skipped.append(Skipped(rel + "/", reason))
            continue
        item = classify_file(Path(entry.path), rel, rules)
        if isinstance(item, Found):
            found.append(item)
        elif item is not None:
            skipped.append(item)


def classify_file(path: Path, relpath: str, rules: IgnoreRules) -> Found | Skipped | None:
    """A file shipped (Found), left out with a reason worth telling (Skipped), or junk (None)."""
    reason = rules.file_reason(relpath)
    if reason == "junk":
        return None
    if reason is not None:
        return Skipped(relpath, reason)
    try:
        st = path.stat()  # follows symlinks: a link to a file ships the file's content
    except FileNotFoundError:
        if not path.is_symlink():
            return None  # removed since the folder was listed (a journal file, a temporary file)
        return Skipped(relpath, "broken symbolic link")
    except OSError:
        return Skipped(relpath, "broken symbolic link" if path.is_symlink() else "unreadable")
    if stat.S_ISDIR(st.st_mode):
        return Skipped(relpath, "symbolic link to a directory (not followed)")
    if path.is_symlink() and rules.is_secret(os.path.realpath(path).lstrip("/")):
        return Skipped(relpath, SECRET)  # a link whose target is a credentials file
    if not stat.S_ISREG(st.st_mode):
        return None  # sockets, fifos, devices
    if _holds_credentials(path, st, is_code=relpath.endswith(".py")):
        return Skipped(relpath, SECRET)
    return Found(relpath, path, st.st_size)


# (file, size, mtime, is code) -> whether it holds credentials: each file is read once until it changes.
_CONTENT_VERDICTS: dict[tuple[str, int, int, bool], bool] = {}


def holds_credentials(data: bytes, is_code: bool = False) -> bool:
    """Whether ``data`` holds a secret value (see SECRET_CONTENT). In Python code only a quoted
    literal counts as a value: ``aws_secret_access_key = SECRET`` assigns a variable."""
    for found in SECRET_CONTENT.finditer(data):
        if found["key"] or found["inline"] or not is_code or found["quote"]:
            return True
    return False


def _holds_credentials(path: Path, st: os.stat_result, is_code: bool) -> bool:
    if st.st_size > SECRET_CONTENT_MAX_BYTES:
        return False
    key = (str(path), st.st_size, st.st_mtime_ns, is_code)
    verdict = _CONTENT_VERDICTS.get(key)
    if verdict is None:
        try:
            verdict = holds_credentials(path.read_bytes(), is_code)
        except OSError:
            return False  # unreadable: packaging reports it
        if len(_CONTENT_VERDICTS) > 100_000:
            _CONTENT_VERDICTS.clear()
        _CONTENT_VERDICTS[key] = verdict
    return verdict


def iter_dir_files(root: Path, reldir: str) -> Iterator[str]:
    """Root-relative paths of the regular files directly in one directory under the root (for
    secret notices in auto mode; runs on every cell, so no Path per entry)."""
    directory = os.path.join(root, reldir) if reldir else root
    try:
        names = sorted(entry.name for entry in os.scandir(directory) if entry.is_file())
    except OSError:
        return
    for name in names:
        yield f"{reldir}/{name}" if reldir else name


def _read_lines(path: Path) -> list[str] | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace").splitlines()
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return None


def _spec_from_file(path: Path) -> _Spec | None:
    lines = _read_lines(path)
    return _Spec(lines) if lines else None


def _docker_spec(path: Path) -> _Spec | None:
    """Docker anchors every pattern at the context root (`*.md` is only top-level files)."""
    lines = _read_lines(path)
    if not lines:
        return None
    anchored = []
    for line in (raw.strip() for raw in lines):
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        body = line[1:] if negate else line
        anchored.append(("!" if negate else "") + "/" + body.lstrip("/"))
    return _Spec(anchored)


def _outer_gitignores(root: Path) -> Iterator[tuple[str, str, _Spec]]:
    """The root's own .gitignore, and those of its parents up to the repository top (where
    `.git` is), each with the prefix that turns a root-relative path into one relative to it."""
    chain = []
    directory = root
    while True:
        chain.append(directory)
        if (directory / ".git").exists() or directory.parent == directory:
            break
        directory = directory.parent
    if not (chain[-1] / ".git").exists():
        chain = [root]  # not in a repository: only the root's own .gitignore applies
    for directory in reversed(chain):
        prefix = root.relative_to(directory).as_posix()
        prefix = "" if prefix == "." else prefix + "/"
        for ignore_file in (directory / ".gitignore", directory / ".git" / "info" / "exclude"):
            spec = _spec_from_file(ignore_file)
            if spec is not None:
                yield "", prefix, spec
