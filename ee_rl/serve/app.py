"""The FastAPI app: ``POST /predict``, ``WS /stream``, ``GET /health``, ``GET /metrics``.

``POST /predict`` — body: a batch as ``.npy`` bytes (``Content-Type: application/x-npy`` or
``application/octet-stream``) or JSON ``{"inputs": [...], "ids": [...]?}`` (``application/json``); see
:mod:`ee_rl.serve.codecs`. Answer: ``{"items": N, "answers": [{"id", "<action|class>", "probs", "exit",
"flops_fraction"}, ...]}`` in input order. Errors: ``{"error": "..."}`` with 400 (invalid), 413 (too large), 415
(content type).

``WS /stream`` — each client message is one batch: binary = ``.npy`` bytes, text = JSON
``{"inputs": [...], "ids": [...]?, "batch_id": ...?}``. A batch without ``batch_id`` gets the connection's message
counter (0, 1, 2, ... counting every message received). The server sends, as JSON text:

* ``{"type": "answer", "batch_id", "id", "<action|class>", "probs", "exit", "flops_fraction"}`` — one per item, the
  moment its exit fires (items that leave at IC 1 first);
* ``{"type": "end", "batch_id", "items"}`` — after the batch's last answer;
* ``{"type": "error", "batch_id", "error"}`` — that batch was rejected or failed; the connection stays open.

A connection may have ``max_inflight_batches`` batches in flight; further messages are read once one ends. A client
that disconnects mid-batch has its remaining work cancelled; nobody else notices.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse, Response
from starlette.requests import ClientDisconnect

from ee_rl.serve.batcher import DynamicBatcher, Job
from ee_rl.serve.codecs import HTTP_JSON_FIELDS, WS_JSON_FIELDS, DecodedBatch, PayloadError, decode_json, decode_npy
from ee_rl.serve.metrics import ServerMetrics
from ee_rl.serve.served import AnswerBlock, ServedModel, answer_fields
from ee_rl.serve.settings import ServeSettings

NPY_CONTENT_TYPES = ("application/x-npy", "application/octet-stream")
JSON_CONTENT_TYPE = "application/json"

log = logging.getLogger(__name__)


def create_app(
    served: ServedModel, settings: ServeSettings, on_ready: Callable[[], None] | None = None
) -> FastAPI:
    """Build the app serving ``served`` with ``settings``; ``on_ready`` is called once it accepts requests."""
    metrics = ServerMetrics(served.num_ics + 1)
    batcher = DynamicBatcher(served, settings.max_batch, settings.max_wait_ms, metrics)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        served.offline_answers(served.example_batch(1))  # warm-up: first-call kernel setup off the request path
        batcher.start()
        if on_ready is not None:
            on_ready()
        try:
            yield
        finally:
            batcher.stop()

    app = FastAPI(title="ee_rl early-exit inference server", lifespan=lifespan)
    app.state.served, app.state.batcher, app.state.metrics, app.state.settings = served, batcher, metrics, settings

    @app.get("/health")
    async def health() -> dict[str, Any]:
        """Liveness and what is served: model, input format, rule, batching settings."""
        return {
            "status": "ok",
            "model": served.describe(),
            "batching": {"max_batch": settings.max_batch, "max_wait_ms": settings.max_wait_ms},
            "limits": {
                "max_items": settings.max_items,
                "max_body_bytes": settings.max_body_bytes,
                "max_inflight_batches": settings.max_inflight_batches,
            },
        }

    @app.get("/metrics")
    async def get_metrics() -> dict[str, Any]:
        """Requests, items, exit histogram, batch sizes and latency percentiles since start."""
        return metrics.snapshot()

    @app.post("/predict")
    async def predict(request: Request) -> JSONResponse:
        """Answer a whole batch at once (see the module docstring for the formats)."""
        metrics.http_requests += 1
        received_at = time.monotonic()
        try:
            batch = await _decode_http(request, served, settings)
        except PayloadError as exc:
            metrics.rejected += 1
            return JSONResponse({"error": str(exc)}, status_code=exc.status)
        except ClientDisconnect:  # the client left before its body ended: nobody to answer, nothing to log
            metrics.cancelled += 1
            return Response(status_code=499)
        try:
            blocks = await batcher.run(served.model_input(batch.inputs), received_at)
        except RuntimeError as exc:
            return JSONResponse({"error": str(exc)}, status_code=500)
        answers: list[dict[str, Any] | None] = [None] * len(batch.ids)
        for block in blocks:
            for j, item in enumerate(block.items):
                answers[item] = {"id": batch.ids[item], **answer_fields(block, j, served.label_name)}
        return JSONResponse({"items": len(answers), "answers": answers})

    @app.websocket("/stream")
    async def stream(websocket: WebSocket) -> None:
        """Stream each item's answer as soon as its exit fires (see the module docstring)."""
        await websocket.accept()
        metrics.ws_connections_open += 1
        metrics.ws_connections_total += 1
        try:
            await _StreamConnection(websocket, served, settings, batcher, metrics).run()
        finally:
            metrics.ws_connections_open -= 1

    return app


async def _decode_http(request: Request, served: ServedModel, settings: ServeSettings) -> DecodedBatch:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in (*NPY_CONTENT_TYPES, JSON_CONTENT_TYPE):
        raise PayloadError(
            f"unsupported Content-Type {content_type or '(none)'!r}; send {JSON_CONTENT_TYPE} or "
            f"{' / '.join(NPY_CONTENT_TYPES)}",
            status=415,
        )
    limit = settings.max_body_bytes
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise PayloadError(f"the body has {int(length)} bytes, at most {limit} are accepted", status=413)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise PayloadError(f"the body exceeds the limit of {limit} bytes", status=413)
    if content_type == JSON_CONTENT_TYPE:
        return decode_json(bytes(body), served.input_spec, settings.max_items, HTTP_JSON_FIELDS)
    return decode_npy(bytes(body), served.input_spec, settings.max_items)


class _StreamConnection:
    """One WebSocket client: reads batches, submits them, and sends answers through one ordered outbox."""

    def __init__(
        self,
        websocket: WebSocket,
        served: ServedModel,
        settings: ServeSettings,
        batcher: DynamicBatcher,
        metrics: ServerMetrics,
    ) -> None:
        self.websocket, self.served, self.settings = websocket, served, settings
        self.batcher, self.metrics = batcher, metrics
        self.outbox: asyncio.Queue[str | None] = asyncio.Queue()
        self.inflight: dict[Any, Job] = {}
        self.slots = asyncio.Semaphore(settings.max_inflight_batches)
        self.received = 0

    async def run(self) -> None:
        sender = asyncio.create_task(self._send_all())
        receiver = asyncio.create_task(self._receive_all())
        try:
            # Whichever ends first (client gone, or send failed) ends the connection.
            await asyncio.wait({sender, receiver}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            receiver.cancel()
            for job in self.inflight.values():
                job.cancel()
                self.metrics.cancelled += 1
            self.inflight.clear()
            self.outbox.put_nowait(None)
            await asyncio.gather(sender, receiver, return_exceptions=True)

    async def _send_all(self) -> None:
        while True:
            message = await self.outbox.get()
            if message is None:
                return
            await self.websocket.send_text(message)

    async def _receive_all(self) -> None:
        try:
            while True:
                await self.slots.acquire()
                message = await self.websocket.receive()
                if message["type"] == "websocket.disconnect":
                    return
                self._accept(message, time.monotonic())
        except WebSocketDisconnect:
            return

    def _accept(self, message: dict[str, Any], received_at: float) -> None:
        """Decode one client message and submit it; a bad one gets an error message (to this client only)."""
        sequence = self.received
        self.received += 1
        batch_id: Any = sequence
        try:
            batch = self._decode(message)
            if batch.batch_id is not None:
                batch_id = batch.batch_id
            if batch_id in self.inflight:
                raise PayloadError(f"batch_id {batch_id!r} is still in flight on this connection; use a new one")
        except PayloadError as exc:
            if exc.batch_id is not None:
                batch_id = exc.batch_id  # the client named the batch before its mistake: answer under that name
            self._reject(batch_id, str(exc))
            return
        except Exception as exc:  # noqa: BLE001 - a decoder bug must not drop the connection and its other batches
            log.exception("unexpected error decoding a /stream message")
            self._reject(batch_id, f"the server could not decode this batch ({type(exc).__name__})")
            return
        self.metrics.ws_batches += 1
        ids, label = batch.ids, self.served.label_name

        def on_answers(block: AnswerBlock) -> None:
            for j, item in enumerate(block.items):
                self._send({"type": "answer", "batch_id": batch_id, "id": ids[item], **answer_fields(block, j, label)})

        def on_done(error: str | None) -> None:
            self.inflight.pop(batch_id, None)
            self.slots.release()
            if error is None:
                self._send({"type": "end", "batch_id": batch_id, "items": len(ids)})
            else:
                self._send({"type": "error", "batch_id": batch_id, "error": error})

        job = Job(self.served.model_input(batch.inputs), on_answers, on_done, received_at)
        self.inflight[batch_id] = job
        self.batcher.submit(job)

    def _reject(self, batch_id: Any, error: str) -> None:
        self.metrics.rejected += 1
        self._send({"type": "error", "batch_id": batch_id, "error": error})
        self.slots.release()

    def _decode(self, message: dict[str, Any]) -> DecodedBatch:
        limit, spec, max_items = self.settings.max_body_bytes, self.served.input_spec, self.settings.max_items
        data = message.get("bytes")
        if data is not None:
            if len(data) > limit:
                raise PayloadError(f"the message has {len(data)} bytes, at most {limit} are accepted", status=413)
            return decode_npy(data, spec, max_items)
        text = message.get("text")
        if text is None:
            raise PayloadError("empty message: send a .npy batch (binary) or a JSON batch (text)")
        if len(text) > limit:
            raise PayloadError(f"the message has {len(text)} characters, at most {limit} are accepted", status=413)
        return decode_json(text, spec, max_items, WS_JSON_FIELDS)

    def _send(self, message: dict[str, Any]) -> None:
        self.outbox.put_nowait(json.dumps(message))
