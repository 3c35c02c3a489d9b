"""A real S3 API on loopback for tests: a moto server on 127.0.0.1 (a free port), with fake
credentials passed through `storage_options`, never through the environment.

    from s3 import S3Server          # or use the session fixture `s3` from conftest.py
    url = s3.put("bucket/data.jsonl", b'{"text": "hi"}\\n')
    iter_source_records(url, s3.storage_options)

Buckets are created on first use. `s3.storage_options` also works in a gemmaforge config
(`data.storage_options`), and `s3.env()` gives the same as environment variables for a
subprocess.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field


@dataclass
class S3Server:
    endpoint: str
    _buckets: set[str] = field(default_factory=set)

    KEY = "testing"
    SECRET = "fake-secret"

    @property
    def storage_options(self) -> dict:
        return {"endpoint_url": self.endpoint, "key": self.KEY, "secret": self.SECRET}

    def env(self) -> dict[str, str]:
        """The same endpoint and credentials as AWS environment variables."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.KEY,
            "AWS_SECRET_ACCESS_KEY": self.SECRET,
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def fs(self):
        import s3fs

        return s3fs.S3FileSystem(**self.storage_options)

    def put(self, path: str, data: bytes | str) -> str:
        """Upload `data` to `bucket/key` (bucket created if needed); returns the s3:// URL."""
        fs = self.fs()
        bucket = path.split("/", 1)[0]
        if bucket not in self._buckets:
            if not fs.exists(bucket):
                fs.mkdir(bucket)
            self._buckets.add(bucket)
        fs.pipe_file(path, data.encode() if isinstance(data, str) else data)
        fs.invalidate_cache()
        return f"s3://{path}"


def start_s3() -> tuple[S3Server, object]:
    """Start a moto server; returns (server, the moto object whose .stop() ends it)."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one log line per request
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    host, port = moto.get_host_and_port()
    return S3Server(endpoint=f"http://{host}:{port}"), moto
