"""Schemathesis hooks for Keel's property-based API tests (apifuzz_test.go).

They state the few rules a JSON Schema cannot say. Each is documented in
words in the service's OpenAPI document; here the generated *positive*
data is made to honour it, so that the server refusing it is not taken
for a document looser than its server. Negative data is sent as drawn.
"""
import datetime
import json
import re
import uuid

import schemathesis

KEY = re.compile(r"^[!-~]([ -~]{0,253}[!-~])?$")
WAIT = re.compile(r"^(0|([0-9]|[12][0-9])(\.[0-9]{1,3})?s|30(\.0{1,3})?s|([0-9]{1,4}|[12][0-9]{4}|30000)ms)$")


def _positive(case):
    meta = case.meta
    return meta is None or meta.generation.mode.is_positive


def _time(value):
    try:
        return datetime.datetime.fromisoformat(value.replace("z", "Z").replace("t", "T"))
    except (TypeError, ValueError, AttributeError):
        return None


@schemathesis.hook
def before_call(ctx, case, **kwargs):
    headers = case.headers if case.headers is not None else {}
    query = case.query if case.query is not None else {}

    # An Idempotency-Key names one command: the few keys the generator
    # draws ("0", "A") would be reused across different requests and
    # rightly answered 422 idempotency-key-reused. A valid key is made
    # unique to its request; an invalid one is sent as drawn.
    key = headers.get("Idempotency-Key")
    if isinstance(key, str) and KEY.match(key):
        headers["Idempotency-Key"] = key[:200] + "-" + uuid.uuid4().hex

    # A long poll on a checkout that does not exist waits its whole wait:
    # any valid wait is cut to 1s, so the run stays within its time.
    wait = query.get("wait")
    if isinstance(wait, str) and WAIT.match(wait) and wait not in ("0", "0s", "0ms"):
        query["wait"] = "1s"

    if not _positive(case):
        return

    # Consistency tokens and cursors are opaque values the server issued:
    # none can be drawn from a schema, so positive data goes without them.
    for name in ("cursor", "consistency_token"):
        query.pop(name, None)
    headers.pop("Consistency-Token", None)

    # to must be after from, and an analytics range at most 366 days long.
    start, end = _time(query.get("from")), _time(query.get("to"))
    if start is not None and end is not None and start.tzinfo is not None and end.tzinfo is not None:
        if not (start < end <= start + datetime.timedelta(days=366)):
            query["to"] = (start + datetime.timedelta(hours=1)).isoformat()

    # An order is in one currency: every amount of POST /orders in the
    # first line's.
    body = case.body
    if case.operation.path == "/orders" and case.operation.method.upper() == "POST" and isinstance(body, dict):
        lines = body.get("lines")
        first = lines[0].get("unit_price") if isinstance(lines, list) and lines and isinstance(lines[0], dict) else None
        if isinstance(first, dict) and isinstance(first.get("currency"), str):
            for money in [l.get("unit_price") for l in lines if isinstance(l, dict)] + list((body.get("totals") or {}).values()):
                if isinstance(money, dict) and "currency" in money:
                    money["currency"] = first["currency"]

    # An order and a reservation name each SKU once (POST /orders, POST
    # /reservations).
    if case.operation.path in ("/orders", "/reservations") and case.operation.method.upper() == "POST" \
            and isinstance(body, dict) and isinstance(body.get("lines"), list):
        seen, lines = set(), []
        for line in body["lines"]:
            sku = line.get("sku") if isinstance(line, dict) else None
            if sku not in seen:
                seen.add(sku)
                lines.append(line)
        body["lines"] = lines


@schemathesis.check
def valid_data_not_invalid(ctx, response, case):
    """A request the document allows is never refused as invalid.

    positive_data_acceptance takes 422 (schemathesis.toml) for refusals
    that depend on state; a 422 of type validation is not one of them: it
    says a field breaks a rule the document does not state.
    """
    if not _positive(case) or response.status_code != 422:
        return None
    if _problem(response).get("type", "").endswith("/validation"):
        raise AssertionError("Valid data refused as invalid: the document is looser than the server\n" + response.text[:2000])
    return None


def _problem(response):
    try:
        body = json.loads(response.content)
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
