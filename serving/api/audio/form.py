"""OpenAI's multipart transcription request -> a typed form plus the file's bytes.

Falcon's multipart parser reads the parts in order; text fields are small (Falcon caps a
buffered part at 1 MiB) and the file part is read up to the upload limit plus one byte, so
an oversized file is refused without being held whole.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ..errors import InvalidRequest, PayloadTooLarge
from ..request_body import validate

ResponseFormat = Literal["json", "text", "srt", "verbose_json", "vtt"]
# Fields that OpenAI's SDK sends as repeated `name[]` parts.
_LIST_FIELDS = frozenset({"timestamp_granularities", "include"})


class TranscriptionForm(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1)
    language: str | None = None
    prompt: str | None = None
    response_format: ResponseFormat = "json"
    temperature: float = Field(0.0, ge=0.0, le=1.0)
    timestamp_granularities: list[Literal["word", "segment"]] | None = None
    # Known OpenAI fields this server cannot honour; accepted here so the refusal names them.
    stream: bool = False
    include: list[str] | None = None
    chunking_strategy: str | None = None


@dataclass(frozen=True)
class Upload:
    form: TranscriptionForm
    data: bytes
    filename: str | None


def _text(part) -> str:
    text = part.get_text()
    return text if text is not None else part.get_data().decode("utf-8", errors="strict")


def read_upload(req, *, max_file_bytes: int) -> Upload:
    content_type = (req.content_type or "").lower()
    if not content_type.startswith("multipart/form-data"):
        raise InvalidRequest(f"send multipart/form-data with a `file` part, as OpenAI's API takes it "
                             f"(got {req.content_type or 'no content type'})")
    fields: dict[str, object] = {}
    data, filename = None, None
    for part in req.get_media():
        name = part.name or ""
        if name == "file":
            if data is not None:
                raise InvalidRequest("file is given twice; send one audio file", param="file")
            data = part.stream.read(max_file_bytes + 1)
            if len(data) > max_file_bytes:
                raise PayloadTooLarge(f"the audio file exceeds this server's limit of {max_file_bytes} bytes "
                                      "(--max-audio-bytes)", param="file")
            filename = part.filename
            continue
        key = name[:-2] if name.endswith("[]") else name
        if key in _LIST_FIELDS:
            fields.setdefault(key, []).append(_text(part))  # type: ignore[union-attr]
        elif key in fields:
            raise InvalidRequest(f"{key} is given twice", param=key)
        else:
            fields[key] = _text(part)
    if data is None:
        raise InvalidRequest("file: missing required field (the audio to transcribe)", param="file")
    return Upload(form=validate(fields, TranscriptionForm), data=data, filename=filename)
