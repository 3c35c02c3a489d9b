"""Remote storage through fsspec: retries with backoff, and errors that say how to fix access.

Every read of an `s3://`, `gs://`, `https://`, ... URL goes through here, so transient
failures (dropped connections, timeouts, HTTP 429/5xx, S3 SlowDown) are retried the same way
everywhere, including in the middle of a file (`open_remote` reopens at the byte it stopped
at), and a failure that is not transient becomes one UserError naming the URL, what went
wrong, which credentials were tried and the fix.

Settings (`data.storage_options`, `data.retries`) reach this module through `configure()`,
called once per run: media are read deep inside rendering, where threading the config through
every call would touch every stage. Explicit `storage_options` arguments win over it.
"""

from __future__ import annotations

import contextlib
import io
import os
import random
import re
import time
from collections.abc import Callable
from typing import Any, BinaryIO, TypeVar

import fsspec

from gemmaforge.errors import UserError, problem

URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
"""A URL scheme; `file://` URLs count as remote here and are read through fsspec too."""

TRANSIENT_HTTP = {408, 425, 429, 500, 502, 503, 504}
TRANSIENT_CODES = {
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestTimeout",
    "InternalError",
    "ServiceUnavailable",
    "503",
    "500",
}


class StorageError(UserError):
    """A failed access to remote storage: the URL, what went wrong and the fix, kept apart so
    that media errors can name the data row as well."""

    def __init__(self, url: str, what: str, fix: str):
        self.url, self.what, self.fix = url, what, fix
        super().__init__(problem(url, what, fix))

    def __reduce__(self):
        return type(self), (self.url, self.what, self.fix)


READ_BLOCK = 8 * 2**20
"""Bytes fetched per request when streaming a file. Peak memory is a few times this
(s3fs's default, 50 MiB, held ~150 MB at once); `storage_options.block_size` overrides it."""

_settings: dict[str, Any] = {"storage_options": {}, "retries": 5, "backoff_s": 0.5}

T = TypeVar("T")


def configure(
    storage_options: dict[str, Any] | None = None,
    retries: int | None = None,
    backoff_s: float | None = None,
) -> None:
    """Set the run's default fsspec options and retry policy (None keeps the current value).

    Waits between attempts are `backoff_s * 2**attempt`, with +-25% jitter so that several
    processes hitting one throttled bucket do not retry in lockstep.
    """
    if storage_options is not None:
        _settings["storage_options"] = dict(storage_options)
    if retries is not None:
        _settings["retries"] = retries
    if backoff_s is not None:
        _settings["backoff_s"] = backoff_s


def is_url(ref: str) -> bool:
    return bool(URL.match(str(ref)))


def parent(path: str) -> str:
    """The folder holding a path or URL (a URL's query string dropped)."""
    if is_url(path):
        return path.split("?", 1)[0].rsplit("/", 1)[0]
    return os.path.dirname(path) or "."


def options(storage_options: dict[str, Any] | None) -> dict[str, Any]:
    """The fsspec options to use: the explicit ones, else the configured ones."""
    return dict(_settings["storage_options"] if storage_options is None else storage_options)


def filesystem(url: str, storage_options: dict[str, Any] | None = None):
    """(fsspec filesystem, path inside it) for `url`, or a UserError for a missing backend."""
    try:
        return fsspec.core.url_to_fs(url, **options(storage_options))
    except (ImportError, ValueError) as err:
        raise storage_error(url, err, storage_options) from None


def with_retries(
    call: Callable[[], T], url: str, storage_options: dict[str, Any] | None = None
) -> T:
    """`call()`, retried with exponential backoff while it fails transiently.

    Any other failure, or a transient one that outlasts the retries, raises storage_error.
    """
    attempt = 0
    while True:
        try:
            return call()
        except UserError:
            raise
        except Exception as err:  # each backend raises its own types (aiohttp, botocore, ...)
            if not is_transient(err) or attempt >= _settings["retries"]:
                raise storage_error(url, err, storage_options, attempt + 1) from None
            time.sleep(_settings["backoff_s"] * 2**attempt * random.uniform(0.75, 1.25))
            attempt += 1


def open_remote(url: str, storage_options: dict[str, Any] | None = None) -> BinaryIO:
    """A buffered, seekable binary file at `url` whose reads survive transient failures."""
    fs, path = filesystem(url, storage_options)
    return io.BufferedReader(_RetryingReader(fs, path, url, storage_options), 1 << 20)


def read_remote(url: str, storage_options: dict[str, Any] | None = None) -> bytes:
    """All bytes at `url`, with retries (a failed attempt starts again from the first byte)."""
    fs, path = filesystem(url, storage_options)
    return with_retries(lambda: fs.cat_file(path), url, storage_options)


class _RetryingReader(io.RawIOBase):
    """Reads through an fsspec file; on a transient failure it reopens the file and seeks
    back to the current offset, so a dropped connection mid-file costs a retry, not the run.
    (fsspec's backends retry single requests at best, not a read that spans several.)"""

    def __init__(self, fs, path: str, url: str, storage_options: dict[str, Any] | None):
        self._fs, self._path, self._url, self._so = fs, path, url, storage_options
        self._pos = 0
        self._file = with_retries(self._open, url, storage_options)

    def _open(self):
        block = options(self._so).get("block_size") or READ_BLOCK
        file = self._fs.open(self._path, "rb", block_size=block)
        if self._pos:
            file.seek(self._pos)
        return file

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self._pos = self._file.seek(offset, whence)
        return self._pos

    def readinto(self, buffer) -> int:
        def read() -> bytes:
            try:
                return self._file.read(len(buffer))
            except Exception:
                self._reopen()
                raise

        data = with_retries(read, self._url, self._so)
        buffer[: len(data)] = data
        self._pos += len(data)
        return len(data)

    def _reopen(self) -> None:
        with contextlib.suppress(Exception):  # the connection is broken; a new one replaces it
            self._file.close()
        # Opened lazily on the next attempt's read: opening can fail transiently too.
        self._file = _Lazy(self._open)

    def close(self) -> None:
        if not self.closed:
            self._file.close()
        super().close()


class _Lazy:
    """A file opened on first use, so that reopening is retried with the read it serves."""

    def __init__(self, opener: Callable[[], Any]):
        self._opener, self._file = opener, None

    def _get(self):
        if self._file is None:
            self._file = self._opener()
        return self._file

    def read(self, size: int = -1) -> bytes:
        return self._get().read(size)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._get().seek(offset, whence)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


def is_transient(err: BaseException) -> bool:
    """Whether `err` (or an error it was raised from) is worth retrying."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, (ConnectionError, TimeoutError)):
            return True
        status = getattr(err, "status", None) or getattr(err, "status_code", None)
        if isinstance(status, int) and status in TRANSIENT_HTTP:
            return True
        response = getattr(err, "response", None)
        if isinstance(response, dict):
            code = str(response.get("Error", {}).get("Code", ""))
            http = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in TRANSIENT_CODES or http in TRANSIENT_HTTP:
                return True
        name = type(err).__name__
        # Named, not imported: botocore and aiohttp are optional backends.
        if name in (
            "EndpointConnectionError",
            "ConnectTimeoutError",
            "ReadTimeoutError",
            "ConnectionClosedError",
            "ClientConnectionError",
            "ClientConnectorError",
            "ServerDisconnectedError",
            "ClientPayloadError",
            "ServerTimeoutError",
            "FSTimeoutError",
            "IncompleteRead",
        ):
            return True
        if any(code in str(err) for code in ("SlowDown", "reduce your request rate")):
            return True
        err = err.__cause__ or err.__context__
    return False


def storage_error(
    url: str,
    err: BaseException,
    storage_options: dict[str, Any] | None = None,
    attempts: int = 1,
) -> StorageError:
    """A UserError for a failed access to `url`: what happened, the credentials, the fix."""
    scheme = url.split("://", 1)[0].lower() if is_url(url) else "file"
    detail = f"{type(err).__name__}: {err}".strip()
    tried = f" after {attempts} attempts" if attempts > 1 else ""
    if isinstance(err, (ImportError, ValueError)) and (
        "protocol" in str(err).lower() or "install" in str(err).lower()
    ):
        package = {"s3": "s3fs", "s3a": "s3fs", "gs": "gcsfs", "gcs": "gcsfs"}.get(scheme)
        fix = f"pip install {package}" if package else "install the fsspec backend it names"
        return StorageError(url, f"cannot be opened ({detail})", fix)
    text = str(err)
    # Transient first: fsspec's HTTP backend reports a 503 as FileNotFoundError from it.
    if is_transient(err):
        what = f"could not be reached{tried} ({_root_cause(err)})"
        fix = "check the network, the endpoint and the URL; the storage may be down"
    elif isinstance(err, FileNotFoundError) and "bucket" not in text.lower():
        return StorageError(url, "was not found", "check the URL (names are case-sensitive)")
    elif isinstance(err, FileNotFoundError):
        what, fix = f"names a bucket that does not exist ({text})", "check the bucket name"
    elif isinstance(err, PermissionError) or _denied(err):
        what = f"was refused: access denied ({detail})"
        fix = "use credentials allowed to read it"
    else:
        what, fix = f"could not be read ({detail})", "check the URL and the credentials"
    if scheme in ("s3", "s3a"):
        what += f"; endpoint: {_s3_endpoint(storage_options)}; credentials: "
        what += _s3_credentials(storage_options)
        fix += (
            ": set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE (a profile in "
            "~/.aws/credentials), or data.storage_options {key, secret}; for MinIO or another "
            "S3-compatible store set data.storage_options.endpoint_url or AWS_ENDPOINT_URL; "
            "for a public bucket set data.storage_options.anon: true"
        )
    elif scheme in ("gs", "gcs"):
        token = options(storage_options).get("token", "google_default (gcsfs tries it first)")
        what += f"; credentials: gcsfs token method {token!r}"
        fix += (
            ": run `gcloud auth application-default login`, or set "
            "GOOGLE_APPLICATION_CREDENTIALS to a service-account key file, or "
            "data.storage_options.token; for a public bucket set token: anon"
        )
    return StorageError(url, what, fix)


def _root_cause(err: BaseException) -> str:
    while err.__cause__ is not None:
        err = err.__cause__
    return f"{type(err).__name__}: {err}"


def _denied(err: BaseException) -> bool:
    names = ("NoCredentialsError", "PartialCredentialsError", "AccessDenied", "Forbidden")
    text = f"{type(err).__name__} {err}"
    return any(name in text for name in names) or getattr(err, "status", None) in (401, 403)


def _s3_endpoint(storage_options: dict[str, Any] | None) -> str:
    opts = options(storage_options)
    endpoint = opts.get("endpoint_url") or opts.get("client_kwargs", {}).get("endpoint_url")
    for var in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"):
        if not endpoint and os.environ.get(var):
            endpoint = f"{os.environ[var]} (from {var})"
    return endpoint or "AWS S3"


def _s3_credentials(storage_options: dict[str, Any] | None) -> str:
    """Which credentials botocore's chain finds, in the words a user searches for."""
    opts = options(storage_options)
    if opts.get("anon"):
        return "anonymous (storage_options anon: true)"
    if opts.get("key") or opts.get("secret"):
        return "the key and secret in data.storage_options"
    import botocore.session

    profile = opts.get("profile") or os.environ.get("AWS_PROFILE")
    try:
        found = botocore.session.Session(profile=profile).get_credentials()
    except Exception as err:  # e.g. a profile that does not exist
        return f"none usable ({type(err).__name__}: {err})"
    if found is None:
        return (
            "none found (botocore looked at the AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY "
            "environment variables, AWS_PROFILE and the shared credentials and config files "
            "in ~/.aws, and the container / instance role)"
        )
    methods = {
        "env": "the AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY environment variables",
        "shared-credentials-file": "the shared credentials file "
        + os.environ.get("AWS_SHARED_CREDENTIALS_FILE", "~/.aws/credentials"),
        "config-file": "the AWS config file " + os.environ.get("AWS_CONFIG_FILE", "~/.aws/config"),
        "iam-role": "the instance role (EC2 metadata)",
        "container-role": "the container role (ECS/EKS)",
    }
    source = methods.get(found.method, f"botocore method {found.method!r}")
    return source + (f", profile {profile!r}" if profile else "")


def fingerprint(info: dict[str, Any]) -> str:
    """A remote object's identity from its listing, without reading it: the version id or
    ETag when the store gives one, else size and modification time."""
    version = info.get("VersionId") or info.get("generation")
    if version:
        return f"version:{version}"
    etag = info.get("ETag") or info.get("etag")
    if etag:
        return f"etag:{str(etag).strip(chr(34))}"
    mtime = next(
        (info[k] for k in ("LastModified", "mtime", "updated", "Last-Modified") if info.get(k)),
        "unknown",
    )
    return f"size:{info.get('size')},mtime:{mtime}"
