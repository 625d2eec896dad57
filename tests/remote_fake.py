"""A small OpenAI-compatible completions server over a local model, with scripted faults.

It speaks vLLM's dialect (token-id prompts, ``return_tokens_as_token_ids``, ``/tokenize``) and exists
for the remote base's error paths (429s, missing log-probabilities, another tokenizer, text-only
prompts); the equivalence tests use the real ``proxytool serve``.
"""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import torch


class FakeServer:
    def __init__(
        self, model, tokenizer, *, faults=(), logprobs=True, tokenize_shift=0, text_only=False, extra_ids=None
    ):
        self.model, self.tokenizer = model, tokenizer
        self.faults = list(faults)  # HTTP statuses answered (in order) before serving completions
        self.logprobs, self.tokenize_shift = logprobs, tokenize_shift
        self.text_only = text_only  # True: 422 for token-id prompts; "llama-cpp-python": its 500
        self.extra_ids = extra_ids  # "replace": vLLM 0.32's logprob_token_ids (sampled token + those ids only)
        self.requests = []
        self.auth = set()  # Authorization headers seen
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                if self.path == "/v1/models":
                    return self.reply(200, {"object": "list", "data": [{"id": "fake"}]})
                self.reply(404, {"error": {"message": "not found"}})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append((self.path, body))
                server.auth.add(self.headers.get("Authorization"))
                if self.path == "/tokenize":
                    ids = server.tokenizer(body["prompt"], add_special_tokens=False)["input_ids"]
                    return self.reply(200, {"tokens": [i + server.tokenize_shift for i in ids]})
                if self.path != "/v1/completions":
                    return self.reply(404, {"error": {"message": "not found"}})
                with server.lock:
                    fault = server.faults.pop(0) if server.faults else None
                if fault is not None:
                    return self.reply(fault, {"error": {"message": f"scripted {fault}"}})
                if isinstance(body["prompt"], list) and server.text_only:
                    if server.text_only == "llama-cpp-python":  # 0.3.36: HTTP 500 with pydantic's errors
                        message = "2 validation errors: {'loc': ('body', 'prompt', 'str'), 'msg': 'Input should be a "
                        message += "valid string'}"
                        return self.reply(500, {"error": {"message": message, "type": "internal_server_error"}})
                    return self.reply(422, {"error": {"message": "prompt must be a string"}})
                self.reply(200, server.complete(body))

            def reply(self, status, payload):
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()

    @torch.no_grad()
    def complete(self, body):
        prompt = body["prompt"]
        as_text = isinstance(prompt, str)
        ids = self.tokenizer(prompt, add_special_tokens=False)["input_ids"] if as_text else list(prompt)
        tokens, tops, generated = [], [], []
        for _ in range(body["max_tokens"]):
            logp = torch.log_softmax(self.model(torch.tensor([ids])).logits[0, -1].float(), -1)
            values, top = logp.topk(min(body["logprobs"], logp.shape[-1]))
            key = self.tokenizer.decode if as_text else (lambda i: f"token_id:{i}")
            token = int(top[0])
            if self.extra_ids == "replace" and body.get("logprob_token_ids"):
                top = torch.tensor(sorted({token, *body["logprob_token_ids"]}))
                values = logp[top]
            tops.append({key([i]) if as_text else key(i): v for i, v in zip(top.tolist(), values.tolist())})
            tokens.append(key([token]) if as_text else key(token))
            ids.append(token)
            generated.append(token)
        logprobs = {"tokens": tokens, "top_logprobs": tops} if self.logprobs else None
        text = self.tokenizer.decode(generated)
        return {"choices": [{"index": 0, "text": text, "logprobs": logprobs, "finish_reason": "length"}]}
