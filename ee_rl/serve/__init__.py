"""Early-exit inference server: HTTP and WebSocket, each answer streamed as soon as its exit fires.

:mod:`codecs` (wire formats and validation), :mod:`served` (model + input spec + rule), :mod:`batcher` (dynamic
batching across clients), :mod:`app` (the FastAPI endpoints), :mod:`metrics`, :mod:`runner` (uvicorn),
:mod:`loaders` (agent / vision / random NatureCNN, real inputs), :mod:`load_test`.
"""

from ee_rl.serve.app import create_app
from ee_rl.serve.batcher import DynamicBatcher, Job
from ee_rl.serve.codecs import DecodedBatch, InputSpec, PayloadError, decode_json, decode_npy, encode_npy
from ee_rl.serve.load_test import LoadTestReport, run_load_test
from ee_rl.serve.metrics import ServerMetrics
from ee_rl.serve.runner import ServerThread, bind_socket, serve_forever
from ee_rl.serve.served import AnswerBlock, ServedModel, answer_fields, serving_rule
from ee_rl.serve.settings import LoadTestSettings, ServeSettings, load_load_test_settings, load_serve_settings

__all__ = [
    "AnswerBlock",
    "DecodedBatch",
    "DynamicBatcher",
    "InputSpec",
    "Job",
    "LoadTestReport",
    "LoadTestSettings",
    "PayloadError",
    "ServeSettings",
    "ServedModel",
    "ServerMetrics",
    "ServerThread",
    "answer_fields",
    "bind_socket",
    "create_app",
    "decode_json",
    "decode_npy",
    "encode_npy",
    "load_load_test_settings",
    "load_serve_settings",
    "run_load_test",
    "serve_forever",
    "serving_rule",
]
