"""A FlyteAdmin as a company cluster serves it: over TLS, with a certificate a private CA signed.

The session sandbox's own services are served again on a second gRPC port, with TLS (or without,
``tls=False``), and GetVersion answering a FlyteAdmin's Build, so the magic takes it for a real
cluster (console links and all) rather than for the embedded sandbox. A second CA that signed
nothing stands for the wrong CA file.
"""

from __future__ import annotations

import datetime
import ipaddress
from concurrent import futures
from pathlib import Path

import grpc

BUILD = "flyteadmin-1.16"


def make_ca_and_server_cert(folder: Path, name: str) -> tuple[Path, bytes, bytes]:
    """(CA file, server certificate PEM, server key PEM) for localhost and 127.0.0.1."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} test CA")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=7))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    cert = (
        x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=7))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True)
    ca_file = folder / f"{name}-ca.pem"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return ca_file, cert.public_bytes(serialization.Encoding.PEM), key_pem


class _AnswersAsFlyteAdmin(grpc.ServerInterceptor):
    def intercept_service(self, continuation, details):
        if details.method != "/flyteidl.service.AdminService/GetVersion":
            return continuation(details)
        from flyteidl.admin import version_pb2

        def answer(request, context):
            return version_pb2.GetVersionResponse(control_plane_version=version_pb2.Version(Build=BUILD))

        return grpc.unary_unary_rpc_method_handler(
            answer, request_deserializer=version_pb2.GetVersionRequest.FromString,
            response_serializer=version_pb2.GetVersionResponse.SerializeToString)


class ClusterAdmin:
    """The sandbox's services on their own port, looking like a cluster's FlyteAdmin."""

    def __init__(self, sandbox, folder: Path, *, tls: bool = True) -> None:
        from flyteidl.service import admin_pb2_grpc, dataproxy_pb2_grpc

        from fastreg_magic.sandbox.dataproxy import DataProxyService

        self.ca, cert, key = make_ca_and_server_cert(folder, "cluster")
        self.wrong_ca, _, _ = make_ca_and_server_cert(folder, "other")
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=8), interceptors=[_AnswersAsFlyteAdmin()])
        admin_pb2_grpc.add_AdminServiceServicer_to_server(sandbox._admin, self._server)
        dataproxy_pb2_grpc.add_DataProxyServiceServicer_to_server(
            DataProxyService(sandbox._store, sandbox._blobs.signer, sandbox._admin), self._server)
        address = "127.0.0.1:0"
        if tls:
            self.port = self._server.add_secure_port(address, grpc.ssl_server_credentials([(key, cert)]))
        else:
            self.port = self._server.add_insecure_port(address)
        self._server.start()

    def config_file(self, path: Path, *, ca: Path | None = None, insecure: bool = False, extra: str = "") -> Path:
        """A flytekit config file for this backend, as `localhost:PORT`."""
        lines = ["admin:", f"  endpoint: dns:///localhost:{self.port}", f"  insecure: {str(insecure).lower()}"]
        if ca is not None:
            lines.append(f"  caCertFilePath: {ca}")
        path.write_text("\n".join(lines) + "\n" + extra)
        return path

    def stop(self) -> None:
        self._server.stop(0)
