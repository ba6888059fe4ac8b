"""``vision`` ``openai``: explain a photo with a vision-capable chat model.

One non-streamed chat completion whose user message has two parts, the question as text
and the image as a ``data:`` URL (``image_url``) — the format OpenAI, Qwen-VL through
DashScope's compatible mode, vLLM and Ollama accept.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import openai

from xiaozhi_core.errors import ProviderError

from ._common import Budget, make_client, map_error
from .plugin import OpenAIVisionOptions

__all__ = ["OpenAIVision", "image_message"]


def image_message(
    image: bytes, mime_type: str, question: str, detail: str | None = None
) -> dict[str, Any]:
    """The user message: the question, then the image as a base64 ``data:`` URL.

    >>> m = image_message(b"\\x89PNG", "image/png", "what?")
    >>> m["content"][0], m["content"][1]["image_url"]["url"]
    ({'type': 'text', 'text': 'what?'}, 'data:image/png;base64,iVBORw==')
    """
    url: dict[str, Any] = {
        "url": f"data:{mime_type};base64,{base64.b64encode(image).decode('ascii')}"
    }
    if detail:
        url["detail"] = detail
    return {
        "role": "user",
        "content": [{"type": "text", "text": question}, {"type": "image_url", "image_url": url}],
    }


class OpenAIVision:
    """Answers a question about an image with an OpenAI-compatible chat model."""

    def __init__(self, options: OpenAIVisionOptions) -> None:
        self.options = options
        self.client, self.target = make_client(options, "vision", options.model)

    async def explain(self, image: bytes, mime_type: str, question: str) -> str:
        o = self.options
        messages: list[dict[str, Any]] = []
        if o.system_prompt:
            messages.append({"role": "system", "content": o.system_prompt})
        messages.append(image_message(image, mime_type, question, o.detail))
        params: dict[str, Any] = {"model": o.model, "messages": messages, "stream": False}
        if o.max_tokens is not None:
            params["max_tokens"] = o.max_tokens
        if o.temperature is not None:
            params["temperature"] = o.temperature
        if o.extra_body:
            params["extra_body"] = dict(o.extra_body)
        budget = Budget(self.target, "image explanation", o.total_timeout)
        try:
            result = await budget.step(self.client.chat.completions.create(**params))
        except (openai.OpenAIError, json.JSONDecodeError, OSError) as exc:
            raise map_error(exc, self.target, "image explanation") from exc
        try:
            text = result.choices[0].message.content
        except (AttributeError, IndexError, TypeError):
            text = None
        if not isinstance(text, str) or not text.strip():
            raise ProviderError(
                f"{self.target.label}: image explanation failed: the reply has no text "
                f"({str(result)[:200]!r}); does model {o.model!r} accept images?"
            )
        return text.strip()

    async def close(self) -> None:
        await self.client.close()
