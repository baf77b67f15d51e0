"""The HTTP clients an actor can use, each with exact body-byte accounting.

* openai-python: the official SDK (openai.OpenAI) on an httpx Client whose
  transport is wrapped to count the raw response-body bytes as they arrive and
  to time the first one.  openai 1.x/2.x use `httpx`, openai 3.x uses `httpx2`;
  whichever module the installed SDK imports is used.  max_retries=0 so that
  every HTTP attempt is one actor log line (actors do their own retries).
* curl: one `curl` subprocess per request (so one TCP+TLS connection per
  request, curl's own TLS fingerprint).  The API key and body go through a
  config on stdin (`-K -`), not argv, and `-q` skips any ~/.curlrc.
* requests: python-requests Session (per worker), local address bound with an
  HTTPAdapter, raw body read with decode_content=False.

TLS: an https base URL is verified against --ca-file when given (else the
system store); verification is never disabled.  No client reads proxy
settings from the environment: traffic goes to the base URL, or to --proxy
when one is given.
"""

from __future__ import annotations

import json
import os
import re
import ssl
import subprocess
import threading
import urllib.parse
from dataclasses import dataclass, field

from .runtime import Record, Runtime

CLIENT_LIBS = ("openai-python", "curl", "requests")

APP_USER_AGENT = "acme-code-assist/3.14.2 (build 8c1f2e7; linux x86_64) python-requests/{rv}"


@dataclass
class Call:
    path: str  # "/v1/chat/completions" or "/v1/completions"
    body: dict  # full JSON payload (model, messages/prompt, max_tokens, stream, ...)
    stream: bool
    want_text: bool = False


@dataclass
class Result:
    status: int | None
    error: str | None
    text: str | None = None
    retry_after: float | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.status is not None and 200 <= self.status < 300


@dataclass
class Config:
    base_url: str  # scheme://host:port (no /v1)
    ca_file: str | None
    proxy: str | None
    timeout: float
    user_agent: str | None = None
    extra: dict = field(default_factory=dict)

    @property
    def https(self) -> bool:
        return self.base_url.lower().startswith("https://")

    def ssl_context(self) -> ssl.SSLContext:
        if self.ca_file:
            return ssl.create_default_context(cafile=self.ca_file)
        return ssl.create_default_context()


def normalize_base_url(url: str) -> str:
    u = urllib.parse.urlsplit(url.strip())
    if u.scheme not in ("http", "https") or not u.netloc:
        raise ValueError(f"--base-url must be http(s)://host[:port], got {url!r}")
    path = u.path.rstrip("/")
    if path.endswith("/v1"):
        path = path[:-3]
    return urllib.parse.urlunsplit((u.scheme, u.netloc, path, "", ""))


def _retry_after(v) -> float | None:
    if v is None:
        return None
    try:
        return max(0.0, float(str(v).strip()))
    except ValueError:
        return None


def _short(s: str, n: int = 300) -> str:
    s = " ".join(str(s).split())
    return s if len(s) <= n else s[: n - 3] + "..."


# --------------------------------------------------------------------------
# openai SDK
# --------------------------------------------------------------------------


def httpx_module():
    """The httpx-like module the installed openai SDK is built on."""
    import openai._base_client as bc  # noqa: PLC0415

    for name in ("httpx2", "httpx"):
        m = getattr(bc, name, None)
        if m is not None and hasattr(m, "Client") and hasattr(m, "HTTPTransport"):
            return m
    import httpx  # noqa: PLC0415

    return httpx


_counting_classes: dict[int, tuple[type, type]] = {}


def _counting(hx):
    """(CountingTransport, CountingStream) classes for the httpx module hx."""
    got = _counting_classes.get(id(hx))
    if got:
        return got

    class CountingStream(hx.SyncByteStream):
        def __init__(self, inner, rec: Record):
            self.inner = inner
            self.rec = rec

        def __iter__(self):
            for chunk in self.inner:
                self.rec.on_bytes(len(chunk))
                yield chunk

        def close(self):
            self.inner.close()

    class CountingTransport(hx.BaseTransport):
        def __init__(self, inner, tl: threading.local):
            self.inner = inner
            self.tl = tl

        def handle_request(self, request):
            resp = self.inner.handle_request(request)
            rec = getattr(self.tl, "rec", None)
            if rec is not None:
                rec.status = resp.status_code
                resp.stream = CountingStream(resp.stream, rec)
            return resp

        def close(self):
            self.inner.close()

    _counting_classes[id(hx)] = (CountingTransport, CountingStream)
    return CountingTransport, CountingStream


class OpenAISession:
    """An openai.OpenAI client for one key (and local address).  Thread-safe:
    the record being measured is kept per thread."""

    lib = "openai-python"

    def __init__(self, rt: Runtime, cfg: Config, key: str, source_ip: str | None, pool: int = 10):
        import openai  # noqa: PLC0415

        self.openai = openai
        self.rt = rt
        hx = httpx_module()
        CountingTransport, _ = _counting(hx)
        self.tl = threading.local()
        verify = cfg.ssl_context() if cfg.https else True
        kw = dict(verify=verify, trust_env=False,
                  limits=hx.Limits(max_connections=pool, max_keepalive_connections=pool))
        if source_ip:
            kw["local_address"] = source_ip
        if cfg.proxy:
            kw["proxy"] = cfg.proxy
        inner = hx.HTTPTransport(**kw)
        timeout = hx.Timeout(cfg.timeout, connect=min(15.0, cfg.timeout))
        self.http = hx.Client(transport=CountingTransport(inner, self.tl), timeout=timeout,
                              trust_env=False, follow_redirects=False)
        self.client = openai.OpenAI(base_url=cfg.base_url + "/v1", api_key=key, http_client=self.http,
                                    max_retries=0, timeout=timeout)

    def request(self, rec: Record, call: Call) -> Result:
        oa = self.openai
        self.tl.rec = rec
        try:
            kw = dict(call.body)
            kw.pop("stream", None)
            chat = call.path.endswith("/chat/completions")
            api = self.client.chat.completions if chat else self.client.completions
            parts: list[str] = []
            if call.stream:
                stream = api.create(stream=True, **kw)
                try:
                    for ch in stream:
                        if call.want_text and ch.choices:
                            c = ch.choices[0]
                            piece = (c.delta.content if chat else c.text) or ""
                            parts.append(piece)
                finally:
                    stream.close()
            else:
                resp = api.create(**kw)
                if call.want_text and resp.choices:
                    c = resp.choices[0]
                    parts.append((c.message.content if chat else c.text) or "")
            return Result(rec.status if rec.status is not None else 200, None,
                          "".join(parts) if call.want_text else None)
        except oa.APIStatusError as e:
            msg = getattr(e, "message", str(e))
            return Result(e.status_code, f"HTTP {e.status_code}: {_short(msg, 160)}",
                          retry_after=_retry_after(e.response.headers.get("retry-after")))
        except oa.APIConnectionError as e:  # includes APITimeoutError
            cause = e.__cause__ or e
            return Result(rec.status, f"{type(e).__name__}: {_short(repr(cause))}")
        except Exception as e:  # mid-stream decode errors and the like
            return Result(rec.status, f"{type(e).__name__}: {_short(repr(e))}")
        finally:
            self.tl.rec = None

    def close(self) -> None:
        try:
            self.http.close()
        except Exception:
            pass


# --------------------------------------------------------------------------
# curl
# --------------------------------------------------------------------------

_PROXY_ENV = ("http_proxy", "https_proxy", "all_proxy", "no_proxy", "ftp_proxy")
_CURL_MARK = "SIPHONCURL"
_CURL_RE = re.compile(_CURL_MARK + r" code=(\d+) size=(\d+) ra=(\S*) ver=(\S*)")


def _curl_quote(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def curl_env() -> dict:
    env = {k: v for k, v in os.environ.items() if k.lower() not in _PROXY_ENV}
    env.pop("CURL_HOME", None)
    return env


class CurlSession:
    """Each request is one `curl` process; stateless, thread-safe."""

    lib = "curl"

    def __init__(self, rt: Runtime, cfg: Config, key: str, source_ip: str | None):
        self.rt = rt
        self.cfg = cfg
        self.key = key
        self.source_ip = source_ip
        self.env = curl_env()

    def _config(self, call: Call, max_time: float) -> str:
        c = self.cfg
        lines = [
            f"url = {_curl_quote(c.base_url + call.path)}",
            "silent", "show-error", "globoff",
            f"header = {_curl_quote('Content-Type: application/json')}",
            f"header = {_curl_quote('Authorization: Bearer ' + self.key)}",
            f"data-binary = {_curl_quote(json.dumps(call.body, separators=(',', ':')))}",
            f"max-time = {max_time:.0f}",
            f"connect-timeout = {min(15.0, max_time):.0f}",
            # curl config escapes: \\n in the file is a newline for write-out
            'write-out = "%{stderr}\\n' + _CURL_MARK + ' code=%{http_code} size=%{size_download} '
            'ra=%header{retry-after} ver=%{http_version}\\n"',
        ]
        if call.stream:
            lines.append("no-buffer")
        if c.https and c.ca_file:
            lines.append(f"cacert = {_curl_quote(c.ca_file)}")
        if self.source_ip:
            lines.append(f"interface = {_curl_quote(self.source_ip)}")
        if c.proxy:
            lines.append(f"proxy = {_curl_quote(c.proxy)}")
        else:
            lines.append('noproxy = "*"')
        return "\n".join(lines) + "\n"

    def request(self, rec: Record, call: Call) -> Result:
        max_time = max(2.0, min(self.cfg.timeout, self.rt.remaining() + self.rt.drain_s + 1.0))
        conf = self._config(call, max_time).encode("utf-8")
        try:
            p = subprocess.Popen(["curl", "-q", "-K", "-"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, env=self.env, close_fds=True)
        except OSError as e:
            return Result(None, f"cannot run curl: {e}")
        rec.proc = p
        body = bytearray()
        try:
            try:
                p.stdin.write(conf)
                p.stdin.close()
            except BrokenPipeError:
                pass
            fd = p.stdout.fileno()
            while True:
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                rec.on_bytes(len(chunk))
                if call.want_text and len(body) < 4 << 20:
                    body += chunk
            err = p.stderr.read().decode("utf-8", "replace")
            rc = p.wait()
        finally:
            for f in (p.stdout, p.stderr):
                try:
                    f.close()
                except OSError:
                    pass
        m = None
        for m in _CURL_RE.finditer(err):
            pass
        code = int(m.group(1)) if m else 0
        status = code if code > 0 else None
        rec.status = status
        ra = _retry_after(m.group(3)) if m and m.group(3) else None
        other = "\n".join(line for line in err.splitlines() if line.strip() and not line.startswith(_CURL_MARK))
        if rc < 0:
            return Result(status, f"interrupted: {self.rt.reason or 'stopped'} (curl signal {-rc})")
        if rc != 0:
            return Result(status, f"curl exit {rc}: {_short(other or 'error', 200)}", retry_after=ra)
        if status is None:
            return Result(None, f"curl: no HTTP status: {_short(other, 200)}")
        if not (200 <= status < 300):
            return Result(status, f"HTTP {status}: {_short(bytes(body[:300]).decode('utf-8', 'replace'), 160)}"
                          if call.want_text else f"HTTP {status}", retry_after=ra)
        text = None
        if call.want_text:
            text = _extract_text(bytes(body), call.stream, call.path.endswith("/chat/completions"))
        return Result(status, None, text)

    def close(self) -> None:
        pass


def _extract_text(body: bytes, stream: bool, chat: bool) -> str:
    try:
        if not stream:
            o = json.loads(body)
            c = o["choices"][0]
            return (c["message"]["content"] if chat else c["text"]) or ""
        parts = []
        for line in body.decode("utf-8", "replace").splitlines():
            if not line.startswith("data:"):
                continue
            d = line[5:].strip()
            if d == "[DONE]":
                break
            o = json.loads(d)
            if o.get("choices"):
                c = o["choices"][0]
                parts.append(((c.get("delta") or {}).get("content") if chat else c.get("text")) or "")
        return "".join(parts)
    except (ValueError, KeyError, IndexError, TypeError):
        return ""


# --------------------------------------------------------------------------
# requests
# --------------------------------------------------------------------------


class RequestsSession:
    """A requests.Session for one key / local address.  NOT thread-safe: one
    per worker thread."""

    lib = "requests"

    def __init__(self, rt: Runtime, cfg: Config, key: str, source_ip: str | None, pool: int = 4):
        import requests  # noqa: PLC0415
        from requests.adapters import HTTPAdapter  # noqa: PLC0415

        class SourceAdapter(HTTPAdapter):
            def __init__(self, src, **kw):
                self._src = src
                super().__init__(**kw)

            def init_poolmanager(self, *a, **kw):
                if self._src:
                    kw["source_address"] = (self._src, 0)
                return super().init_poolmanager(*a, **kw)

            def proxy_manager_for(self, proxy, **kw):
                if self._src:
                    kw["source_address"] = (self._src, 0)
                return super().proxy_manager_for(proxy, **kw)

        self.requests = requests
        self.rt = rt
        self.cfg = cfg
        self.key = key
        s = requests.Session()
        s.trust_env = False  # no proxies / netrc / CA bundles from the environment
        ad = SourceAdapter(source_ip, pool_connections=pool, pool_maxsize=pool, max_retries=0)
        s.mount("http://", ad)
        s.mount("https://", ad)
        if cfg.proxy:
            s.proxies = {"http": cfg.proxy, "https": cfg.proxy}
        s.verify = (cfg.ca_file or True) if cfg.https else True
        s.headers["User-Agent"] = cfg.user_agent or APP_USER_AGENT.format(rv=requests.__version__)
        self.s = s

    def request(self, rec: Record, call: Call) -> Result:
        rq = self.requests
        headers = {"Authorization": f"Bearer {self.key}", "Content-Type": "application/json",
                   "Accept": "text/event-stream" if call.stream else "application/json"}
        data = json.dumps(call.body, separators=(",", ":")).encode("utf-8")
        body = bytearray()
        try:
            r = self.s.post(self.cfg.base_url + call.path, data=data, headers=headers, stream=True,
                            timeout=(min(15.0, self.cfg.timeout), self.cfg.timeout))
            rec.status = r.status_code
            try:
                for chunk in r.raw.stream(65536, decode_content=False):
                    rec.on_bytes(len(chunk))
                    if (call.want_text or r.status_code >= 300) and len(body) < 4 << 20:
                        body += chunk
            finally:
                r.close()
        except rq.RequestException as e:
            return Result(rec.status, f"{type(e).__name__}: {_short(str(e), 200)}")
        except Exception as e:  # urllib3 protocol errors while streaming
            return Result(rec.status, f"{type(e).__name__}: {_short(repr(e), 200)}")
        if not (200 <= r.status_code < 300):
            return Result(r.status_code, f"HTTP {r.status_code}: {_short(bytes(body[:300]).decode('utf-8', 'replace'), 160)}",
                          retry_after=_retry_after(r.headers.get("retry-after")))
        text = _extract_text(bytes(body), call.stream, call.path.endswith("/chat/completions")) \
            if call.want_text else None
        return Result(r.status_code, None, text)

    def close(self) -> None:
        try:
            self.s.close()
        except Exception:
            pass


def make_session(lib: str, rt: Runtime, cfg: Config, key: str, source_ip: str | None, pool: int = 10):
    if lib == "openai-python":
        return OpenAISession(rt, cfg, key, source_ip, pool=pool)
    if lib == "curl":
        return CurlSession(rt, cfg, key, source_ip)
    if lib == "requests":
        return RequestsSession(rt, cfg, key, source_ip, pool=pool)
    raise ValueError(f"unknown client lib {lib!r}")
