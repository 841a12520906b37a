#!/usr/bin/env python3
"""A real SMTP server (aiosmtpd) for the email channel tests.

Writes each accepted message as <n>.eml (the exact DATA bytes) and <n>.json (envelope sender
and recipients) into --dir, each written under a temporary name and renamed into place.
Prints READY on stdout once it accepts connections. It binds --port with SO_REUSEPORT: the
test holds that port (bound, not listening) until READY, so nothing else can take it first.

Faults, scripted by flags:
  --tempfail-rcpt N   answer 451 to the first N RCPT TO, then accept
  --tempfail-data N   answer 451 to the first N DATA, then accept
  --reject            answer 550 to every RCPT TO
  --drop-data-once    close the connection at the end of the first DATA, without a reply
  --auth USER:PASS    require AUTH (PLAIN/LOGIN) with these credentials (no TLS needed)
  --tls MODE --cert PEM --key PEM
                      starttls: offer and require STARTTLS; implicit: TLS from the first byte
"""
import argparse
import json
import os
import sys
import threading
import time

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


class Sink:
    def __init__(self, args):
        self.args = args
        self.count = 0
        self.rcpt_fails = 0
        self.data_fails = 0
        self.dropped = False
        self.lock = threading.Lock()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if self.args.reject:
            return "550 5.7.1 Delivery not authorized, message refused"
        with self.lock:
            if self.rcpt_fails < self.args.tempfail_rcpt:
                self.rcpt_fails += 1
                return "451 4.3.0 Try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            if self.args.drop_data_once and not self.dropped:
                self.dropped = True
                server.transport.close()
                return "421 closing"
            if self.data_fails < self.args.tempfail_data:
                self.data_fails += 1
                return "451 4.3.0 Try again later"
            self.count += 1
            n = self.count
        base = os.path.join(self.args.dir, f"{n:04d}")
        meta = {"mail_from": envelope.mail_from, "rcpt_tos": envelope.rcpt_tos}
        for suffix, data in ((".json", json.dumps(meta).encode()), (".eml", envelope.original_content)):
            tmp = os.path.join(self.args.dir, f".tmp{n}{suffix}")
            with open(tmp, "wb") as f:
                f.write(data)
            os.rename(tmp, base + suffix)
        return f"250 2.0.0 Ok: queued as Q{n:04d}"


class ReusePortController(Controller):
    """aiosmtpd's Controller, its listening socket bound with SO_REUSEPORT."""

    def _create_server(self):
        return self.loop.create_server(
            self._factory_invoker,
            host=self.hostname,
            port=self.port,
            ssl=self.ssl_context,
            reuse_port=True,
        )


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dir", required=True)
    parser.add_argument("--tempfail-rcpt", type=int, default=0)
    parser.add_argument("--tempfail-data", type=int, default=0)
    parser.add_argument("--reject", action="store_true")
    parser.add_argument("--drop-data-once", action="store_true")
    parser.add_argument("--auth", default=None)
    parser.add_argument("--tls", choices=["starttls", "implicit"], default=None)
    parser.add_argument("--cert", default=None)
    parser.add_argument("--key", default=None)
    args = parser.parse_args()
    os.makedirs(args.dir, exist_ok=True)

    kwargs = {}
    if args.auth:
        user, password = args.auth.split(":", 1)

        def authenticator(server, session, envelope, mechanism, auth_data):
            ok = (
                isinstance(auth_data, LoginPassword)
                and auth_data.login.decode() == user
                and auth_data.password.decode() == password
            )
            return AuthResult(success=ok)

        kwargs = dict(authenticator=authenticator, auth_required=True, auth_require_tls=False)

    if args.tls:
        import ssl

        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.cert, args.key)
        if args.tls == "starttls":
            kwargs.update(tls_context=context, require_starttls=True)
        else:
            kwargs.update(ssl_context=context)

    controller = ReusePortController(
        Sink(args), hostname="127.0.0.1", port=args.port, decode_data=False, **kwargs
    )
    controller.start()
    print("READY", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        controller.stop()


if __name__ == "__main__":
    sys.exit(main())
