"""The NB database's URL: one Redis server, or a primary found through Redis Sentinel.

    redis://[[user]:password@]host:port/DB      rediss://...      unix:///path/redis.sock?db=N
    redis+sentinel://[[user]:password@]host:port[,host:port...]/SERVICE[/DB]

The sentinel form names the sentinels (at least one; give them all: any one that answers is
enough to find the primary) and the service they monitor (`sentinel monitor SERVICE ...`); the
password, if any, is the data servers' (`requirepass`/`masterauth`), not the sentinels'.

Both forms take two options of dfflow's own in the query string, removed before the rest reaches
redis-py:
    wait_replicas=N     after each NB write, wait until N replicas hold it (Redis `WAIT`);
                        default 1 with sentinel, 0 otherwise
    wait_timeout_ms=T   how long a write waits for them (default 500)
"""
from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from dfflow.errors import ValidationError

SENTINEL_SCHEME = "redis+sentinel"
PLAIN_SCHEMES = ("redis", "rediss", "unix")
DEFAULT_WAIT_TIMEOUT_MS = 500


@dataclass(frozen=True)
class NbUrl:
    url: str  # what redis-py gets for a plain server (dfflow's options removed); the original otherwise
    sentinels: tuple[tuple[str, int], ...] = ()
    service: str = ""
    db: int = 0
    username: str | None = None
    password: str | None = None
    wait_replicas: int = 0
    wait_timeout_ms: int = DEFAULT_WAIT_TIMEOUT_MS

    @property
    def is_sentinel(self) -> bool:
        return bool(self.sentinels)


def _bad(problem: str) -> ValidationError:
    return ValidationError("nb", problem)


def _int_option(options: dict[str, str], name: str, default: int) -> int:
    raw = options.pop(name, None)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise _bad(f"{name}={raw!r} is not an integer") from None
    if value < 0:
        raise _bad(f"{name}={value} must not be negative")
    return value


def parse_nb_url(url: str) -> NbUrl:
    """The parts of an NB URL, or ValidationError (field "nb") saying what is wrong with it."""
    if not isinstance(url, str) or "://" not in url:
        raise _bad(f"{url!r} is not a URL; use redis://HOST:PORT/DB, unix:///PATH or "
                   f"{SENTINEL_SCHEME}://HOST:PORT[,HOST:PORT...]/SERVICE[/DB]")
    parts = urlsplit(url)
    options = dict(parse_qsl(parts.query))
    if parts.scheme in PLAIN_SCHEMES:
        wait_replicas = _int_option(options, "wait_replicas", 0)
        timeout = _int_option(options, "wait_timeout_ms", DEFAULT_WAIT_TIMEOUT_MS)
        plain = urlunsplit(parts._replace(query=urlencode(options)))
        return NbUrl(plain, wait_replicas=wait_replicas, wait_timeout_ms=timeout)
    if parts.scheme != SENTINEL_SCHEME:
        raise _bad(f"unknown scheme {parts.scheme!r}; use one of {', '.join(PLAIN_SCHEMES + (SENTINEL_SCHEME,))}")
    credentials, _, hosts = parts.netloc.rpartition("@")
    username, _, password = credentials.partition(":") if credentials else ("", "", "")
    sentinels = []
    for address in hosts.split(","):
        host, sep, port = address.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise _bad(f"sentinel address {address!r} is not HOST:PORT")
        sentinels.append((host.strip("[]"), int(port)))
    path = [p for p in parts.path.split("/") if p]
    if not path or len(path) > 2:
        raise _bad(f"{url!r} needs the monitored service after the sentinels: .../SERVICE[/DB]")
    if len(path) == 2 and not path[1].isdigit():
        raise _bad(f"database {path[1]!r} is not a number")
    wait_replicas = _int_option(options, "wait_replicas", 1)
    timeout = _int_option(options, "wait_timeout_ms", DEFAULT_WAIT_TIMEOUT_MS)
    if options:
        raise _bad(f"unknown option {sorted(options)[0]!r}; a {SENTINEL_SCHEME} URL takes wait_replicas and "
                   "wait_timeout_ms")
    return NbUrl(url, sentinels=tuple(sentinels), service=unquote(path[0]),
                 db=int(path[1]) if len(path) == 2 else 0, username=unquote(username) or None,
                 password=unquote(password) or None, wait_replicas=wait_replicas, wait_timeout_ms=timeout)
