"""URLs given by the user: credentials never belong in them (they would be printed and logged)."""

from __future__ import annotations

from urllib.parse import urlsplit

from dalle_data.errors import SpecError


def has_credentials(url: str) -> bool:
    """Whether ``url`` carries a ``user:password@`` (or ``user@``) part."""
    parts = urlsplit(url.strip())
    return bool(parts.username or parts.password or "@" in parts.netloc)


def without_credentials(url: str) -> str:
    """``url`` with its ``user:password@`` part removed, for messages."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    netloc, slash, path = rest.partition("/")
    return f"{scheme}://{netloc.rpartition('@')[2]}{slash}{path}"


def check_storage_url(text: str, what: str) -> str:
    """``text`` (a folder or an fsspec URL) unchanged; a URL with ``user:password@`` in it is refused,
    without showing them."""
    if "://" in text and has_credentials(text):
        raise SpecError(f"{what} {without_credentials(text)}: put no credentials in the URL; give them to the "
                        "storage's own configuration (for s3://: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
                        "or AWS_PROFILE)")
    return text
