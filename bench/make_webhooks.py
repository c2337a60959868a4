#!/usr/bin/env python3
"""Writes N signed webhook deliveries for bench/webhook.lua, one per line:
"sha256=<hex>\t<body>". Each body is the text or the voice-note fixture
(alternating) with its own WhatsApp message id: the controller deduplicates on
that id, so reusing one would turn most requests into cheap duplicates.
wrk's Lua has no HMAC, hence signing here, once, before the run."""
import argparse
import hashlib
import hmac
import json
import pathlib
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--fixtures", required=True, help="shared/fixtures/webhooks")
    ap.add_argument("--secret", default="fixture-app-secret")
    ap.add_argument("--count", type=int, default=20000)
    ap.add_argument("--senders", type=int, default=500,
                    help="distinct users: the controller keeps one session per user")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    fix = pathlib.Path(a.fixtures)
    shapes = [json.loads((fix / f).read_text()) for f in ("text.json", "voice_note.json")]
    key = a.secret.encode()
    now = int(time.time())
    with open(a.out, "w") as out:
        for i in range(a.count):
            doc = json.loads(json.dumps(shapes[i % 2]))  # deep copy
            value = doc["entry"][0]["changes"][0]["value"]
            user = f"1555{i % a.senders:07d}"
            value["contacts"][0]["wa_id"] = user
            msg = value["messages"][0]
            msg["from"] = user
            msg["id"] = f"wamid.BENCH{i:010d}"
            # Today's: the fixtures' own timestamps are older than the 24 h
            # window, so the controller would record every one as too old
            # (--max_message_age) instead of queueing a turn.
            msg["timestamp"] = str(now)
            # Compact and on one line: the file is line-oriented, and bodies stay ~Meta's size.
            body = json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()
            sig = hmac.new(key, body, hashlib.sha256).hexdigest()
            out.write(f"sha256={sig}\t{body.decode()}\n")


if __name__ == "__main__":
    main()
