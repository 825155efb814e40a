"""``multipart/form-data`` bodies (RFC 7578), read with the standard library's email parser."""

from __future__ import annotations

from dataclasses import dataclass
from email import policy
from email.parser import BytesParser

FORM_DATA = "multipart/form-data"


class MultipartError(ValueError):
    """The body is not a readable ``multipart/form-data`` body."""


@dataclass(frozen=True)
class FormField:
    """One part: a file when it has a ``filename`` (possibly empty), else a plain field."""

    data: bytes
    filename: str | None = None

    @property
    def text(self) -> str:
        return self.data.decode("utf-8", "replace")


def is_form_data(content_type: str | None) -> bool:
    return (content_type or "").split(";", 1)[0].strip().lower() == FORM_DATA


def parse_form(content_type: str, body: bytes) -> dict[str, FormField]:
    """The fields of ``body`` by name (a repeated name keeps its first part); :class:`MultipartError` when the
    content type has no boundary or the body does not follow it."""
    head = f"Content-Type: {content_type}\r\n\r\n".encode("utf-8", "replace")
    message = BytesParser(policy=policy.HTTP).parsebytes(head + body)
    if message.get_boundary() is None:
        raise MultipartError("the Content-Type has no boundary")
    if not message.is_multipart():
        raise MultipartError("the body does not start with its boundary")
    fields: dict[str, FormField] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str) or name in fields:
            continue
        payload = part.get_payload(decode=True)
        data = payload if isinstance(payload, bytes) else b""
        fields[name] = FormField(data, part.get_filename())
    return fields
