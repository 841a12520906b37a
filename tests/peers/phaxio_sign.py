"""Signs a Phaxio callback with django-phaxio (PyPI `django-phaxio`), an implementation
independent of ours: its `PhaxioCallbackView.validate_signature` computes the expected
`X-Phaxio-Signature` over the request Django parsed (the absolute URL, the POST fields sorted
by name, the file parts sorted by name with their SHA-1). We build that request with Django's
RequestFactory, take the signature validate_signature expects (it logs it when the one given
does not match), then check that validate_signature accepts it.

stdin: {"url": "https://host/path?query", "token": "...", "fields": [[name, value], ...],
        "files": [[name, filename, content_type, base64 bytes], ...]}
stdout: the signature (hex).
"""
import base64
import json
import logging
import sys
from urllib.parse import urlsplit

import django
from django.conf import settings

spec = json.load(sys.stdin)
settings.configure(
    ALLOWED_HOSTS=["*"],
    PHAXIO_CALLBACK_TOKEN=spec["token"],
    INSTALLED_APPS=["django_phaxio"],
    SECRET_KEY="test",
)
django.setup()

from django.core.exceptions import PermissionDenied  # noqa: E402
from django.core.files.uploadedfile import SimpleUploadedFile  # noqa: E402
from django.test import RequestFactory  # noqa: E402
from django_phaxio.views import PhaxioCallbackView  # noqa: E402

url = urlsplit(spec["url"])
data = {}
for name, value in spec["fields"]:
    data[name] = value
for name, filename, content_type, b64 in spec["files"]:
    data[name] = SimpleUploadedFile(filename, base64.b64decode(b64), content_type=content_type)


def request(signature):
    path = url.path + ("?" + url.query if url.query else "")
    return RequestFactory().post(
        path,
        data=data,
        secure=url.scheme == "https",
        HTTP_HOST=url.netloc,
        HTTP_X_PHAXIO_SIGNATURE=signature,
    )


expected = []


class Capture(logging.Handler):
    def emit(self, record):
        if record.args:
            expected.append(record.args[0])


logging.getLogger("django-phaxio").addHandler(Capture())
try:
    PhaxioCallbackView.validate_signature(request("not-a-signature"))
    sys.exit("django-phaxio accepted a wrong signature")
except PermissionDenied:
    pass
if not expected:
    sys.exit("django-phaxio did not say which signature it expected")
signature = expected[-1]
for f in data.values():
    if hasattr(f, "seek"):
        f.seek(0)
PhaxioCallbackView.validate_signature(request(signature))  # raises if it does not accept it
print(signature)
