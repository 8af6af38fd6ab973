"""The progress endpoint's TLS: the cert/key the operator was given (the chart's Helm genCA/genSignedCert
Secret), or a self-signed one generated at start-up (cryptography) when none was. Either way the operator hands
the CA PEM to the training pods it creates (env), so they verify it without reading any Secret or ConfigMap."""
from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

SELF_SIGNED_DAYS = 365


@dataclass(frozen=True)
class ServerTLS:
    context: ssl.SSLContext
    ca_pem: str  # what a client trusts: the CA that signed the cert (the cert itself when self-signed)


def server_tls(cert_file: str, key_file: str, ca_file: str, hosts: list[str]) -> ServerTLS:
    """From the given files (`ca_file` empty: the cert is its own CA), else self-signed for `hosts`."""
    if cert_file and key_file:
        ca_pem = Path(ca_file or cert_file).read_text()
        return ServerTLS(_context(cert_file, key_file), ca_pem)
    cert_pem, key_pem = self_signed(hosts)
    folder = Path(tempfile.mkdtemp(prefix="quranft-progress-tls-"))  # mode 0700
    (folder / "tls.crt").write_bytes(cert_pem)
    (folder / "tls.key").write_bytes(key_pem)
    (folder / "tls.key").chmod(0o600)
    return ServerTLS(_context(str(folder / "tls.crt"), str(folder / "tls.key")), cert_pem.decode())


def self_signed(hosts: list[str]) -> tuple[bytes, bytes]:
    """(cert PEM, key PEM): a P-256 cert valid for `hosts` (DNS names or IP addresses), its own CA."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "quranft progress endpoint")])
    sans: list[x509.GeneralName] = []
    for host in dict.fromkeys(hosts):
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=SELF_SIGNED_DAYS))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False, key_agreement=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


def _context(cert_file: str, key_file: str) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_file, key_file)
    return context
