"""Keys and credentials never leave the machine in the code archive: credentials files by their names,
any file holding a secret value (a notebook by its cells and outputs), a symbolic link leading out of the
source root, and a cell holding a secret (its own, or one carried over from an earlier cell). A default
file that looks like credentials is stored as data all the same, with a line saying so."""

from __future__ import annotations

import glob
import tarfile
import textwrap
import uuid
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from fastreg_magic import fast_register

SECRET = "secret (never shipped)"
AWS_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
GH_TOKEN = "ghp_16C7e42F292c6912E7710c838347Ae178B4a"
OPENSSH_KEY = (
    "-----BEGIN OPENSSH PRIVATE KEY-----\n"
    "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n"
    "-----END OPENSSH PRIVATE KEY-----\n"
)
CELL = textwrap.dedent(
    """
    from flytekit import task, workflow

    @task
    def t(n: int) -> int:
        return n

    @workflow
    def wf(n: int = 1) -> int:
        return t(n=n)
    """
)


def serialized(root: Path, out: Path, cell: str = CELL, copy: str = "all"):
    """``fastreg serialize``'s way (no backend): the registration, and the files its code archive holds."""
    reg = fast_register(cell, module=f"flow_{uuid.uuid4().hex[:8]}", source_root=root, copy=copy, serialize_to=out,
                        images=["ghcr.io/org/image:1"])
    [archive] = glob.glob(str(out / "**" / "*.tar.gz"), recursive=True)
    with tarfile.open(archive) as tar:
        members = sorted(m.name for m in tar.getmembers() if m.isfile())
    return reg, members


def left_out(reg) -> dict[str, str]:
    return {item.relpath: item.reason for item in reg.left_out}


def write(root: Path, tree: dict[str, str]) -> None:
    for relpath, content in tree.items():
        (root / relpath).parent.mkdir(parents=True, exist_ok=True)
        (root / relpath).write_text(content)


def notebook(path: Path, *cells) -> None:
    nbformat.write(new_notebook(cells=list(cells)), str(path))


def test_a_notebook_holding_a_key_in_a_cell_or_an_output_is_never_shipped(tmp_path):
    """nbformat writes each text as a JSON list of lines, quotes escaped: the key is read through that."""
    root, out = tmp_path / "proj", tmp_path / "out"
    root.mkdir()
    notebook(root / "explore.ipynb", new_code_cell(
        f'import boto3\ns3 = boto3.client("s3", aws_access_key_id="AKIAIOSFODNN7EXAMPLE", '
        f'aws_secret_access_key="{AWS_KEY}")'))
    notebook(root / "printed.ipynb", new_code_cell(
        "!cat ~/.ssh/id_ed25519", outputs=[new_output("stream", name="stdout", text=OPENSSH_KEY)]))
    notebook(root / "analysis.ipynb",
             new_markdown_cell("Set `aws_secret_access_key` in `~/.aws/credentials`, never in a cell."),
             new_code_cell('import os\nsecret = os.environ["AWS_SECRET_ACCESS_KEY"]',
                           outputs=[new_output("stream", name="stdout", text="-----BEGIN PRIVATE KEY-----\n")]))
    reg, members = serialized(root, out)
    assert left_out(reg) == {"explore.ipynb": SECRET, "printed.ipynb": SECRET}
    assert "analysis.ipynb" in reg.files and "analysis.ipynb" in members
    assert not {"explore.ipynb", "printed.ipynb"} & set(members)


def test_a_symbolic_link_leading_out_of_the_source_root_is_not_followed(tmp_path):
    outside, root, out = tmp_path / "elsewhere", tmp_path / "proj", tmp_path / "out"
    write(outside, {"notes.txt": "not for the archive\n", "helper.py": "VALUE = 41\n"})
    write(root, {"data.txt": "inside\n"})
    (root / "notes_link.txt").symlink_to(outside / "notes.txt")
    (root / "alias.txt").symlink_to(root / "data.txt")  # inside the root: ships, as it always has
    (root / "helper.py").symlink_to(outside / "helper.py")  # a module the cell imports: ships
    cell = CELL.replace("return n\n", "return n + VALUE\n").replace("from flytekit", "from helper import VALUE\nfrom flytekit")
    reg, members = serialized(root, out, cell=cell)
    assert left_out(reg) == {"notes_link.txt": (
        f"symbolic link to {(outside / 'notes.txt').resolve()}, outside the source root: not followed "
        "(copy the file into the source root to ship it)")}
    assert {"alias.txt", "data.txt", "helper.py"} <= set(members)
    assert "notes_link.txt" not in members


# Each credentials file as its tool writes it; the ones that give themselves away by content also
# under a plain name.
BY_NAME = {
    ".s3cfg": f"[default]\naccess_key = AKIAIOSFODNN7EXAMPLE\nsecret_key = {AWS_KEY}\n",
    ".kaggle/kaggle.json": '{"username":"alice","key":"0123456789abcdef0123456789abcdef"}\n',
    ".config/gh/hosts.yml": "github.com:\n    user: alice\n",
    ".huggingface/token": "hf_aBcDeFgHiJkLmNoPqRsTuVwXyZ012345678\n",
    ".databrickscfg": "[DEFAULT]\nhost = https://x.cloud.databricks.com\n",
    "conf/client_secret": "s3cr3t-flyte-client-secret-value\n",
    ".boto": "[Credentials]\n",
}
BY_CONTENT = {
    "flytekit.config": "[platform]\nurl=flyte.acme.com\n[credentials]\nclient_id=ci\nclient_secret=s3cr3t-flyte-inline\n",
    "signing.asc": "-----BEGIN PGP PRIVATE KEY BLOCK-----\n\nlQOYBGT7zXcBCADJk3+9c2X0bmV0ZXN0a2V5bWF0ZXJpYWw\n=abcd\n"
                   "-----END PGP PRIVATE KEY BLOCK-----\n",
    "pip.conf": "[global]\nindex-url = https://alice:glpat-xxxxxxxxxxxxxxxxxxxx@gitlab.acme.com/api/v4/packages/pypi/simple\n",
    "azure_settings.sh": 'AZURE_STORAGE_CONNECTION_STRING="DefaultEndpointsProtocol=https;AccountName=acme;AccountKey='
                         'Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;"\n',
    "databricks.txt": "token = dapi0123456789abcdef0123456789abcdef\n",
    "gh.txt": f"oauth_token: {GH_TOKEN}\n",
    "mylib/tokens.py": f'GH_TOKEN = "{GH_TOKEN}"\n',
}
# What merely names credentials, or says where they come from, is code and configuration: it ships.
NAMES_ONLY = {
    "mylib/__init__.py": "",
    "mylib/storage.py": 'import os\n\ndef kwargs():\n    return dict(aws_secret_access_key=os.environ["AWS_SECRET"])\n',
    "mylib/prefixes.py": 'import os\n\nGITHUB_TOKEN_PREFIXES = ("ghp_", "gho_")\nTOKEN = os.environ.get("GH_TOKEN")\n',
    "mylib/stub.pyi": "class Client:\n    client_secret: Incomplete\n    secret_key: str\n",
    "config.yaml": "admin:\n  clientSecretLocation: /etc/secrets/client_secret\n  clientSecretEnvVar: FLYTE_CLIENT_SECRET\n"
                   "api_key: ${API_KEY}\nclient_secret: CLIENT_SECRET\n",
    "requirements.txt": "--index-url https://pypi.org/simple\nflytekit\n",
    "docs/install.md": "Private index: `https://user:<token>@pypi.example.com/simple`, token from `gh auth token`.\n",
}


def test_credentials_files_of_common_tools_are_never_shipped_and_code_naming_them_is(tmp_path):
    root, out = tmp_path / "proj", tmp_path / "out"
    write(root, {**BY_NAME, **BY_CONTENT, **NAMES_ONLY})
    write(root, {f"plain/{Path(name).stem.strip('.')}_{i}.txt": content for i, (name, content) in
                 enumerate(BY_CONTENT.items()) if not name.endswith(".py")})
    reg, members = serialized(root, out)
    secrets = {*BY_NAME, *BY_CONTENT} | {f"plain/{Path(name).stem.strip('.')}_{i}.txt" for i, name in
                                         enumerate(BY_CONTENT) if not name.endswith(".py")}
    assert left_out(reg) == dict.fromkeys(sorted(secrets), SECRET)
    assert set(NAMES_ONLY) <= set(members)
    assert not secrets & set(members)


def refused(shell, root: Path, cell: str) -> str:
    """The one-line message a %%flyte_fast cell is refused with."""
    from IPython.core.error import UsageError

    with pytest.raises(UsageError) as raised:
        shell.run_cell_magic("flyte_fast", f"-m secret_cell_{uuid.uuid4().hex[:8]} --source-root {root}", cell)
    return str(raised.value)


def test_a_cell_using_a_token_from_an_earlier_cell_is_refused_without_showing_it(sandbox_shell, tmp_path):
    sandbox_shell.run_cell(f"GH_TOKEN = {GH_TOKEN!r}")
    message = refused(sandbox_shell, tmp_path,
                      "from flytekit import task\n\n@task\ndef t(n: int) -> str:\n    return GH_TOKEN[:2] * n\n")
    assert message.startswith("`GH_TOKEN`, carried over from an earlier cell, holds a GitHub token:")
    assert "nothing was registered" in message and "secret_requests=[Secret(" in message
    assert GH_TOKEN not in message and GH_TOKEN[:12] not in message


def test_a_cell_holding_a_key_inline_is_refused_naming_its_line(sandbox_shell, tmp_path):
    message = refused(sandbox_shell, tmp_path, textwrap.dedent(f"""\
        import boto3
        from flytekit import task

        @task
        def t(n: int) -> int:
            s3 = boto3.client("s3", aws_access_key_id="AKIAIOSFODNN7EXAMPLE", aws_secret_access_key="{AWS_KEY}")
            return n
        """))
    # Line 7 as the editor numbers it: line 1 is the cell's %%flyte_fast line.
    assert message.startswith("Line 7 of the cell holds an AWS secret key:")
    assert AWS_KEY not in message


def test_a_constant_named_as_a_secret_is_carried_over_but_never_shown(sandbox_shell, tmp_path):
    sandbox_shell.run_cell('DB_PASSWORD = "hunter2-hunter2"\nLIMIT = 3')
    cell = "from flytekit import task\n\n@task\ndef t(n: int) -> int:\n    return len(DB_PASSWORD) * n * LIMIT\n"
    reg = sandbox_shell.run_cell_magic("flyte_fast", f"-m pw_{uuid.uuid4().hex[:8]} --source-root {tmp_path}", cell)
    assert reg.registered
    assert reg.lifted == ("DB_PASSWORD = … (value not shown: it looks like a credential)", "LIMIT = 3")
    assert "hunter2" not in repr(reg)


def test_a_default_file_that_looks_like_credentials_is_stored_with_a_warning(sandbox_shell, tmp_path):
    home, root = tmp_path / "home", tmp_path / "proj"
    root.mkdir()
    write(home, {".ssh/id_rsa": OPENSSH_KEY, "data/notes.txt": f"{GH_TOKEN}\n", "data/plain.txt": "rows\n"})
    cell = textwrap.dedent(f"""\
        from flytekit import task, workflow
        from flytekit.types.file import FlyteFile

        @task
        def size(f: FlyteFile) -> int:
            with open(f) as handle:
                return len(handle.read())

        @workflow
        def wf(key: FlyteFile = FlyteFile({str(home / '.ssh/id_rsa')!r}),
               notes: FlyteFile = FlyteFile({str(home / 'data/notes.txt')!r}),
               plain: FlyteFile = FlyteFile({str(home / 'data/plain.txt')!r})) -> int:
            return size(f=key)
        """)
    reg = sandbox_shell.run_cell_magic("flyte_fast", f"-m keyed_default_{uuid.uuid4().hex[:8]} --source-root {root}", cell)
    assert reg.registered
    looks_like = [w for w in reg.warnings if "looks like credentials" in w]
    assert looks_like == [
        f"the default {home / '.ssh/id_rsa'} looks like credentials (by its name): registering stores it on the "
        "backend as data, which anyone who can read this project's data can read; for a secret a task needs, use "
        "`@task(secret_requests=[Secret(...)])` instead",
        f"the default {home / 'data/notes.txt'} looks like credentials (it holds a key or a token): registering "
        "stores it on the backend as data, which anyone who can read this project's data can read; for a secret a "
        "task needs, use `@task(secret_requests=[Secret(...)])` instead",
    ]


def test_a_sha1_digest_under_a_secret_name_is_no_aws_key_but_a_real_key_there_is():
    import hashlib

    from fastreg_magic.ignore import find_credential

    digest = hashlib.sha1(b"a file's content").hexdigest()
    assert find_credential(f'EXPECTED = {{"secret": "{digest}"}}\n'.encode(), is_code=True) is None
    key = 'boto3.client("s3", aws_secret_access_key="wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKE")\n'
    assert find_credential(key.encode(), is_code=True).kind == "an AWS secret key"
