"""TLS for 127.0.0.1 in tests: a throwaway CA (trustme) and a certificate it signs for the
loopback address, as contexts for both ends and as PEM files for code that takes paths."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import trustme

__all__ = ["TestTLS", "make_tls"]


@dataclass
class TestTLS:
    """A server context holding the certificate, a client context trusting only the CA, and
    the same as PEM files: the certificate chain, its key and the CA certificate."""

    __test__ = False  # a helper, not a pytest test class

    server: ssl.SSLContext
    client: ssl.SSLContext
    cert_file: Path
    key_file: Path
    ca_file: Path


def make_tls(directory: Path) -> TestTLS:
    """A new CA and a certificate for 127.0.0.1 and localhost, written into ``directory``."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    directory.mkdir(parents=True, exist_ok=True)
    cert_file, key_file, ca_file = (directory / name for name in ("cert.pem", "key.pem", "ca.pem"))
    cert_file.write_bytes(b"".join(pem.bytes() for pem in cert.cert_chain_pems))
    cert.private_key_pem.write_to_path(str(key_file))
    ca.cert_pem.write_to_path(str(ca_file))
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert_file, key_file)
    client = ssl.create_default_context(cafile=str(ca_file))
    return TestTLS(server, client, cert_file, key_file, ca_file)
