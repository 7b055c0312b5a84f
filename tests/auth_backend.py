"""A FlyteAdmin that demands OAuth2 bearer tokens, as a cluster with auth enabled does.

The session sandbox's own services are served again on a second gRPC port, behind an
interceptor that refuses every Admin and DataProxy call without a valid ``authorization:
Bearer`` token (UNAUTHENTICATED, as FlyteAdmin answers). The port also serves FlyteAdmin's
AuthMetadataService, which tells flytekit where the token endpoints are, and a small HTTP
identity provider issues tokens:

* the device-code flow (``authType: DeviceFlow``), approved at once: each device authorization
  is one login the person at the notebook would have had to complete in a browser;
* client credentials (``authType: ClientSecret``) for one client id and secret;
* refresh tokens.

Only tokens this provider issued (and has not revoked) pass.
"""

from __future__ import annotations

import base64
import itertools
import json
import threading
import urllib.parse
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import grpc

CLIENT_ID = "fastreg-tests"
CLIENT_SECRET = "s3cret/with+symbols"


class IdentityProvider:
    """Token endpoint, device authorization endpoint; counts what it was asked for."""

    def __init__(self) -> None:
        self.device_logins = 0
        self.client_credential_grants = 0
        self.valid: set[str] = set()
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._http.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._http.server_address[1]}"

    def start(self) -> "IdentityProvider":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._http.shutdown()
        self._http.server_close()

    def revoke_all(self) -> None:
        """Every access token issued so far stops working (they expired)."""
        with self._lock:
            self.valid.clear()

    def _issue(self) -> dict:
        with self._lock:
            n = next(self._ids)
            token = f"access-{n}"
            self.valid.add(token)
        return {"access_token": token, "token_type": "bearer", "expires_in": 3600, "refresh_token": f"refresh-{n}"}

    def _answer(self, path: str, form: dict, authorization: str | None) -> tuple[int, dict]:
        if path == "/oauth2/device/authorize":
            with self._lock:
                self.device_logins += 1
            return 200, {"device_code": "device", "user_code": "ABCD-EFGH", "verification_uri": f"{self.url}/activate",
                         "expires_in": 600, "interval": 0}
        if path != "/oauth2/token":
            return 404, {"error": "not_found"}
        grant = form.get("grant_type")
        if grant == "urn:ietf:params:oauth:grant-type:device_code" or grant == "refresh_token":
            return 200, self._issue()
        if grant == "client_credentials":
            expected = "Basic " + base64.b64encode(
                f"{CLIENT_ID}:{urllib.parse.quote_plus(CLIENT_SECRET)}".encode()).decode()
            if authorization != expected:
                return 401, {"error": "invalid_client", "error_description": "wrong client id or secret"}
            with self._lock:
                self.client_credential_grants += 1
            return 200, self._issue()
        return 400, {"error": "unsupported_grant_type"}

    def _handler(self):
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
                form = {k: v[0] for k, v in urllib.parse.parse_qs(body).items()}
                status, answer = provider._answer(self.path, form, self.headers.get("Authorization"))
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        return Handler


class _RequireBearer(grpc.ServerInterceptor):
    def __init__(self, provider: IdentityProvider) -> None:
        self._provider = provider

    def intercept_service(self, continuation, details):
        if details.method.startswith("/flyteidl.service.AuthMetadataService/"):
            return continuation(details)
        metadata = dict(details.invocation_metadata)
        token = (metadata.get("authorization") or "").removeprefix("Bearer ")
        if token in self._provider.valid:
            return continuation(details)

        def refuse(request, context):
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or expired token")

        return grpc.unary_unary_rpc_method_handler(refuse)


def _auth_metadata_servicer(provider: IdentityProvider):
    from flyteidl.service import auth_pb2, auth_pb2_grpc

    class AuthMetadata(auth_pb2_grpc.AuthMetadataServiceServicer):
        def GetOAuth2Metadata(self, request, context):  # noqa: N802 - gRPC's naming
            return auth_pb2.OAuth2MetadataResponse(
                issuer=provider.url,
                authorization_endpoint=f"{provider.url}/oauth2/authorize",
                token_endpoint=f"{provider.url}/oauth2/token",
                device_authorization_endpoint=f"{provider.url}/oauth2/device/authorize",
                grant_types_supported=["client_credentials", "refresh_token",
                                       "urn:ietf:params:oauth:grant-type:device_code"],
            )

        def GetPublicClientConfig(self, request, context):  # noqa: N802
            return auth_pb2.PublicClientAuthConfigResponse(
                client_id="flytectl", redirect_uri="http://localhost:53593/callback", scopes=["all"],
                authorization_metadata_key="authorization",
            )

    return AuthMetadata()


class AuthenticatedAdmin:
    """The sandbox's services on their own port, behind bearer-token auth."""

    def __init__(self, sandbox) -> None:
        from flyteidl.service import admin_pb2_grpc, auth_pb2_grpc, dataproxy_pb2_grpc

        from fastreg_magic.sandbox.dataproxy import DataProxyService

        self.provider = IdentityProvider().start()
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=8),
                                   interceptors=[_RequireBearer(self.provider)])
        admin_pb2_grpc.add_AdminServiceServicer_to_server(sandbox._admin, self._server)
        dataproxy_pb2_grpc.add_DataProxyServiceServicer_to_server(
            DataProxyService(sandbox._store, sandbox._blobs.signer, sandbox._admin), self._server)
        auth_pb2_grpc.add_AuthMetadataServiceServicer_to_server(_auth_metadata_servicer(self.provider), self._server)
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        self._server.start()

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def config_file(self, folder: Path, auth: str) -> Path:
        """A flytekit config file for this backend: ``auth`` is "DeviceFlow" or "ClientSecret"."""
        lines = ["admin:", f"  endpoint: dns:///{self.endpoint}", "  insecure: true", f"  authType: {auth}"]
        if auth == "ClientSecret":
            secret = folder / "client-secret"
            secret.write_text(CLIENT_SECRET)
            lines += [f"  clientId: {CLIENT_ID}", f"  clientSecretLocation: {secret}"]
        path = folder / f"auth-{auth.lower()}.yaml"
        path.write_text("\n".join(lines) + "\n")
        return path

    def stop(self) -> None:
        self._server.stop(0)
        self.provider.stop()
