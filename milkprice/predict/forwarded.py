"""The URL clients call the predict function at, as far as a front end may say.

A front end (a load balancer, Cloud Run's, a Function URL's) forwards the scheme, host and
path prefix it was called with in ``X-Forwarded-Proto``, ``-Host`` and ``-Prefix``. Anyone can
send those headers, so each is followed only as far as ``MILKPRICE_TRUST_FORWARDED`` trusts
it, and only in a checked shape: a value of another shape is left out, never echoed into the
landing page or the OpenAPI document.
"""

from __future__ import annotations

import re

import flask

HOST = re.compile(r"[A-Za-z0-9.-]+(:\d{1,5})?|\[[0-9A-Fa-f:.]+\](:\d{1,5})?")
PREFIX = re.compile(r"(/[\w.~%!$&'()*+,;=:@-]+)+")


def _first(r: flask.Request, name: str) -> str:
    return r.headers.get(name, "").split(",")[0].strip()  # the first proxy's, of a chain


def base_url(r: flask.Request, trusted: str) -> str:
    """The scheme, host and path prefix a front end forwards, as far as ``trusted`` (none,
    proto or all) allows, then the WSGI ``SCRIPT_NAME``."""
    scheme = _first(r, "X-Forwarded-Proto").lower() if trusted != "none" else ""
    host = _first(r, "X-Forwarded-Host") if trusted == "all" else ""
    prefix = _first(r, "X-Forwarded-Prefix").rstrip("/") if trusted == "all" else ""
    scheme = scheme if scheme in ("http", "https") else r.scheme
    host = host if HOST.fullmatch(host) else r.host
    prefix = prefix if PREFIX.fullmatch(prefix) else ""
    return f"{scheme}://{host}{prefix}{r.script_root}"
