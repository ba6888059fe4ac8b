"""``qwen_vl``: explain a photo with Qwen-VL through DashScope's native multimodal API.

One JSON request, ``POST {base_http_url}/services/aigc/multimodal-generation/generation``
with ``input.messages`` whose user content is ``[{"image": "data:<mime>;base64,..."},
{"text": <question>}]``; the answer is ``output.choices[0].message.content[*].text``.

Sent with aiohttp directly, not through the SDK's ``MultiModalConversation``: the SDK
treats every string in a user message that names an existing local file (``text`` parts
included) as a file to upload to DashScope's OSS — with the question coming from a
device, ``"~/.ssh/id_rsa"`` would be uploaded and described. Here the question is only
ever text.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
from typing import Any

import aiohttp
import certifi

from xiaozhi_core.errors import ProviderError, ProviderTimeout

from ._common import api_error, resolve_api_key
from .plugin import QwenVLOptions

__all__ = ["MULTIMODAL_PATH", "QwenVL", "multimodal_request"]

MULTIMODAL_PATH = "/services/aigc/multimodal-generation/generation"
DEFAULT_HTTP_URL = "https://dashscope.aliyuncs.com/api/v1"


def multimodal_request(
    options: QwenVLOptions, image: bytes, mime_type: str, question: str
) -> dict[str, Any]:
    """The request body.

    >>> body = multimodal_request(QwenVLOptions(system_prompt=""), b"\\xff\\xd8\\xff",
    ...                           "image/jpeg", "what?")
    >>> body["model"], body["input"]["messages"][0]["content"]
    ('qwen-vl-plus', [{'image': 'data:image/jpeg;base64,/9j/'}, {'text': 'what?'}])
    """
    messages: list[dict[str, Any]] = []
    if options.system_prompt:
        messages.append({"role": "system", "content": [{"text": options.system_prompt}]})
    data_url = f"data:{mime_type};base64,{base64.b64encode(image).decode('ascii')}"
    messages.append({"role": "user", "content": [{"image": data_url}, {"text": question}]})
    parameters: dict[str, Any] = dict(options.parameters)
    if options.max_tokens is not None:
        parameters["max_tokens"] = options.max_tokens
    if options.temperature is not None:
        parameters["temperature"] = options.temperature
    return {"model": options.model, "input": {"messages": messages}, "parameters": parameters}


class QwenVL:
    """``io`` vision provider ``qwen_vl``."""

    def __init__(self, options: QwenVLOptions) -> None:
        self.options = options
        self._api_key = resolve_api_key(options.api_key, "qwen_vl")
        self._session: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        return (self.options.base_http_url or DEFAULT_HTTP_URL).rstrip("/") + MULTIMODAL_PATH

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            context = ssl.create_default_context(cafile=certifi.where())
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=context), trust_env=True
            )
        return self._session

    async def explain(self, image: bytes, mime_type: str, question: str) -> str:
        o = self.options
        body = multimodal_request(o, image, mime_type, question)
        headers = {"Authorization": f"Bearer {self._api_key}", "Content-Type": "application/json"}
        try:
            async with (
                asyncio.timeout(o.timeout),
                self._client().post(self.url, json=body, headers=headers) as resp,
            ):
                status = resp.status
                try:
                    data = await resp.json(content_type=None)
                except ValueError:
                    data = {"message": (await resp.text())[:200]}
        except TimeoutError:
            raise ProviderTimeout(
                f"dashscope qwen_vl: no answer from {self.url} within "
                f"{o.timeout:g} s (model {o.model})"
            ) from None
        except aiohttp.ClientError as exc:
            raise ProviderError(
                f"dashscope qwen_vl: request to {self.url} failed: {type(exc).__name__}: {exc}"
            ) from exc
        if not isinstance(data, dict):
            data = {}
        if status != 200:
            raise api_error(
                "qwen_vl",
                "image explanation",
                status=status,
                code=data.get("code"),
                message=data.get("message"),
                request_id=data.get("request_id"),
            )
        try:
            content = data["output"]["choices"][0]["message"]["content"]
            text = (
                content
                if isinstance(content, str)
                else "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
            )
        except (KeyError, IndexError, TypeError, AttributeError):
            text = ""
        if not text.strip():
            raise ProviderError(
                f"dashscope qwen_vl: the answer has no text "
                f"({str(data)[:200]!r}); is {o.model!r} a vision model?"
            )
        return text.strip()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
