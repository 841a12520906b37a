#!/usr/bin/env python3
"""An independent mail client for the tests (Python's smtplib and imaplib).

  mail_client.py submit --port P --cafile CA --user U --password PW --mail-from A --rcpt B < message
      STARTTLS (verified against CA), AUTH, then one message; prints the server's reply.
  mail_client.py fetch --port P --user U --password PW
      LOGIN, SELECT INBOX, every message (BODY.PEEK[]); prints a JSON list of base64 strings.
"""

import argparse
import base64
import imaplib
import json
import smtplib
import ssl
import sys


def submit(args):
    raw = sys.stdin.buffer.read()
    context = ssl.create_default_context(cafile=args.cafile)
    with smtplib.SMTP("127.0.0.1", args.port, timeout=20) as smtp:
        smtp.starttls(context=context)
        smtp.login(args.user, args.password)
        refused = smtp.sendmail(args.mail_from, [args.rcpt], raw)
        if refused:
            print(json.dumps({"refused": str(refused)}))
            return 1
    print(json.dumps({"ok": True}))
    return 0


def fetch(args):
    imap = imaplib.IMAP4("127.0.0.1", args.port, timeout=20)
    imap.login(args.user, args.password)
    imap.select("INBOX", readonly=True)
    _, data = imap.uid("SEARCH", None, "ALL")
    messages = []
    for uid in data[0].split():
        _, parts = imap.uid("FETCH", uid, "(BODY.PEEK[])")
        for part in parts:
            if isinstance(part, tuple):
                messages.append(base64.b64encode(part[1]).decode("ascii"))
    imap.logout()
    print(json.dumps(messages))
    return 0


def main():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("submit")
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--cafile", required=True)
    s.add_argument("--user", required=True)
    s.add_argument("--password", required=True)
    s.add_argument("--mail-from", required=True)
    s.add_argument("--rcpt", required=True)
    f = sub.add_parser("fetch")
    f.add_argument("--port", type=int, required=True)
    f.add_argument("--user", required=True)
    f.add_argument("--password", required=True)
    args = parser.parse_args()
    return submit(args) if args.command == "submit" else fetch(args)


if __name__ == "__main__":
    sys.exit(main())
