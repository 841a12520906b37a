#!/usr/bin/env bash
# Makes the direct_open and direct_mime seed inputs with the openssl CLI (an independent
# S/MIME peer): messages from alice to bob, signed (detached or opaque, wrapped in
# message/rfc822 or not) and encrypted (AES-128-CBC, AES-256-GCM) to bob.pem.
set -euo pipefail
cd "$(dirname "$0")"
open=../seeds/direct_open
mime=../seeds/direct_mime
mkdir -p "$open" "$mime"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
printf 'From: alice@sender.example\r\nTo: bob@recipient.example\r\nSubject: Referral\r\nMessage-ID: <m1@sender.example>\r\nDate: Fri, 27 Nov 2026 10:00:00 +0000\r\nContent-Type: text/plain\r\n\r\nPlease see the patient on Monday.\r\n' > "$tmp/inner.eml"
# Wrapped: the signed entity is message/rfc822.
{ printf 'Content-Type: message/rfc822\r\n\r\n'; cat "$tmp/inner.eml"; } > "$tmp/wrapped.eml"
# Unwrapped: the signed entity is the body part itself.
printf 'Content-Type: text/plain\r\n\r\nPlease see the patient on Monday.\r\n' > "$tmp/unwrapped.eml"
n=0
for entity in wrapped unwrapped; do
    for mode in detached opaque; do
        flags=(-md sha256 -signer alice.pem -inkey alice.key -binary)
        [ "$mode" = opaque ] && flags+=(-nodetach)
        openssl cms -sign "${flags[@]}" -in "$tmp/$entity.eml" -out "$tmp/signed.eml"
        cp "$tmp/signed.eml" "$mime/$entity-$mode.eml"
        for cipher in -aes-128-cbc -aes-256-gcm; do
            n=$((n + 1))
            openssl cms -encrypt "$cipher" -binary -in "$tmp/signed.eml" -out "$tmp/enc.eml" \
                -from alice@sender.example -to bob@recipient.example -subject "Referral" bob.pem
            cp "$tmp/enc.eml" "$open/$entity-$mode$cipher.eml"
        done
    done
done
cp "$tmp/inner.eml" "$mime/inner.eml"
echo "made $n sealed messages"

# --- the other targets. Vectors: tests/data from the project root (or $VECTORS).
vectors=${VECTORS:-../../tests/data}
seeds=..
mkdir -p $seeds/seeds/{hl7,reports,imap,webhook,reminder_rule}
# hl7: byte 0 read size (0 = 16 KiB), byte 1 max frame (0xff = 1 MiB), then MLLP frames.
frame() { printf '\x0b'; tr '\n' '\r' < "$1"; printf '\x1c\x0d'; }
for f in SIU-S12-01 SIU-S15-01 ADT-A04-01 ADT04-23 ADT04-251; do
    { printf '\x00\xff'; frame "$vectors/hl7/$f.hl7"; } > "$seeds/seeds/hl7/$f"
done
{ printf '\x03\xff'; printf 'noise'; frame "$vectors/hl7/ADT-A08-01.hl7"; frame "$vectors/hl7/SIU-S13-01.hl7"; printf '\x0bMSH|^~\\&|half'; } \
    > "$seeds/seeds/hl7/two-frames-and-a-half"
{ printf '\x07\x10'; frame "$vectors/hl7/SIU-S14-01.hl7"; frame "$vectors/hl7/ADT-A28-01.hl7"; } > "$seeds/seeds/hl7/oversize"
# reports: the reference implementation's MDNs and DSN, and a bounce addressed by VERP.
cp "$vectors"/direct/messages/ri-*.txt $seeds/seeds/reports/ && chmod 644 $seeds/seeds/reports/ri-*.txt
printf 'From: MAILER-DAEMON@mx.example.org\r\nTo: bounces+r01jx00000000000000000000ab@sender.example\r\nSubject: Undelivered Mail\r\nMIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status; boundary="b1"\r\n\r\n--b1\r\nContent-Type: text/plain\r\n\r\nNot delivered.\r\n--b1\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.org\r\n\r\nFinal-Recipient: rfc822; patient@example.org\r\nAction: failed\r\nStatus: 5.1.1\r\nDiagnostic-Code: smtp; 550 5.1.1 <patient@example.org> unknown\r\n\r\n--b1\r\nContent-Type: text/rfc822-headers\r\n\r\nMessage-ID: <r01jx00000000000000000000cd@sender.example>\r\nSubject: x\r\n--b1--\r\n' \
    > $seeds/seeds/reports/verp-bounce.eml
# imap: what a server answers to CAPABILITY, SELECT, UID SEARCH, UID FETCH, UID STORE, IDLE, LOGOUT.
printf '* CAPABILITY IMAP4rev1 IDLE\r\na1 OK done\r\n* 2 EXISTS\r\n* OK [UIDVALIDITY 1]\r\na2 OK [READ-WRITE] SELECT\r\n* SEARCH 4 7\r\na3 OK\r\n* 1 FETCH (UID 4 BODY[] {18}\r\nSubject: hi\r\n\r\nx\r\n)\r\na4 OK\r\na5 OK\r\n* 2 FETCH (UID 7 BODY[] {0}\r\n)\r\na6 OK\r\na7 OK\r\n+ idling\r\n* 3 EXISTS\r\na8 OK IDLE done\r\n* BYE\r\na9 OK\r\n' \
    > $seeds/seeds/imap/session
printf '* CAPABILITY IMAP4rev1\r\na1 OK\r\na2 OK\r\n* SEARCH\r\na3 OK\r\n* 1 EXISTS\r\na4 OK\r\n' > $seeds/seeds/imap/idle-after-exists
printf '* CAPABILITY IMAP4rev1\r\na1 OK\r\na2 NO [NONEXISTENT] no such mailbox\r\n' > $seeds/seeds/imap/refused
# webhook: byte 0 picks the provider (0 Twilio, 1 Telnyx, 2 HMAC-SHA256; +0x80 inbound), then
# url \n signature \n timestamp \n body, signed with the target's keys at 1800000000.
python3 - "$seeds/seeds/webhook" <<'PY'
import base64, hashlib, hmac, subprocess, sys, tempfile, urllib.parse
out = sys.argv[1]
token = b"fuzz-auth-token"
def twilio(url, params):
    data = url + "".join(k + v for k, v in sorted(params))
    return base64.b64encode(hmac.new(token, data.encode(), hashlib.sha1).digest()).decode()
def write(name, select, url, sig, ts, body):
    with open(f"{out}/{name}", "wb") as f:
        f.write(bytes([select]) + f"{url}\n{sig}\n{ts}\n".encode() + body)
url = "https://gw.example.org/hooks/twilio/status?delivery=dlv_01jx0000000000000000000000"
params = [("MessageSid", "SM123"), ("MessageStatus", "undelivered"), ("ErrorCode", "30003")]
write("twilio-status", 0, url, twilio(url, params), "", urllib.parse.urlencode(params).encode())
url = "https://gw.example.org:443/hooks/twilio/inbound"
params = [("MessageSid", "SM9"), ("From", "+15005550006"), ("To", "+15005550001"), ("Body", "C"), ("MediaUrl0", "https://x.example/m")]
write("twilio-inbound", 0x80, url, twilio(url, params), "", urllib.parse.urlencode(params).encode())
body = b'{"data":{"event_type":"message.finalized","payload":{"id":"m1","to":[{"status":"delivery_failed","phone_number":"+15005550001"}],"errors":[{"code":"40300","detail":"blocked"}]}}}'
for name, select, body in [("telnyx-status", 1, body),
        ("telnyx-inbound", 0x81, b'{"data":{"event_type":"message.received","payload":{"id":"m2","from":{"phone_number":"+15005550006"},"to":[{"phone_number":"+15005550001"}],"text":"STOP","media":[{"url":"https://x.example/a"}]}}}')]:
    signed = b"1800000000|" + body
    with tempfile.NamedTemporaryFile() as f:
        f.write(signed)
        f.flush()
        sig = subprocess.run(["openssl", "pkeyutl", "-sign", "-rawin", "-inkey", "telnyx.key", "-in", f.name], capture_output=True, check=True).stdout
    write(name, select, "https://gw.example.org/hooks/telnyx/status", base64.b64encode(sig).decode(), "1800000000", body)
body = b"MessageSid=SM5&MessageStatus=delivered"
write("hmac-status", 2, "https://gw.example.org/hooks/x/status", "sha256=" + hmac.new(token, b"1800000000." + body, hashlib.sha256).hexdigest(), "1800000000", body)
PY
# fax_webhook: byte 0 picks the provider (0 Phaxio, 1 Telnyx; +0x80 inbound), then
# url \n signature \n timestamp \n content-type \n body, signed with the target's keys.
mkdir -p $seeds/seeds/fax_webhook
python3 - "$seeds/seeds/fax_webhook" <<'PY'
import base64, hashlib, hmac, json, subprocess, sys, tempfile
out = sys.argv[1]
token = b"fuzz-callback-token"
boundary = "fuzzb0undary"
def write(name, select, url, sig, ts, ctype, body):
    with open(f"{out}/{name}", "wb") as f:
        f.write(bytes([select]) + f"{url}\n{sig}\n{ts}\n{ctype}\n".encode() + body)
def phaxio(name, select, url, fields, files):
    data = url + "".join(k + v for k, v in sorted(fields))
    data += "".join(k + hashlib.sha1(v).hexdigest() for k, v in sorted(files))
    sig = hmac.new(token, data.encode(), hashlib.sha1).hexdigest()
    body = b""
    for k, v in fields:
        body += f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
    for k, v in files:
        body += (f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"; filename="fax.pdf"\r\n'
                 "Content-Type: application/pdf\r\n\r\n").encode() + v + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    write(name, select, url, sig, "", f"multipart/form-data; boundary={boundary}", body)
pdf = b"%PDF-1.4\n1 0 obj<</Type/Catalog>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n"
received = json.dumps({"id": 1001, "direction": "received", "num_pages": 2, "status": "success",
    "from_number": "+13125550100", "to_number": "+12125550100"})
phaxio("phaxio-inbound", 0x80, "https://gw.example.org/hooks/phaxio/inbound",
       [("direction", "received"), ("fax", received), ("is_test", "false"), ("success", "true")], [("file", pdf)])
partial = received.replace('"success"', '"partialsuccess"')
phaxio("phaxio-inbound-partial", 0x80, "https://gw.example.org/hooks/phaxio/inbound",
       [("direction", "received"), ("fax", partial)], [("file", pdf)])
sent = json.dumps({"id": 7, "direction": "sent", "num_pages": 3, "status": "failure",
    "error_type": "lineError", "error_id": 32, "error_message": "Busy"})
phaxio("phaxio-status", 0, "https://gw.example.org/hooks/phaxio/status?delivery=abc",
       [("direction", "sent"), ("event_type", "fax_completed"), ("fax", sent), ("success", "false")], [])
def telnyx(name, select, url, body):
    with tempfile.NamedTemporaryFile() as f:
        f.write(b"1800000000|" + body)
        f.flush()
        sig = subprocess.run(["openssl", "pkeyutl", "-sign", "-rawin", "-inkey", "telnyx.key", "-in", f.name], capture_output=True, check=True).stdout
    write(name, select, url, base64.b64encode(sig).decode(), "1800000000", "application/json", body)
telnyx("telnyx-received", 0x81, "https://gw.example.org/hooks/telnyx_fax/inbound", json.dumps({"data": {
    "id": "ev1", "event_type": "fax.received", "payload": {"fax_id": "f1", "direction": "inbound",
    "from": "+13125550100", "to": "+12125550100", "page_count": 2, "status": "received",
    "media_url": "https://s3.amazonaws.com/faxes/f1.pdf"}}}).encode())
telnyx("telnyx-status", 1, "https://gw.example.org/hooks/telnyx_fax/status", json.dumps({"data": {
    "id": "ev2", "event_type": "fax.failed", "payload": {"fax_id": "f2", "status": "failed",
    "failure_reason": "user_busy", "direction": "outbound", "page_count": 0}}}).encode())
PY
# reminder_rule: byte 0 bit 0 picks JSON (0) or TOML (1).
{ printf '\x00'; printf '{"id":"standard","touches":[{"id":"email-7d","before":"7d","channels":["email","sms"]},{"id":"sms-2h","before":"2 hours","channels":["sms"]},{"id":"d","at":"1 business day before at 10:00","channels":["sms"]}]}'; } \
    > $seeds/seeds/reminder_rule/rule.json
{ printf '\x0b'; printf 'id = "r"\nappointment_types = ["NEW"]\nreplies = false\n[[touches]]\nid = "t"\nat = "2 days before at 17:30"\nchannels = ["email"]\ntemplate = "reminder"\n[[touches]]\nid = "u"\nbefore = "90m"\nchannels = ["sms"]\n'; } \
    > $seeds/seeds/reminder_rule/rule.toml
# docs: C-CDA in the three shapes the header reader must get right (default namespace,
# `cda:`-prefixed, interleaved given/family with two names), the ETT XDM package, and the
# reference implementation's slash-less layout (IHE_XDM/SUBSET01METADATA.xml).
# direct_content: opened inner messages — text with references, HTML only, a C-CDA
# attachment, an XDM package (base64), a text/xml part in quoted-printable.
mkdir -p $seeds/seeds/docs $seeds/seeds/direct_content
python3 - "$vectors" "$seeds/seeds" <<'PY'
import base64, hashlib, io, sys, zipfile
vectors, out = sys.argv[1], sys.argv[2]
def write(path, data):
    with open(f"{out}/{path}", "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())
ccd = open(f"{vectors}/ccda/CCD-2.xml", "rb").read()
interleaved = """<ClinicalDocument xmlns="urn:hl7-org:v3"><title>t</title><recordTarget><patientRole>
<id root="2.16.840.1.113883.4.1" extension="123456789"/><addr use="HP"><streetAddressLine>1 Main</streetAddressLine><city>Salem</city></addr>
<telecom use="HP" value="tel:+15035550100"/><patient><name use="L"><given>A</given><family>B</family><given>C</given></name>
<name>Unstructured Name</name><administrativeGenderCode code="F"/><birthTime value="19501219"/></patient></patientRole></recordTarget>
<component/></ClinicalDocument>"""
write("docs/interleaved.xml", interleaved)
write("docs/default-ns.xml", interleaved.replace("<given>C</given>", ""))
doc = b'<ClinicalDocument xmlns="urn:hl7-org:v3"/>'
md = f"""<SubmitObjectsRequest xmlns="urn:oasis:names:tc:ebxml-regrep:xsd:lcm:3.0"><RegistryObjectList xmlns="urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0">
<ExtrinsicObject id="a" mimeType="text/xml"><Slot name="URI"><ValueList><Value>DOC.XML</Value></ValueList></Slot>
<Slot name="size"><ValueList><Value>{len(doc)}</Value></ValueList></Slot><Slot name="hash"><ValueList><Value>{hashlib.sha1(doc).hexdigest()}</Value></ValueList></Slot>
<Slot name="sourcePatientInfo"><ValueList><Value>PID-3|1^^^&amp;1.2.3&amp;ISO</Value><Value>PID-5|Doe^Jane</Value></ValueList></Slot>
<ExternalIdentifier identificationScheme="urn:uuid:58a6f841-87b3-4a3e-92fd-a8ffeff98427" value="1^^^&amp;1.2.3&amp;ISO"/></ExtrinsicObject>
</RegistryObjectList></SubmitObjectsRequest>"""
buf = io.BytesIO()
with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
    z.writestr("IHE_XDM/SUBSET01METADATA.xml", md)
    z.writestr("IHE_XDM/SUBSET01/DOC.XML", doc)
write("docs/ri-slashless.zip", buf.getvalue())
xdm = open(f"{vectors}/direct/xdm/ett-XDM_LIM.ZIP", "rb").read()
head = ("From: a@direct.sender.example\r\nTo: b@direct.north.example\r\nSubject: Referral\r\n"
        "Message-ID: <m1@sender.example>\r\nIn-Reply-To: <r01@gw.example>\r\nReferences: <x@y> <r01@gw.example>\r\nMIME-Version: 1.0\r\n")
def b64(data):
    text = base64.b64encode(data).decode()
    return "\r\n".join(text[i:i + 76] for i in range(0, len(text), 76))
def mixed(parts):
    body = head + 'Content-Type: multipart/mixed; boundary="b1"\r\n\r\n--b1\r\nContent-Type: text/plain\r\n\r\nSee attached.\r\n'
    for ctype, name, data in parts:
        body += (f'--b1\r\nContent-Type: {ctype}; name="{name}"\r\nContent-Disposition: attachment; filename="{name}"\r\n'
                 f"Content-Transfer-Encoding: base64\r\n\r\n{b64(data)}\r\n")
    return body + "--b1--\r\n"
write("direct_content/text.eml", head + "Content-Type: text/plain; charset=utf-8\r\n\r\nPlease see the patient.\r\n")
write("direct_content/html-only.eml", head + "Content-Type: text/html\r\n\r\n<html><head><style>p{}</style></head><body><p>Hi &amp; <b>bye</b></p><script>x</script></body></html>\r\n")
write("direct_content/alternative.eml", head + 'Content-Type: multipart/alternative; boundary="a"\r\n\r\n--a\r\nContent-Type: text/plain\r\n\r\nHi\r\n--a\r\nContent-Type: text/html\r\n\r\n<p>Hi</p>\r\n--a--\r\n')
write("direct_content/ccda.eml", mixed([("application/xml", "ccd.xml", ccd[:6000] + b"</ClinicalDocument>")]))
write("direct_content/xdm.eml", mixed([("application/zip", "xdm.zip", xdm)]))
write("direct_content/xdm-small.eml", mixed([("application/zip", "xdm.zip", buf.getvalue()), ("application/pdf", "a.pdf", b"%PDF-1.7")]))
write("direct_content/text-xml-qp.eml", head + 'Content-Type: multipart/mixed; boundary="b1"\r\n\r\n--b1\r\nContent-Type: text/plain\r\n\r\nx\r\n--b1\r\n'
      'Content-Type: text/xml; charset=iso-8859-1\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n'
      '<ClinicalDocument xmlns=3D"urn:hl7-org:v3"><title>R=E9sum=E9</title></ClinicalDocument>\r\n--b1--\r\n')
PY
du -sh $seeds/seeds
