"""Answer chosen S3 requests with an error, before they reach the server.

botocore emits `before-send.s3.<Operation>` just before a request goes on the
wire; a handler that returns a response short-circuits it. The server never
sees the request, exactly as if a proxy in front of it had answered 503.

    inj = Injector(client)
    inj.fail("UploadPart", 503, "SlowDown", times=2, when=lambda url: "partNumber=3" in url)
    inj.seen["UploadPart"]   -> how many UploadPart requests were attempted
    inj.injected             -> how many were answered with an error
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from botocore.awsrequest import AWSResponse


class _Raw:
    def __init__(self, body: bytes) -> None:
        self._body = body

    def stream(self, **kw: Any) -> Iterator[bytes]:
        yield self._body


@dataclass
class _Rule:
    op: str
    status: int
    code: str
    times: int
    when: Callable[[str], bool]


class Injector:
    def __init__(self, client: Any) -> None:
        self.client = client
        self.rules: list[_Rule] = []
        self.seen: Counter[str] = Counter()
        self.injected = 0
        client.meta.events.register("before-send.s3.*", self._handler)

    def fail(
        self,
        op: str,
        status: int,
        code: str,
        *,
        times: int = 1,
        when: Callable[[str], bool] = lambda url: True,
    ) -> None:
        self.rules.append(_Rule(op, status, code, times, when))

    def _handler(self, request: Any, event_name: str, **kw: Any) -> AWSResponse | None:
        op = event_name.rsplit(".", 1)[-1]
        self.seen[op] += 1
        for rule in self.rules:
            if rule.op == op and rule.times > 0 and rule.when(request.url):
                rule.times -= 1
                self.injected += 1
                body = (
                    f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{rule.code}</Code>"
                    f"<Message>injected {rule.code}</Message></Error>"
                ).encode()
                return AWSResponse(
                    request.url,
                    rule.status,
                    {"Content-Type": "application/xml", "Content-Length": str(len(body))},
                    _Raw(body),
                )
        return None
