#!/usr/bin/env python3
"""Bridge-added latency of a voice-note turn, through the whole real cluster.

Starts `tools/bridge.sh up` (controller, two workers, gateway, both simulators;
all ports 0) once per agent variant. The agent simulator has no think time and
speaks its 5.75 s reply in real time: once with an end marker (the best case,
not in ElevenLabs' contract), once as the live service behaves (no marker,
alignment, a 1.5 s pause in the middle of the reply), where the worker ends
the reply on alignment plus its settle time. As a WhatsApp user, the script
sends the hello voice note N times and measures from the moment whatsapp-sim
accepted the user's message to the moment the reply voice note is in the
user's outbox (the outbox long poll answers as soon as it lands).
Bridge-added latency = that time minus the agent's speaking time (pause
included): what the bridge adds before the agent hears the note (download,
speech-to-text) and after it stops talking (end-of-reply evidence, encode,
upload, send).

Writes a JSON summary to the path given as the first argument.
"""
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTE = os.path.join(ROOT, "..", "shared", "fixtures", "audio", "voice_note_hello.ogg")
TURNS = int(os.environ.get("BENCH_TURNS", "15"))
REPLY_SECONDS = 92050 / 16000  # agent_reply_16k.s16le, streamed in real time
WARMUP = 3
# (name, elevenlabs-sim flags, the agent's speaking time in seconds)
VARIANTS = [
    ("end marker", "--reply_pace=1 --emit_final_markers --reply_gap_ms=0 --turn_timeout_s=0",
     REPLY_SECONDS),
    ("live-like (alignment, 1.5 s pause)", "--reply_pace=1 --reply_gap_ms=1500 --turn_timeout_s=0",
     REPLY_SECONDS + 1.5),
]


def post(url, body, ctype):
    req = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": ctype})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read())


def get(url):
    with urllib.request.urlopen(url, timeout=120) as r:
        return json.loads(r.read())


def start_cluster(tmp, sim_args):
    env = dict(os.environ, BRIDGE_SKIP_BUILD="1", BRIDGE_DATA_DIR=tmp,
               CONTROLLER_PORT="0", CONTROLLER_METRICS_PORT="0", WORKER1_PORT="0",
               WORKER1_METRICS_PORT="0", WORKER2_PORT="0", WORKER2_METRICS_PORT="0",
               GATEWAY_PORT="0", ELEVENLABS_AGENT_ID="", WHATSAPP_ACCESS_TOKEN="",
               ELEVENLABS_SIM_ARGS=sim_args, LOG_LEVEL="warn")
    proc = subprocess.Popen([os.path.join(ROOT, "tools", "bridge.sh"), "up"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    wa = None
    for line in proc.stdout:  # the banner: wait for it, never sleep
        m = re.search(r"whatsapp\s+(http://\S+)", line)
        if m:
            wa = m.group(1)
        if "send a text and a voice note" in line and wa:
            break
    if wa is None:
        proc.kill()
        raise SystemExit("bench: the cluster did not come up")
    return proc, wa


def measure(name, sim_args, agent_seconds):
    tmp = subprocess.check_output(["mktemp", "-d"], text=True).strip()
    proc, wa = start_cluster(tmp, sim_args)
    note = open(NOTE, "rb").read()
    samples = []
    try:
        user = "15550009999"
        for i in range(WARMUP + TURNS):
            t0 = time.perf_counter()
            post(f"{wa}/sim/users/{user}/voice", note, "audio/ogg")
            box = get(f"{wa}/sim/users/{user}/outbox?min_count={i + 1}&wait_ms=60000")
            elapsed = time.perf_counter() - t0
            if len(box) < i + 1 or box[i].get("type") != "audio":
                raise SystemExit(f"bench: turn {i} got no voice reply: {box[-1:]}")
            if i >= WARMUP:
                samples.append((elapsed - agent_seconds) * 1000)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    samples.sort()
    p = lambda q: samples[min(len(samples) - 1, int(q * len(samples)))]
    return {"name": name, "turns": len(samples), "p50_ms": p(0.50), "p90_ms": p(0.90),
            "p99_ms": p(0.99), "max_ms": samples[-1], "mean_ms": statistics.mean(samples),
            "agent_seconds": agent_seconds}


def main():
    out_path = sys.argv[1]
    variants = [measure(*v) for v in VARIANTS]
    summary = {"note_seconds": 5.02, "reply_seconds": REPLY_SECONDS, "variants": variants}
    json.dump(summary, open(out_path, "w"), indent=1)
    print(json.dumps(summary), file=sys.stderr)


if __name__ == "__main__":
    main()
