"""A small OpenAI-compatible chat endpoint for the Serve door's tests (no model weights).

`python openai_app.py NAME...` deploys one application per NAME at route prefix /NAME; each
answers /v1/models and /v1/chat/completions (plain and streamed as server-sent events) with
"<NAME> heard <the last message> from <X-Remote-User>", so a test sees which application
answered and who the gateway said was calling.
"""

import asyncio
import json
import sys

from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse
from ray import serve


def build(name: str):  # type: ignore[no-untyped-def]
    api = FastAPI()

    @serve.deployment(name=f"{name}-model", ray_actor_options={"num_cpus": 0})
    @serve.ingress(api)
    class Chat:
        @api.get("/v1/models")
        def models(self) -> dict[str, object]:
            return {
                "object": "list",
                "data": [{"id": name, "object": "model", "created": 0, "owned_by": "tests"}],
            }

        @api.post("/v1/chat/completions")
        async def chat(self, request: Request):  # type: ignore[no-untyped-def]
            body = await request.json()
            caller = request.headers.get("x-remote-user", "nobody")
            text = f"{name} heard {body['messages'][-1]['content']} from {caller}"
            if not body.get("stream"):
                return {
                    "id": "chatcmpl-1",
                    "object": "chat.completion",
                    "created": 0,
                    "model": body.get("model", name),
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": text},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                }

            async def events():  # type: ignore[no-untyped-def]
                words = text.split(" ")
                for index, word in enumerate(words):
                    delta = word if index == len(words) - 1 else word + " "
                    chunk = {
                        "id": "chatcmpl-1",
                        "object": "chat.completion.chunk",
                        "created": 0,
                        "model": body.get("model", name),
                        "choices": [
                            {"index": 0, "delta": {"content": delta}, "finish_reason": None}
                        ],
                    }
                    yield f"data: {json.dumps(chunk)}\n\n"
                    # Spaced out, so a test can tell chunks arrive one by one.
                    await asyncio.sleep(0.2)
                done = {
                    "id": "chatcmpl-1",
                    "object": "chat.completion.chunk",
                    "created": 0,
                    "model": body.get("model", name),
                    "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                }
                yield f"data: {json.dumps(done)}\n\n"
                yield "data: [DONE]\n\n"

            return StreamingResponse(events(), media_type="text/event-stream")

    return Chat.bind()


if __name__ == "__main__":
    for app_name in sys.argv[1:]:
        serve.run(build(app_name), name=app_name, route_prefix=f"/{app_name}", blocking=False)
    print("deployed:", ", ".join(sys.argv[1:]))
