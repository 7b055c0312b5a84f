"""DataProxy RPCs: signed upload/download URLs on the sandbox's blob server, and ``flyte://`` data.

``CreateUploadLocation`` answers as FlyteAdmin 1.16 does (``flyteadmin/dataproxy/service.go``,
``Service.CreateUploadLocation``):

* ``project`` and ``domain`` are required, and at least one of ``content_md5`` and
  ``filename_root``: flytekit's ``HttpFileWriter`` (local DataFrames, ``flyte://`` writes) sends
  ``filename_root`` alone, ``FlyteRemote.upload_file`` sends the MD5 and a ``filename``.
* the object lives at ``uploads/[<org>/]<project>/<domain>/<root>/<filename>``, where ``root`` is
  ``filename_root`` or else the (padded, upper-case) base32 of the MD5, and ``filename`` is the
  caller's or else 20 random characters, so uploads without a name never collide.
* only when both ``filename`` and ``filename_root`` are given is the location deterministic, and
  then an object already there is refused (ALREADY_EXISTS) unless an MD5 was given and matches it.
* ``expires_in`` defaults to, and may not exceed, one hour.
* the signed URL accepts HTTP PUTs until it expires. Signed with an MD5, the PUT must carry that
  ``Content-MD5`` (the one required header returned) and bytes hashing to it; signed without
  one, no header is required (see ``blobserver``).

``native_url`` form: a plain absolute path (``/data/uploads/flytesnacks/development/
<root>/fast....tar.gz``), not a ``file://`` URL. Tasks run on this machine, and
``pyflyte-fast-execute --additional-distribution <native_url>`` downloads it with
flytekit's local file system either way, but flytekit's file transformer refuses
``file://`` blob URIs ("is not a file"), so the sandbox uses plain paths everywhere for
one rule instead of two.

Download locations are signed only for the data the sandbox serves (``SERVED_DIRS``: uploads, run
inputs and outputs, raw outputs and decks), never for the rest of its data dir (its secrets, database,
access token, config, logs, unpacked code): PERMISSION_DENIED, as FlyteAdmin refuses a location
outside its storage.

``GetData`` resolves the URLs FlyteAdmin puts in ``flyte_urls``:
``flyte://v1/<project>/<domain>/<execution>/<node>[/<attempt>]/<i|o|d>[/<name>]``.
"""

from __future__ import annotations

import base64
import re
import secrets
import time
from pathlib import Path

import grpc
from flyteidl.core import identifier_pb2
from flyteidl.service import dataproxy_pb2, dataproxy_pb2_grpc
from google.protobuf.timestamp_pb2 import Timestamp

from fastreg_magic.hashing import file_digest
from fastreg_magic.sandbox.blobserver import UrlSigner, safe_relative
from fastreg_magic.sandbox.guard import guarded
from fastreg_magic.sandbox.store import Store
from fastreg_magic.sandbox.validation import AdminError, invalid, not_found, require

MAX_EXPIRES_SECONDS = 3600  # FlyteAdmin's default upload.maxExpiresIn
DEFAULT_FILENAME_LENGTH = 20  # FlyteAdmin's default upload.defaultFileNameLength
# the alphabet of k8s.io/apimachinery/pkg/util/rand.String, which FlyteAdmin names files with
FILENAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
# The data dir's folders a download may come from (the store's uploads, executions and raw dirs).
SERVED_DIRS = ("uploads", "executions", "raw")
FLYTE_URL = re.compile(
    r"^flyte://v1/(?P<project>[^/]+)/(?P<domain>[^/]+)/(?P<execution>[^/]+)/(?P<node>[^/]+)"
    r"(?:/(?P<attempt>[0-9]+))?/(?P<io>[iod])(?:/(?P<name>[^/]+))?$"
)


def _expiry(request) -> float:
    seconds = MAX_EXPIRES_SECONDS
    if request.HasField("expires_in"):
        seconds = request.expires_in.ToTimedelta().total_seconds()
        if seconds <= 0:
            raise invalid(f"expires_in must be positive, got {seconds}s")
        if seconds > MAX_EXPIRES_SECONDS:
            raise invalid(
                f"expiresIn [{_go_duration(seconds)}] cannot exceed max allowed expiration "
                f"[{_go_duration(MAX_EXPIRES_SECONDS)}]"
            )
    return time.time() + seconds


def _go_duration(seconds: float) -> str:
    """``seconds`` as Go's ``time.Duration.String`` writes it (``2h0m0s``, ``1m30s``, ``1.5s``), as in
    FlyteAdmin's messages."""
    whole, fraction = divmod(seconds, 1)
    hours, rest = divmod(int(whole), 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{secs + fraction:.9f}".rstrip("0").rstrip(".") + "s"
    if hours:
        return f"{hours}h{minutes}m{text}"
    if minutes:
        return f"{minutes}m{text}"
    return text


def _timestamp(seconds: float) -> Timestamp:
    stamp = Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp


@guarded
class DataProxyService(dataproxy_pb2_grpc.DataProxyServiceServicer):
    """Serves uploads and downloads through the blob server; reads execution data through ``data``."""

    def __init__(self, store: Store, signer: UrlSigner, data):
        self.store = store
        self.signer = signer
        self.data = data  # the Admin service: execution_io / node_io / task_io / node_execution

    def CreateUploadLocation(self, request, context):
        require(request.project, "project")
        require(request.domain, "domain")
        md5 = request.content_md5
        if not md5 and not request.filename_root:
            raise invalid("content_md5 or filename_root is a required parameter")
        if md5 and len(md5) != 16:
            raise invalid(f"content_md5 must be the 16-byte MD5 digest, got {len(md5)} bytes")
        # FlyteAdmin checks for an existing object only where the caller fixed the whole name
        deterministic = bool(request.filename and request.filename_root)
        filename = request.filename or "".join(secrets.choice(FILENAME_ALPHABET) for _ in range(DEFAULT_FILENAME_LENGTH))
        root = request.filename_root or base64.b32encode(md5).decode()
        parts = [part for part in (request.org, request.project, request.domain, root, filename) if part]
        rel = safe_relative("/".join(["uploads", *parts]))
        if rel is None:
            raise invalid(
                f"filename {filename!r} / filename_root {root!r} (project {request.project!r}, domain "
                f"{request.domain!r}) must not contain '..' or be absolute"
            )
        target = self.store.data_dir / rel
        if deterministic and target.exists() and (not md5 or not target.is_file() or _md5(target) != md5):
            raise AdminError(
                grpc.StatusCode.ALREADY_EXISTS,
                f"file already exists at location [{target}], specify a matching hash if you wish to rewrite",
            )
        expires_at = _expiry(request)
        return dataproxy_pb2.CreateUploadLocationResponse(
            signed_url=self.signer.sign("PUT", rel, expires_at, md5),
            native_url=str(target),
            expires_at=_timestamp(expires_at),
            # the headers the signed URL requires: Content-MD5 only when it was signed with one
            headers={"Content-MD5": base64.b64encode(md5).decode()} if md5 else {},
        )

    def CreateDownloadLocation(self, request, context):
        expires_at = _expiry(request)
        return dataproxy_pb2.CreateDownloadLocationResponse(
            signed_url=self._download_url(request.native_url, expires_at), expires_at=_timestamp(expires_at)
        )

    def CreateDownloadLink(self, request, context):
        if not request.HasField("node_execution_id"):
            raise invalid("missing node_execution_id: the source of the download link")
        if request.artifact_type != dataproxy_pb2.ARTIFACT_TYPE_DECK:
            raise invalid(f"unsupported artifact_type {request.artifact_type}; only ARTIFACT_TYPE_DECK is served")
        node = self.data.node_execution(request.node_execution_id)
        if not node.closure.deck_uri:
            raise not_found(f"node {request.node_execution_id.node_id} has no deck")
        expires_at = _expiry(request)
        url = self._download_url(node.closure.deck_uri, expires_at)
        return dataproxy_pb2.CreateDownloadLinkResponse(
            signed_url=[url],
            expires_at=_timestamp(expires_at),
            pre_signed_urls=dataproxy_pb2.PreSignedURLs(signed_url=[url], expires_at=_timestamp(expires_at)),
        )

    def GetData(self, request, context):
        match = FLYTE_URL.match(request.flyte_url)
        if not match:
            raise invalid(
                f"invalid flyte url {request.flyte_url!r}; expected "
                "flyte://v1/<project>/<domain>/<execution>/<node>[/<attempt>]/<i|o|d>[/<name>]"
            )
        parts = match.groupdict()
        node_id = identifier_pb2.NodeExecutionIdentifier(
            node_id=parts["node"],
            execution_id=identifier_pb2.WorkflowExecutionIdentifier(
                project=parts["project"], domain=parts["domain"], name=parts["execution"]
            ),
        )
        if parts["io"] == "d":
            node = self.data.node_execution(node_id)
            if not node.closure.deck_uri:
                raise not_found(f"node {parts['node']} has no deck")
            url = self._download_url(node.closure.deck_uri, time.time() + MAX_EXPIRES_SECONDS)
            return dataproxy_pb2.GetDataResponse(pre_signed_urls=dataproxy_pb2.PreSignedURLs(signed_url=[url]))
        if parts["attempt"] is not None:
            inputs, outputs = self.data.task_io(node_id, int(parts["attempt"]))
        else:
            inputs, outputs = self.data.node_io(node_id)
        literal_map = inputs if parts["io"] == "i" else outputs
        if parts["name"]:
            if parts["name"] not in literal_map.literals:
                raise not_found(f"{parts['name']!r} is not among {', '.join(literal_map.literals) or 'no values'}")
            return dataproxy_pb2.GetDataResponse(literal=literal_map.literals[parts["name"]])
        return dataproxy_pb2.GetDataResponse(literal_map=literal_map)

    def _download_url(self, native_url: str, expires_at: float) -> str:
        path = Path(native_url.removeprefix("file://"))
        try:
            rel = path.resolve().relative_to(self.store.data_dir.resolve())
        except ValueError:
            raise invalid(f"{native_url} is not stored by this sandbox (under {self.store.data_dir})") from None
        if not rel.parts or rel.parts[0] not in SERVED_DIRS:
            raise AdminError(grpc.StatusCode.PERMISSION_DENIED,
                             f"{native_url} is not data this sandbox serves: it signs downloads only under "
                             + ", ".join(f"{self.store.data_dir / name}/" for name in SERVED_DIRS))
        if not path.is_file():
            raise not_found(f"nothing is stored at {native_url}")
        return self.signer.sign("GET", str(rel), expires_at)


def _md5(path: Path) -> bytes:
    return file_digest(path, "md5").digest()

