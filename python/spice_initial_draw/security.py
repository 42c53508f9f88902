"""TLS and tickets, as QEMU users deploy -spice for a remote user.

make_test_ca(directory) makes a throw-away CA and a server certificate for
127.0.0.1 with openssl (nothing secret is committed); Security says how a
Server is secured (QEMU's tls-port=, x509-dir=, tls-ciphers=, password=,
and whether port= is open too)."""
from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import asdict, dataclass

from .errors import ShimError


@dataclass(frozen=True)
class TlsFiles:
    """PEM files as QEMU's x509-dir= holds them."""
    ca_file: str      # ca-cert.pem: what the client verifies against
    cert_file: str    # server-cert.pem
    key_file: str     # server-key.pem


@dataclass(frozen=True)
class Security:
    tls: TlsFiles | None = None
    password: str | None = None      # None: disable-ticketing
    ticket_lifetime: int = 0         # seconds; 0: never expires
    plain_port: bool = True          # also port=, next to tls-port=
    ciphers: str | None = None       # tls-ciphers=; None: spice's default

    def as_args(self) -> dict[str, object]:
        """The fields of the shim's sid_security (csrc/sid_shim.h)."""
        return {**(asdict(self.tls) if self.tls else {}), "ciphers": self.ciphers,
                "password": self.password, "ticket_lifetime": self.ticket_lifetime,
                "plain_port": self.plain_port}


def _openssl(*args: str, cwd: str) -> None:
    try:
        subprocess.run(["openssl", *args], cwd=cwd, check=True,
                       capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise ShimError("openssl not found: the test CA needs it "
                        "(Debian package openssl, in the project's root)") from None
    except subprocess.CalledProcessError as e:
        raise ShimError(f"openssl {' '.join(args[:2])} failed: {e.stderr.strip()}") from None


def make_test_ca(directory: str, host: str = "127.0.0.1") -> TlsFiles:
    """A CA and a server certificate for `host` (subject CN and IP SAN),
    RSA 2048, valid one day, in `directory` (created)."""
    os.makedirs(directory, exist_ok=True)
    if shutil.which("openssl") is None:
        raise ShimError("openssl not found: the test CA needs it")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
             "-subj", "/CN=spice-initial-draw test CA", "-keyout", "ca-key.pem",
             "-out", "ca-cert.pem", cwd=directory)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={host}",
             "-keyout", "server-key.pem", "-out", "server.csr", cwd=directory)
    with open(os.path.join(directory, "san.ext"), "w", encoding="utf-8") as f:
        f.write(f"subjectAltName=IP:{host}\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca-cert.pem",
             "-CAkey", "ca-key.pem", "-CAcreateserial", "-days", "1",
             "-extfile", "san.ext", "-out", "server-cert.pem", cwd=directory)
    return TlsFiles(ca_file=os.path.join(directory, "ca-cert.pem"),
                    cert_file=os.path.join(directory, "server-cert.pem"),
                    key_file=os.path.join(directory, "server-key.pem"))
