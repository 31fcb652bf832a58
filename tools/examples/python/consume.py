#!/usr/bin/env python3
"""Consume Keel events from Kafka in Python, decoding them with schemas/ alone.

Keel publishes every event to `<context>.events` as a Kafka record whose value
is the protobuf encoding of the payload and whose headers are CloudEvents 1.0
binary-mode attributes: `ce_type` is the payload's fully-qualified message
name (e.g. `keel.stock.v1.StockReserved`), `ce_id` the event id, `ce_subject`
the stream, `ce_streamversion` its version in the stream, and so on (see the
README, "Kafka topics"). Nothing Keel-specific is needed to read them: this
script looks the message type up by `ce_type` in a descriptor set compiled
from schemas/ with any protobuf toolchain:

    bin/buf build schemas -o keel.binpb
    # or: protoc -I schemas --include_imports --descriptor_set_out=keel.binpb schemas/keel/*/v1/*.proto

and prints one JSON object per event:

    {"topic": ..., "partition": ..., "offset": ..., "key": ...,
     "headers": {"ce_id": ..., "ce_type": ..., ...}, "type": ..., "event": {...}}

Delivery is at least once: a consumer that applies events dedupes by `ce_id`
(or keeps the highest `ce_streamversion` applied per `ce_subject`).

    pip install -r requirements.txt
    python consume.py --descriptors keel.binpb --topic stock.events --group my-app

Exit status: 0, or 1 if some event could not be decoded (each is printed
with an "error" field).
"""

import argparse
import json
import os
import sys
import time

from confluent_kafka import Consumer, KafkaError, KafkaException
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory


def load_pool(path):
    """A descriptor pool of every file in a FileDescriptorSet, imports first."""
    with open(path, "rb") as f:
        fds = descriptor_pb2.FileDescriptorSet.FromString(f.read())
    files = {fd.name: fd for fd in fds.file}
    pool = descriptor_pool.DescriptorPool()
    added = set()

    def add(name):
        if name in added:
            return
        fd = files.get(name)
        if fd is None:
            raise SystemExit(f"{path}: missing import {name} (build it with --include_imports)")
        for dep in fd.dependency:
            add(dep)
        pool.Add(fd)
        added.add(name)

    for name in files:
        add(name)
    return pool


class Decoder:
    """Decodes record values by their ce_type header."""

    def __init__(self, pool):
        self.pool = pool
        self.classes = {}

    def decode(self, type_name, value):
        cls = self.classes.get(type_name)
        if cls is None:
            cls = message_factory.GetMessageClass(self.pool.FindMessageTypeByName(type_name))
            self.classes[type_name] = cls
        msg = cls.FromString(value or b"")
        return json_format.MessageToDict(msg, preserving_proto_field_name=True)


def headers_of(msg):
    out = {}
    for k, v in msg.headers() or []:
        out[k] = v.decode("utf-8", "replace") if v is not None else None
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--brokers", default=os.environ.get("KEEL_KAFKA_BROKERS", "127.0.0.1:9092"))
    ap.add_argument("--topic", action="append", required=True, help="topic to read (repeatable)")
    ap.add_argument("--group", default="keel-python-example", help="consumer group")
    ap.add_argument("--descriptors", required=True, help="FileDescriptorSet built from schemas/")
    ap.add_argument("--max-events", type=int, default=0, help="stop after this many events (0: run until interrupted)")
    ap.add_argument("--idle-timeout", type=float, default=0, help="stop after this many seconds without a record (0: never)")
    args = ap.parse_args()

    decoder = Decoder(load_pool(args.descriptors))
    consumer = Consumer({
        "bootstrap.servers": args.brokers,
        "group.id": args.group,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": True,
        "isolation.level": "read_committed",
    })
    consumer.subscribe(args.topic)
    seen, failed = 0, 0
    last = time.monotonic()
    try:
        while not args.max_events or seen < args.max_events:
            msg = consumer.poll(0.5)
            if msg is None:
                if args.idle_timeout and time.monotonic() - last > args.idle_timeout:
                    break
                continue
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    continue
                raise KafkaException(msg.error())
            last = time.monotonic()
            seen += 1
            headers = headers_of(msg)
            out = {
                "topic": msg.topic(),
                "partition": msg.partition(),
                "offset": msg.offset(),
                "key": msg.key().decode("utf-8", "replace") if msg.key() is not None else None,
                "headers": headers,
                "type": headers.get("ce_type"),
            }
            try:
                if not out["type"]:
                    raise ValueError("no ce_type header: not a Keel event")
                out["event"] = decoder.decode(out["type"], msg.value())
            except Exception as e:  # an unknown type or bad bytes: report, go on
                failed += 1
                out["error"] = f"{type(e).__name__}: {e}"
            print(json.dumps(out, sort_keys=True), flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
