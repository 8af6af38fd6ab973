"""Certificates and keys for the embedded control plane (one CA, one cert per identity).

Generated once into `<state>/pki/` and reused by later `up`s, so a cached start does no crypto.
ECDSA P-256 keys: the API server and the service-account token signer (ES256) accept them and they are
generated in microseconds, unlike RSA.
"""
from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = dt.timedelta(days=3650)

# The API server's serving cert must name every address a client may use: loopback for us, the
# in-cluster service names for pods that use in-cluster config, and the first service IP.
APISERVER_DNS = ("localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
                 "kubernetes.default.svc.cluster.local")
APISERVER_IPS = ("127.0.0.1", "10.96.0.1")


@dataclass(frozen=True)
class Identity:
    """A client or server identity: file stem, subject CN, groups (O) and usage."""

    name: str
    common_name: str
    groups: tuple[str, ...] = ()
    server: bool = False
    dns: tuple[str, ...] = ()
    ips: tuple[str, ...] = ()


IDENTITIES = (
    Identity("apiserver", "kube-apiserver", server=True, dns=APISERVER_DNS, ips=APISERVER_IPS),
    Identity("admin", "quranft-admin", ("system:masters",)),
    Identity("controller-manager", "system:kube-controller-manager"),
    Identity("scheduler", "system:kube-scheduler"),
    # The API server presents this to the node agent's log server (`kubectl logs`).
    Identity("apiserver-kubelet-client", "kube-apiserver-kubelet-client", ("system:masters",)),
    # The node agent's HTTPS log server ("kubelet serving cert").
    Identity("kubelet-serving", "system:node:quranft", ("system:nodes",), server=True,
             dns=("localhost",), ips=("127.0.0.1",)),
)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _name(cn: str, groups: tuple[str, ...] = ()) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, g) for g in groups]
    return x509.Name(attrs + [x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _builder(subject: x509.Name, issuer: x509.Name, public_key) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=5)  # tolerate small clock skew
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
            .public_key(public_key).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + VALIDITY))


def make_ca() -> tuple[bytes, bytes]:
    """A self-signed CA: (cert PEM, key PEM)."""
    key = _new_key()
    name = _name("quranft-embedded-ca")
    cert = (_builder(name, name, key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def issue(identity: Identity, ca_cert_pem: bytes, ca_key_pem: bytes) -> tuple[bytes, bytes]:
    """A leaf cert for `identity`, signed by the CA: (cert PEM, key PEM)."""
    ca_cert = x509.load_pem_x509_certificate(ca_cert_pem)
    ca_key = serialization.load_pem_private_key(ca_key_pem, password=None)
    key = _new_key()
    usage = ExtendedKeyUsageOID.SERVER_AUTH if identity.server else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (_builder(_name(identity.common_name, identity.groups), ca_cert.subject, key.public_key())
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.ExtendedKeyUsage([usage]), critical=False))
    sans: list[x509.GeneralName] = [x509.DNSName(d) for d in identity.dns]
    sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in identity.ips]
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def service_account_keypair() -> tuple[bytes, bytes]:
    """Key pair that signs service-account tokens: (private PEM, public PEM)."""
    key = _new_key()
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return _key_pem(key), public


def ensure_pki(pki_dir: Path) -> Path:
    """Create any missing CA, leaf certs and the SA key pair under `pki_dir`; returns it."""
    pki_dir.mkdir(parents=True, exist_ok=True)
    ca_crt, ca_key = pki_dir / "ca.crt", pki_dir / "ca.key"
    if not (ca_crt.exists() and ca_key.exists()):
        cert, key = make_ca()
        _write(ca_key, key)
        _write(ca_crt, cert)
        for ident in IDENTITIES:  # leaves of an old CA are useless now
            (pki_dir / f"{ident.name}.crt").unlink(missing_ok=True)
    ca_cert_pem, ca_key_pem = ca_crt.read_bytes(), ca_key.read_bytes()
    for ident in IDENTITIES:
        crt, key_path = pki_dir / f"{ident.name}.crt", pki_dir / f"{ident.name}.key"
        if not (crt.exists() and key_path.exists()):
            cert, key = issue(ident, ca_cert_pem, ca_key_pem)
            _write(key_path, key)
            _write(crt, cert)
    if not ((pki_dir / "sa.key").exists() and (pki_dir / "sa.pub").exists()):
        private, public = service_account_keypair()
        _write(pki_dir / "sa.key", private)
        _write(pki_dir / "sa.pub", public)
    return pki_dir


def _write(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(data)
    tmp.chmod(0o600)
    tmp.replace(path)
