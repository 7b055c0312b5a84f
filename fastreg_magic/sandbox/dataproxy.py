"""DataProxy RPCs: signed upload/download URLs on the sandbox's blob server, and ``flyte://`` data.

``CreateUploadLocation`` answers as FlyteAdmin does: the object lives at
``<project>/<domain>/<root>/<filename>`` where ``root`` is the caller's ``filename_root``
or the base32 of the content MD5; the signed URL accepts one HTTP PUT whose
``Content-MD5`` and bytes match the digest given here (see ``blobserver``).

``native_url`` form: a plain absolute path (``/data/uploads/flytesnacks/development/
<root>/fast....tar.gz``), not a ``file://`` URL. Tasks run on this machine, and
``pyflyte-fast-execute --additional-distribution <native_url>`` downloads it with
flytekit's local file system either way, but flytekit's file transformer refuses
``file://`` blob URIs ("is not a file"), so the sandbox uses plain paths everywhere for
one rule instead of two.

``GetData`` resolves the URLs FlyteAdmin puts in ``flyte_urls``:
``flyte://v1/<project>/<domain>/<execution>/<node>[/<attempt>]/<i|o|d>[/<name>]``.
"""

from __future__ import annotations

import base64
import hashlib
import re
import time
from pathlib import Path

import grpc
from flyteidl.core import identifier_pb2
from flyteidl.service import dataproxy_pb2, dataproxy_pb2_grpc
from google.protobuf.timestamp_pb2 import Timestamp

from fastreg_magic.sandbox.blobserver import UrlSigner, safe_relative
from fastreg_magic.sandbox.guard import guarded
from fastreg_magic.sandbox.store import Store
from fastreg_magic.sandbox.validation import AdminError, invalid, not_found, require

MAX_EXPIRES_SECONDS = 3600  # FlyteAdmin's default upload.maxExpiresIn
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
            raise invalid(f"ExpiresIn [{seconds}s] exceeded max allowed expiration [{MAX_EXPIRES_SECONDS}s]")
    return time.time() + seconds


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
        if not request.content_md5:
            raise invalid("content_md5 is required: the sandbox checks every upload against it")
        if len(request.content_md5) != 16:
            raise invalid(f"content_md5 must be the 16-byte MD5 digest, got {len(request.content_md5)} bytes")
        filename = request.filename or base64.b32encode(request.content_md5[:10]).decode().lower()
        root = request.filename_root or base64.b32encode(request.content_md5).decode()
        rel = safe_relative(f"uploads/{request.project}/{request.domain}/{root}/{filename}")
        if rel is None:
            raise invalid(f"filename {filename!r} / filename_root {root!r} must not contain '..' or be absolute")
        target = self.store.data_dir / rel
        if target.exists() and _md5(target) != request.content_md5:
            raise AdminError(
                grpc.StatusCode.ALREADY_EXISTS,
                f"file already exists at location [{target}], specify a matching hash if you wish to rewrite",
            )
        expires_at = _expiry(request)
        return dataproxy_pb2.CreateUploadLocationResponse(
            signed_url=self.signer.sign("PUT", rel, expires_at, request.content_md5),
            native_url=str(target),
            expires_at=_timestamp(expires_at),
            headers={"Content-MD5": base64.b64encode(request.content_md5).decode()},
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
        if not path.is_file():
            raise not_found(f"nothing is stored at {native_url}")
        return self.signer.sign("GET", str(rel), expires_at)


def _md5(path: Path) -> bytes:
    digest = hashlib.md5()
    with open(path, "rb") as source:
        for chunk in iter(lambda: source.read(1 << 20), b""):
            digest.update(chunk)
    return digest.digest()

