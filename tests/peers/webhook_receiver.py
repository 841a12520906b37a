#!/usr/bin/env python3
"""A webhook receiver for the tests, written with the Standard Webhooks reference library
(PyPI `standardwebhooks`): it verifies each POST's signature with the endpoint's secret(s)
and appends what arrived to a JSON-lines file; a request whose signature does not verify is
answered 401 and recorded as such.

    webhook_receiver.py --port P --out FILE --secret whsec_... [--secret ...]
                        [--drop-first N]

--drop-first N: for the first N verified requests, record them and then close the connection
without answering (a receiver that processed a message but crashed before acknowledging it),
so the sender must send them again. Prints READY once listening (SO_REUSEPORT, so the test can
hold the port before and between runs)."""

import argparse
import json
import os
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

parser = argparse.ArgumentParser()
parser.add_argument("--port", type=int, required=True)
parser.add_argument("--out", required=True)
parser.add_argument("--secret", action="append", required=True)
parser.add_argument("--drop-first", type=int, default=0)
args = parser.parse_args()

verifiers = [Webhook(s) for s in args.secret]
lock = threading.Lock()
state = {"dropped": 0}


def record(entry):
    with lock:
        with open(args.out, "a") as f:
            f.write(json.dumps(entry) + "\n")
            f.flush()
            os.fsync(f.fileno())


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def do_POST(self):
        length = int(self.headers.get("content-length", "0"))
        body = self.rfile.read(length)
        headers = {k: v for k, v in self.headers.items()}
        payload = None
        for verifier in verifiers:
            try:
                payload = verifier.verify(body, headers)
                break
            except WebhookVerificationError:
                continue
        signatures = headers.get("webhook-signature", headers.get("Webhook-Signature", ""))
        if payload is None:
            record({"path": self.path, "verified": False,
                    "webhook_id": headers.get("webhook-id")})
            self.send_response(401)
            self.send_header("content-length", "0")
            self.end_headers()
            return
        data = payload.get("data", {})
        record({
            "path": self.path,
            "verified": True,
            "webhook_id": headers.get("webhook-id") or headers.get("Webhook-Id"),
            "signatures": len(signatures.split()),
            "type": payload.get("type"),
            "event_id": data.get("id"),
            "cursor": data.get("cursor"),
            "organization_id": data.get("organization_id"),
            "event_version": data.get("event_version"),
            "subject_id": data.get("subject_id"),
            "message_id": (data.get("payload") or {}).get("message_id"),
        })
        with lock:
            drop = state["dropped"] < args.drop_first
            if drop:
                state["dropped"] += 1
        if drop:
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        self.send_response(204)
        self.send_header("content-length", "0")
        self.end_headers()


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def server_bind(self):
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()


server = Server(("127.0.0.1", args.port), Handler)
print("READY", flush=True)
sys.stdout.close()
server.serve_forever()
