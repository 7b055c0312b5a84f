"""Which files under a source root are never shipped, and why.

Five kinds of reasons, checked in this order:

    secret        .env*, *.pem, *.key, id_rsa*, .netrc, cloud and tool credential files (.s3cfg,
                  kaggle.json, gh's hosts.yml, Hugging Face's token, client_secret, ...), and any
                  file holding a secret value, whatever its name (a private key, an AWS secret
                  key, a service's token, an Azure account key, a password in a URL; in a
                  notebook, in its cells' sources and text outputs: `find_credential`); a link to
                  such a file; never shipped, whatever the copy mode; always reported. A Python
                  module is judged by its content only: code that merely names a key
                  (`id_rsa_tools.py`, `aws_secret_access_key=os.environ[...]`) is code, not a credential
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

A symbolic link to a file under the root ships that file's content under the link's name; one leading
out of the root is not followed (left out, with a notice saying to copy the file in), unless it is a
module the cell imports. The walk (`--copy all`) never goes into a link to a directory.

Matching uses ``pathspec`` (gitignore semantics without needing git or a repository);
flytekit's own ``flytekit.tools.ignore`` shells out to ``git`` twice per use and imports
flytekit, which costs about a second, and it cannot tell which file ignored a path.

    rules = IgnoreRules(Path("~/proj").expanduser())
    rules.file_reason("config/.env")      # "secret (never shipped)"
    rules.file_reason("mylib/x.py")       # None: shipped
"""

from __future__ import annotations

import json
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
    # s3cmd, boto 2 / gsutil, Databricks, Kaggle, the GitHub CLI, Hugging Face (`huggingface-cli login`),
    # and the file Flyte's `clientSecretLocation` names (flytekit's default: /etc/secrets/client_secret)
    ".s3cfg", ".boto", ".databrickscfg", "kaggle.json", "**/.config/gh/hosts.yml", "**/huggingface/token",
    "**/.huggingface/token", "client_secret", "client_secret.*",
)  # fmt: skip
# What gives away a credentials file whatever its name (a service-account key saved as `sa.json`, a
# copy of ~/.aws/credentials, a notebook that printed a key): secret VALUES, not the words that name
# them in code. Files up to SECRET_CONTENT_MAX_BYTES are read (notebooks up to NOTEBOOK_MAX_BYTES: their
# outputs make them large). Each rule's regex runs only on text holding one of its clues (plain
# substrings of the lowercased text): most files hold none, and a substring test runs at memory speed
# where a regex tried at every position of a file (one alternation of all the rules) runs at a few MB/s.
#   a private key block: the PEM (or PGP armor) header, a line break, then a line of key material (also
#   inside a JSON string, where line breaks are written \n), possibly after the headers of an encrypted
#   key (Proc-Type, DEK-Info) or of an armored one (Version, Comment); not the header alone, as code that
#   parses keys writes it
_BREAK = rb"[ \t]*(?:\r?\n|(?:\\r)?\\n)\s*"
_KEY_LINE = rb"[A-Za-z0-9+/]+={0,2}(?=[ \t]*(?:\r?\n|$)|\\[rn]|[\"',])"
_PRIVATE_KEY = (rb"-----BEGIN [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----" + _BREAK + rb"(?:[A-Za-z-]+: [^\n\\]*" + _BREAK
                + rb")*" + _KEY_LINE)
#   an AWS secret key given a value on a line of its own, as in ~/.aws/credentials, a .env file, YAML
#   or JSON: `aws_secret_access_key = wJalr...`, `export AWS_SECRET_ACCESS_KEY="..."`, `"SecretAccessKey": "..."`
_AWS_SECRET = (
    rb"""^[ \t]*(?:export[ \t]+)?["']?(?:aws_)?secret_?access_?key["']?[ \t]*[=:][ \t]*"""
    rb"""(?P<quote>["']?)[A-Za-z0-9/+=]+(?P=quote)[ \t]*,?[ \t]*\r?$"""
)
#   an AWS secret key's value written inline, in code or config: a quoted 40-character key after its name
#   (`boto3.client(..., aws_secret_access_key="wJalr...")`, `{"key": ..., "secret": "wJalr..."}`), whatever
#   follows it on the line; not 40 lower-case hex digits, which is a SHA-1 digest (`{"secret": sha1(...)}`),
#   never an AWS key (those mix cases)
_AWS_SECRET_INLINE = (rb"""(?:secret_?access_?key|["']secret)["']?[ \t]*[=:][ \t]*(?P<quote>["'])"""
                      rb"""(?![0-9a-f]{40}["'])[A-Za-z0-9/+]{40}(?P=quote)""")
#   a token whose format says what it is, wherever it is written (code too: `GH_TOKEN = "ghp_..."`): a
#   service's prefix, then as many characters as its tokens have, not inside a longer word. One regex
#   per service, each starting with its prefix, which the regex engine looks for as a plain substring
#   (an alternation of them all, or a leading look-behind, is tried at every position: many times slower)
_TOKENS = (  # (what it is, its clue, its regex)
    ("a GitHub token", b"gh", rb"gh[pousr]_[A-Za-z0-9]{36,}"),
    ("a GitHub token", b"github_pat_", rb"github_pat_[A-Za-z0-9_]{40,}"),
    ("a GitLab token", b"glpat-", rb"glpat-[A-Za-z0-9_-]{20,}"),
    ("a Hugging Face token", b"hf_", rb"hf_[A-Za-z0-9]{30,}"),
    ("a Databricks token", b"dapi", rb"dapi[0-9a-f]{32}"),
    ("a Slack token", b"xox", rb"xox[abposr]-[0-9A-Za-z-]{20,}"),
    ("a Stripe secret key", b"sk_live_", rb"sk_live_[0-9A-Za-z]{24,}"),
    ("an Anthropic API key", b"sk-ant-", rb"sk-ant-[A-Za-z0-9_-]{20,}"),
    ("an OpenAI API key", b"sk-", rb"sk-(?:proj|svcacct)-[A-Za-z0-9_-]{20,}"),
    ("a Google API key", b"aiza", rb"AIza[0-9A-Za-z_-]{35}"),
)
_WORD_CHAR = rb"[A-Za-z0-9_-]"
#   an Azure storage (or Service Bus) connection string's key: `...;AccountKey=Eby8...==;...`
_AZURE_KEY = rb"(?:AccountKey|SharedAccessKey)=[A-Za-z0-9+/]{40,}={0,2}"
#   a password in a URL, outside code: a pip.conf or requirements file's `https://user:token@host/...`;
#   not placeholders (`${TOKEN}`, `<password>`, `***`), which a documented example writes
_URL_PASSWORD = rb"""://[^\s/:@"'<>]+:(?P<value>[^\s/@"'<>${}*]{8,})@[A-Za-z0-9.-]"""
#   a client secret, API key or token given a value on a line of its own, outside code: a legacy
#   flytekit.config's `[credentials] client_secret=...`, a YAML `api_key: ...`. The value is one word
#   of 8 characters or more with a digit (not a name: `client_secret: Incomplete` in a type stub), not
#   an environment variable's name (`API_KEY`) and no placeholder
_SECRET_NAMES = rb"client[_-]?secret|secret[_-]?key|api[_-]?(?:key|secret)|(?:access|auth|oauth|refresh)[_-]?token|account[_-]?key"
_ASSIGNED = (
    rb"""^[ \t]*(?:export[ \t]+)?["']?(?:""" + _SECRET_NAMES + rb""")["']?[ \t]*[=:][ \t]*"""
    rb"""(?P<quote>["']?)(?P<value>(?=[^\s"'$<>{}()*#,;]*[0-9])[^\s"'$<>{}()*#,;]{8,})(?P=quote)[ \t]*,?[ \t]*\r?$"""
)
_PLACEHOLDER = re.compile(rb"[A-Z_]+|(.)\1*|(?i:pass(?:word|wd)?|secret|token|changeme|placeholder|your[_-].*)")


@dataclass(frozen=True)
class _Rule:
    kind: str  # what it finds, in messages: "a private key"
    clues: tuple[bytes, ...]  # lowercase; a match holds one of them
    regex: re.Pattern
    in_code: str  # "yes": counts in code too; "quoted": in code only as a quoted literal; "no": never in code
    after_word: bool = True  # whether a match may follow a word's letters


_F = re.IGNORECASE | re.MULTILINE
_WORD_BEFORE = re.compile(_WORD_CHAR)
_RULES = (
    _Rule("a private key", (b"-----begin",), re.compile(_PRIVATE_KEY, _F), "yes"),
    _Rule("an AWS secret key", (b"secret",), re.compile(_AWS_SECRET, _F), "quoted"),
    _Rule("an AWS secret key", (b"secret",), re.compile(_AWS_SECRET_INLINE, _F), "yes"),
    *(_Rule(kind, (clue,), re.compile(token + rb"(?!" + _WORD_CHAR + rb")"), "yes", after_word=False)
      for kind, clue, token in _TOKENS),
    _Rule("an Azure storage account key", (b"accountkey=", b"sharedaccesskey="), re.compile(_AZURE_KEY, _F), "yes"),
    _Rule("a password in a URL", (b"://",), re.compile(_URL_PASSWORD), "no"),
    _Rule("a client secret, API key or token",
          (b"secret", b"api_key", b"api-key", b"apikey", b"token", b"account_key", b"accountkey", b"account-key"),
          re.compile(_ASSIGNED, _F), "no"),
)
SECRET_CONTENT_MAX_BYTES = 1024 * 1024
NOTEBOOK_MAX_BYTES = 32 * 1024 * 1024


@dataclass(frozen=True)
class Credential:
    """A secret value found in a text: what it is ("a GitHub token") and where it starts in that text."""

    kind: str
    start: int


def find_credential(data: bytes, is_code: bool = False) -> Credential | None:
    """The first secret value in ``data`` (see _RULES), or None. In Python code only a quoted literal
    counts as a value: ``aws_secret_access_key = SECRET`` assigns a variable."""
    lowered = data.lower()
    found = []
    for rule in _RULES:
        if (is_code and rule.in_code == "no") or not any(clue in lowered for clue in rule.clues):
            continue
        for match in rule.regex.finditer(data):
            if _counts(rule, match, is_code):
                found.append(Credential(rule.kind, match.start()))
                break
    return min(found, key=lambda c: c.start) if found else None


def _counts(rule: _Rule, match: re.Match, is_code: bool) -> bool:
    if rule.in_code == "quoted" and is_code and not match["quote"]:
        return False
    if not rule.after_word and _WORD_BEFORE.fullmatch(match.string[max(match.start() - 1, 0) : match.start()]):
        return False
    value = match.groupdict().get("value")
    return value is None or _PLACEHOLDER.fullmatch(value) is None


def holds_credentials(data: bytes, is_code: bool = False) -> bool:
    """Whether ``data`` holds a secret value (see `find_credential`)."""
    return find_credential(data, is_code) is not None


def notebook_credential(data: bytes) -> Credential | None:
    """The first secret value in a notebook's cells: their sources (code cells as code) and their text
    outputs (printed, displayed, tracebacks). nbformat stores each text as a JSON list of lines, with
    quotes escaped, which the rules would not see through in the file's bytes. A file that is not a
    notebook's JSON is read as plain text."""
    texts = _notebook_texts(data)
    if texts is None:
        return find_credential(data)
    for text, is_code in texts:
        found = find_credential(text.encode("utf-8", "surrogateescape"), is_code)
        if found is not None:
            return found
    return None


def _notebook_texts(data: bytes) -> list[tuple[str, bool]] | None:
    """(text, whether it is code) of each cell's source and text outputs; None if ``data`` is no notebook."""
    try:
        notebook = json.loads(data)
    except ValueError:
        return None
    cells = notebook.get("cells") if isinstance(notebook, dict) else None
    if not isinstance(cells, list):
        return None
    texts = []
    for cell in (c for c in cells if isinstance(c, dict)):
        texts.append((_joined(cell.get("source")), cell.get("cell_type") == "code"))
        outputs = cell.get("outputs")
        for output in outputs if isinstance(outputs, list) else ():
            if isinstance(output, dict):
                texts.append((_output_text(output), False))
    return texts


def _output_text(output: dict) -> str:
    """A cell output's text: a stream's, an error's traceback, every text/JSON form of a displayed value."""
    parts = [_joined(output.get("text")), _joined(output.get("traceback"))]
    data = output.get("data")
    for mime, value in data.items() if isinstance(data, dict) else ():
        if mime.startswith("text/"):
            parts.append(_joined(value))
        elif mime.endswith("json"):
            parts.append(json.dumps(value))
    return "\n".join(part for part in parts if part)


def _joined(text) -> str:
    """nbformat's multiline string: one string, or a list of lines (each ending with its line break)."""
    if isinstance(text, str):
        return text
    if isinstance(text, list):
        return "".join(line if line.endswith("\n") else line + "\n" for line in text if isinstance(line, str))
    return ""


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


def is_secret_name(path: str) -> bool:
    """Whether a path (relative, or absolute without its leading slash) is named as a credentials file
    is (a Python module never is)."""
    return not path.endswith(".py") and _SECRETS.match_file(path)


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
        return is_secret_name(relpath)

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


def classify_file(path: Path, relpath: str, rules: IgnoreRules, *, imported: bool = False) -> Found | Skipped | None:
    """A file shipped (Found), left out with a reason worth telling (Skipped), or junk (None).

    A symbolic link to a file ships the file's content under the link's name, as long as the file is
    under the root too; one leading out of the root is not followed (``shadow -> /etc/shadow``), unless
    it is a module the cell imports (``imported``): code the cell asks for by name, still read for
    credentials, which the container needs to import.
    """
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
    if path.is_symlink():
        left_out = _link_left_out(path, relpath, rules, imported)
        if left_out is not None:
            return left_out
    if not stat.S_ISREG(st.st_mode):
        return None  # sockets, fifos, devices
    if _holds_credentials(path, st, _content_kind(relpath)):
        return Skipped(relpath, SECRET)
    return Found(relpath, path, st.st_size)


def _link_left_out(path: Path, relpath: str, rules: IgnoreRules, imported: bool) -> Skipped | None:
    """Why a symbolic link to a file is not followed: its target is a credentials file, or lies outside the root."""
    target = os.path.realpath(path)
    if rules.is_secret(target.lstrip("/")):
        return Skipped(relpath, SECRET)  # a link whose target is a credentials file
    if imported or Path(target).is_relative_to(rules.root):
        return None
    return Skipped(relpath, f"symbolic link to {target}, outside the source root: not followed "
                            "(copy the file into the source root to ship it)")


# Python source, as judged by its content: what counts there is a quoted literal, not a name.
CODE_SUFFIXES = (".py", ".pyi", ".pyx", ".pxd", ".ipy")


def _content_kind(relpath: str) -> str:
    if relpath.endswith(CODE_SUFFIXES):
        return "code"
    return "notebook" if relpath.endswith(".ipynb") else "text"


# (file, size, mtime, kind of content) -> whether it holds credentials: each file is read once until it changes.
_CONTENT_VERDICTS: dict[tuple[str, int, int, str], bool] = {}


def file_holds_credentials(path: Path) -> bool:
    """Whether the file at ``path`` holds a secret value (read as `classify_file` reads it; a file too
    big to be read never does)."""
    try:
        st = path.stat()
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and _holds_credentials(path, st, _content_kind(path.name))


def _holds_credentials(path: Path, st: os.stat_result, kind: str) -> bool:
    if st.st_size > (NOTEBOOK_MAX_BYTES if kind == "notebook" else SECRET_CONTENT_MAX_BYTES):
        return False
    key = (str(path), st.st_size, st.st_mtime_ns, kind)
    verdict = _CONTENT_VERDICTS.get(key)
    if verdict is None:
        try:
            data = path.read_bytes()
        except OSError:
            return False  # unreadable: packaging reports it
        found = notebook_credential(data) if kind == "notebook" else find_credential(data, is_code=kind == "code")
        verdict = found is not None
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
