#!/usr/bin/env python3
"""Turns one bench/run.sh run into docs/benchmarks.md (machine, date, command, tables)."""
import argparse
import datetime
import json
import os
import platform
import subprocess


def machine():
    cpu = "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    distro = "Linux"
    try:
        for line in open("/etc/os-release"):
            if line.startswith("PRETTY_NAME="):
                distro = line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, {mem_gib:.0f} GiB, {distro}, {platform.machine()}"


def version(cmd):
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        return (out.stdout or out.stderr).splitlines()[0].strip()
    except Exception:  # noqa: BLE001 - a missing tool is reported, not fatal
        return "not installed"


def load_bench(path):
    runs = {}
    for b in json.load(open(path))["benchmarks"]:
        if b.get("run_type") == "aggregate":
            continue
        runs[b["name"]] = b
    return runs


def us(b):
    unit = {"ns": 1e-3, "us": 1.0, "ms": 1e3, "s": 1e6}[b["time_unit"]]
    return b["cpu_time"] * unit


def codec_tables(runs):
    notes = ["voice_note_hello.ogg", "voice_note_long.ogg", "voice_note_tone_440hz.ogg",
             "voice_note_stereo_48k.ogg"]
    lines = ["### Decode: Ogg/Opus note → PCM (our streaming decoder vs raw `opus_decode` on the same packets)", "",
             "| note | rate | ours µs | raw libopus µs | ours / raw | ours real-time factor |",
             "|---|---|---|---|---|---|"]
    for key, b in runs.items():
        if not key.startswith("BM_DecodeOurs/"):
            continue
        _, note, rate = key.split("/")
        raw = runs.get(f"BM_DecodeRawLibopus/{note}/{rate}")
        if raw is None:
            continue
        lines.append(f"| {notes[int(note)]} | {int(rate)/1000:g} kHz | {us(b):.0f} | {us(raw):.0f} | "
                     f"{us(b)/us(raw):.2f}× | {b['rtf']:.0f}× |")
    lines += ["", "Raw libopus decodes at 48 kHz where the rate is not native to Opus (22.05/44.1 kHz), "
              "so those rows include our resampling cost in the ratio.", "",
              "### Encode: agent PCM (5.75 s) → Ogg/Opus voice note (ours, 100 ms chunks, vs raw `opus_encode`, 24 kb/s, complexity 10, 20 ms VOIP)", "",
              "| input rate | ours µs | raw libopus µs | ours / raw | ours real-time factor | note size |",
              "|---|---|---|---|---|---|"]
    for key, b in runs.items():
        if not key.startswith("BM_EncodeOurs/"):
            continue
        rate = key.split("/")[1]
        raw = runs.get(f"BM_EncodeRawLibopus/{rate}")
        if raw is None:
            continue
        lines.append(f"| {int(rate)/1000:g} kHz | {us(b):.0f} | {us(raw):.0f} | {us(b)/us(raw):.2f}× | "
                     f"{b['rtf']:.0f}× | {b['bytes']/1024:.1f} KiB |")
    return lines


def spawn_table(path, runs, spawns):
    rows = dict(line.rstrip("\n").split("\t") for line in open(path) if "\t" in line)
    ours_dec = us(runs["BM_DecodeOurs/0/16000"])
    ours_enc = us(runs["BM_EncodeOurs/16000"])
    note_s = runs["BM_DecodeOurs/0/16000"]["rtf"] * us(runs["BM_DecodeOurs/0/16000"]) / 1e6
    lines = [f"### Per note, one process each (mean of {spawns} runs, wall time): the hello note ({note_s:.2f} s) to 16 kHz PCM, and the agent reply (5.75 s, 16 kHz) to a voice note", "",
             "| tool | decode µs | encode µs | decode vs ours in-process | encode vs ours in-process |",
             "|---|---|---|---|---|",
             f"| bridge worker, in process (library) | {ours_dec:.0f} | {ours_enc:.0f} | 1× | 1× |"]
    for tool, label in [("bridgectl", "`bridgectl audio` (process per note, same code)"),
                        ("opusdec", "`opusdec` / `opusenc` (opus-tools)"),
                        ("ffmpeg", "`ffmpeg` spawned per note (what the Node guide does)")]:
        dec = rows.get(f"decode_{tool}", "NA")
        enc = rows.get(f"encode_{'opusenc' if tool == 'opusdec' else tool}", "NA")
        fmt = lambda v, base: f"{int(v)/base:.1f}× slower" if v != "NA" else "n/a"
        lines.append(f"| {label} | {dec} | {enc} | {fmt(dec, ours_dec)} | {fmt(enc, ours_enc)} |")
    return lines


def reading(runs, spawn_path):
    """What the numbers say against the targets of issue #3 (computed, not typed in)."""
    rows = dict(line.rstrip("\n").split("\t") for line in open(spawn_path) if "\t" in line)
    def ratios(prefix, raw_prefix, keep):
        out = []
        for k, b in runs.items():
            if k.startswith(prefix) and keep(k):
                raw = runs.get(raw_prefix + k[len(prefix):])
                if raw:
                    out.append(us(b) / us(raw))
        return out
    native = ratios("BM_DecodeOurs/", "BM_DecodeRawLibopus/", lambda k: not k.endswith(("44100", "22050")))
    resampled = ratios("BM_DecodeOurs/", "BM_DecodeRawLibopus/", lambda k: k.endswith(("44100", "22050")))
    enc = ratios("BM_EncodeOurs/", "BM_EncodeRawLibopus/", lambda k: True)
    ff_dec = int(rows.get("decode_ffmpeg", "0") or 0) / us(runs["BM_DecodeOurs/0/16000"]) if rows.get("decode_ffmpeg", "NA") != "NA" else 0
    ff_enc = int(rows.get("encode_ffmpeg", "0") or 0) / us(runs["BM_EncodeOurs/16000"]) if rows.get("encode_ffmpeg", "NA") != "NA" else 0
    return ["## Reading", "",
            f"- Decode at the rates Opus decodes natively (8/16/24/48 kHz, what agents take): at most "
            f"{max(native):.2f}× raw libopus (target ≤ 1.3×). Where a resampler is needed (44.1 kHz), "
            f"{max(resampled):.2f}×: speexdsp's 48 → 44.1 kHz filter costs more than Opus decoding itself.",
            f"- Encode: at most {max(enc):.2f}× raw libopus (target ≤ 1.2×); the raw baseline encodes 44.1 kHz "
            "input as 48 kHz frames without resampling.",
            f"- Against spawning ffmpeg per note: decode {ff_dec:.1f}× faster, encode {ff_enc:.1f}× faster "
            "(target ≥ 20×). Decoding a note costs less than starting a process, so the spawn dominates; "
            "encoding is dominated by libopus at complexity 10, which ffmpeg runs too, so no wrapper can be "
            "20× faster there at equal quality.", ""]


def load_ingest(path):
    """bench/ingest_bench.sh's TSV: target, key, value."""
    rows = {}
    for line in open(path):
        parts = line.rstrip("\n").split("\t")
        if len(parts) == 3:
            rows.setdefault(parts[0], {})[parts[1]] = parts[2]
    return rows


def ingest_section(rows):
    """The bridge's webhook edge vs the seed guide's express handler (issue #5)."""
    run, b, n = rows["run"], rows["bridge"], rows["node"]
    num = lambda d, k: float(d.get(k, "nan"))
    ms = lambda d, k: f"{num(d, k) / 1000:.1f}"
    errors = lambda d: sum(int(d.get(k, 0)) for k in
                           ("non2xx", "connect_errors", "read_errors", "write_errors", "timeouts"))
    mib = lambda kib: f"{int(kib) / 1024:.0f}"
    lines = ["## Webhook ingest", "",
             f"`wrk -t{run['threads']} -c{run['connections']} -d{run['seconds']}s` POSTing signed "
             f"deliveries to `/webhook/whatsapp` (bench/ingest_bench.sh): {run['pool']} bodies made "
             "beforehand from the text and voice-note fixtures, alternating, each with its own message id "
             "and signature, each wrk thread on its own slice. wrk, the servers and the controller share "
             f"the same {run['cores']} cores, so every number includes that contention. "
             f"{run['wrk']}; Node {run['node']}, express {run['express']}; data on {run['data_fs']}.", "",
             "| edge | what 200 means | req/s | p50 ms | p99 ms | max ms | errors | peak RSS MiB |",
             "|---|---|---|---|---|---|---|---|",
             f"| bridge: bridge-gateway → bridge-controller | batch committed in SQLite (WAL, fsync, group commit) | "
             f"{num(b, 'rps'):.0f} | {ms(b, 'p50_us')} | {ms(b, 'p99_us')} | {ms(b, 'max_us')} | {errors(b)} | "
             f"{mib(b['rss_kib'])} ({mib(b['rss_gateway_kib'])} + {mib(b['rss_controller_kib'])}) |",
             f"| Node reference (seed guide's express handler, one process) | body handed to `fs.appendFile`, "
             f"**not fsynced** | {num(n, 'rps'):.0f} | {ms(n, 'p50_us')} | {ms(n, 'p99_us')} | "
             f"{ms(n, 'max_us')} | {errors(n)} | {mib(n['rss_kib'])} |", "",
             "Errors count non-2xx answers plus socket errors and timeouts. Bridge RSS is gateway + controller "
             "(peak, VmHWM); no media worker is attached, so the controller keeps every queued turn in memory.", ""]
    dups = int(b.get("duplicates", 0)) + int(n.get("duplicates", 0))
    lines.append(
        f"- **Check:** the controller queued {b['queued']} messages and the gateway acknowledged {b['acked']}; "
        f"wrk read {b['ok']} of those 200s, the other {int(b['queued']) - int(b['ok'])} were in flight when wrk "
        f"stopped (at most one per connection): **{b['verify']}**. The Node reference appended "
        f"{n['appended']} bodies for {n['ok']} 200s read. Message ids repeated because the pool ran out: "
        f"{dups}; duplicates the controller saw: {b.get('server_duplicates', '0')}.")
    ratio = num(b, "rps") / num(n, "rps")
    lower_p99 = num(b, "p99_us") < num(n, "p99_us")
    met = ratio >= 10 and lower_p99
    lines.append(
        f"- **Against the target** (≥ 10× the Node reference's throughput with a lower p99): "
        f"{ratio:.2f}× the throughput, p99 {ms(b, 'p99_us')} ms vs {ms(n, 'p99_us')} ms "
        f"({'lower' if lower_p99 else 'higher'}): **{'met' if met else 'not met'}**.")
    # What dominates, from this run's own numbers.
    commit, p50, floor = num(b, "commit_mean_us"), num(b, "p50_us"), num(b, "healthz_p50_us")
    lines.append(
        f"- **Where the bridge's time goes:** the controller makes a delivery durable in {commit / 1000:.1f} ms "
        f"on average (arrival to fsynced commit, shared by everything in one group commit), against a p50 of "
        f"{p50 / 1000:.1f} ms at the edge; an empty `GET /healthz` on one idle connection, which touches "
        f"neither controller nor store, takes {floor / 1000:.1f} ms (p50).")
    if floor >= 20000:
        lines.append(
            "  The HTTP layer, not durability, sets the pace: a request that does no work already waits "
            "~40 ms, the Linux delayed-ACK timer. Found when this benchmark was written (strace of the "
            "gateway): its cpp-httplib (Debian's 0.11.4) leaves "
            "`TCP_NODELAY` off and sends headers and body in two writes, so the body waits for the client's "
            "ACK; its default pool of 8 threads (max(8, cores − 1)) serves 8 keep-alive connections at a time, "
            "each closed after 5 requests, so the other connections queue, which is the p99. "
            "Turning on `TCP_NODELAY` and sizing the pool and keep-alive for the load are the next steps.")
    elif commit >= p50 / 2:
        lines.append(
            "  Durability dominates: each group commit waits for an fsync of the SQLite WAL before anyone in "
            "it is answered, while the Node reference answers once its append reaches the page cache.")
    else:
        lines.append(
            "  Neither the store nor the idle HTTP path dominates at p50: the remaining time is queueing in the "
            "gateway and the gRPC hop under load, on cores shared with wrk.")
    lines += ["- The comparison flatters Node on safety: its 200 promises only a page-cache write (lost on power "
              "failure), the bridge's 200 a synced commit. The seed guide runs Node under pm2 in cluster mode "
              "(one process per core); one process is measured here, as the bridge is one gateway.", ""]
    return lines


def turn_section(t):
    """The voice-note turn through the real cluster (bench/turn_latency.py)."""
    rows = [f"| {v['name']} | {v['turns']} | {v['p50_ms']:.0f} ms | {v['p90_ms']:.0f} ms | "
            f"{v['p99_ms']:.0f} ms | {v['mean_ms']:.0f} ms |" for v in t["variants"]]
    return ["## Voice-note turn: bridge-added latency", "",
            "`tools/bridge.sh up` with both simulators (default `--voice_input=transcribe`: the note "
            "goes to speech-to-text, its transcript to the agent); the agent has no think time and "
            f"speaks its {t['reply_seconds']:.2f} s reply in real time, once with an end marker (not "
            "in ElevenLabs' contract: the best case) and once as the live service behaves (no marker, "
            "alignment, a 1.5 s pause mid-reply), where the reply ends on alignment plus "
            f"`--reply_settle` (1 s). One user sends the {t['note_seconds']:.2f} s hello note N times "
            "in a row (after 3 warm-up turns). Each turn is timed from whatsapp-sim accepting the "
            "message to the reply voice note in its outbox, minus the agent's speaking time (pause "
            "included): webhook, durable ack, dispatch, read receipt, download, speech-to-text, then "
            "the end-of-reply evidence, the last chunk's encode, upload and send.", "",
            "| agent | turns | p50 | p90 | p99 (= max at this count) | mean |",
            "|---|---|---|---|---|---|", *rows, "",
            "The difference between the rows is the price of having no end marker: the settle time "
            "that lets a second response to the same turn join the reply. The worker's per-stage "
            "histograms (`bridge_turn_stage_seconds{stage}`) split a turn further.", ""]


def load_converse(path):
    """bench/converse_bench.sh's TSV: "# key<TAB>value" facts, a header, one row per N."""
    facts, rows, header = {}, [], None
    for line in open(path):
        parts = line.rstrip("\n").split("\t")
        if line.startswith("#"):
            if len(parts) == 2:
                facts[parts[0].lstrip("# ").strip()] = parts[1]
        elif header is None:
            header = parts
        elif len(parts) == len(header):
            rows.append(dict(zip(header, parts)))
    return facts, rows


def converse_section(facts, rows):
    """Media.Converse at N concurrent streams on one worker (issue #6)."""
    f = lambda r, k: float(r.get(k) or "nan")
    lines = ["## Media.Converse streams", "",
             "bench/converse_bench.sh: for each N, a fresh bridge-controller, elevenlabs-sim (real-time "
             "replies, end markers) and one bridge-worker (`--capacity=1000`); bench/converse_load opens N "
             "`Media.Converse` streams (gRPC callback API, one timer thread, starts staggered over 2 s, "
             f"{facts.get('channels', '?')} connections), each sending the 440 Hz tone (3 s, PCM 16 kHz) in "
             "100 ms messages at real-time pace, then `end_of_input`, and reading the agent's 5.75 s reply "
             "(PCM 16 kHz) to the end. Added latency is the worker's `bridge_converse_chunk_seconds`: agent "
             "audio chunk arrival to the start of its response write. Worker CPU is user + system time over "
             "the load run; CPU per audio second divides it by the audio the worker carried (in + out). "
             "Memory per stream is (peak RSS − idle RSS) / N.", "",
             "| streams | ok / failed | p50 added ms | p99 added ms | chunks | worker CPU s | worker CPU ms per audio s "
             "| sim CPU s | worker RSS idle → peak MiB | KiB per stream | drops out / in | agent audio per stream s (min–max) "
             "| wall s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['n']} | {r['ok']} / {r['failed']} | {f(r, 'p50_ms'):.3f} | {f(r, 'p99_ms'):.3f} | {r['chunks']} | "
            f"{f(r, 'cpu_s'):.2f} | {f(r, 'cpu_ms_per_stream_audio_s'):.2f} | {f(r, 'sim_cpu_s'):.2f} | "
            f"{f(r, 'rss_idle_kib') / 1024:.1f} → {f(r, 'rss_peak_kib') / 1024:.1f} | "
            f"{f(r, 'kib_per_stream'):.0f} | {r['drops_out']} / {r['drops_in']} | "
            f"{f(r, 'min_stream_audio_s'):.2f}–{f(r, 'max_stream_audio_s'):.2f} | {f(r, 'wall_s'):.1f} |")
    bounds = rows[0].get("buckets_ms", "") if rows else ""
    lines += ["", f"Percentiles are interpolated linearly inside the histogram bucket they fall in; the bucket "
              f"bounds ({bounds.replace(',', ', ')} ms) are the resolution: a percentile is only known to lie "
              "within its bucket (e.g. 0.25–0.5 ms). "
              f"The load client, the simulator, the controller and the worker all share the same "
              f"{facts.get('cores', '?')} cores, so every number includes that contention.", ""]
    at = {r["n"]: r for r in rows}
    r200 = at.get("200")
    if r200 is None:
        lines.append("- **Against the targets** (≤ 5 ms p99 added per chunk at 200 streams; ≤ 300 KiB per "
                     "stream): not measured in this run (no 200-stream row).")
    else:
        p99, kib = f(r200, "p99_ms"), f(r200, "kib_per_stream")
        clean = r200["failed"] == "0"
        lat_ok, mem_ok = p99 <= 5 and clean, kib <= 300 and clean
        lines.append(
            f"- **Against the targets** at 200 streams ({r200['ok']} ok, {r200['failed']} failed): p99 added "
            f"{p99:.3f} ms per chunk (target ≤ 5 ms): **{'met' if lat_ok else 'not met'}**; "
            f"{kib:.0f} KiB per stream (target ≤ 300 KiB): **{'met' if mem_ok else 'not met'}**.")
    full = max((f(r, "max_stream_audio_s") for r in rows), default=0)
    for r in rows:
        if f(r, "min_stream_audio_s") < full * 0.95:
            lines.append(f"- At {r['n']} streams, some streams heard less of the agent's reply than others "
                         f"({f(r, 'min_stream_audio_s'):.2f} s against {full:.2f} s, {r['turn_ends']} turn ends "
                         f"for {r['ok']} ok streams): those streams ended OK without the whole reply, so the "
                         "latency percentiles cover fewer chunks. The likely cause is the worker's reply quiet "
                         "gap (1.2 s without agent audio ends a reply) firing while the CPU-starved simulator "
                         "falls behind its 250 ms chunk pace; compare its CPU with the worker's.")
        if r["failed"] != "0":
            lines.append(f"- At {r['n']} streams, {r['failed']} of {r['n']} streams failed; converse_load's "
                         f"stderr in the bench log has their statuses (descriptor limit was "
                         f"{facts.get('nofile', '?')}).")
    lines.append("")
    return lines


def calls_section(facts, rows):
    """WhatsApp calls at N concurrent calls on one worker (issue #15)."""
    f = lambda r, k: float(r.get(k) or "nan")
    secs = rows[0]["seconds"] if rows else "?"
    lines = ["## WhatsApp calls", "",
             "bench/call_bench.sh: for each N, a fresh cluster (elevenlabs-sim answering in real time, "
             "bridge-controller, bridge-gateway, whatsapp-sim, one bridge-worker with loopback media); "
             "bench/call_load places N calls through whatsapp-sim as Meta's side would (ICE-lite, actpass; "
             "the product's own media library, the N callers spread over one media thread per core), each saying a 440 Hz second "
             f"then two silent seconds for {secs} s while the agent answers each turn in real time, then "
             "hangs up. Setup is the caller's view: offer posted to DTLS-SRTP up (the webhook, the "
             "controller, the worker's gathering, pre_accept, ICE, DTLS). Added latency per 20 ms frame is "
             "the worker's own histograms: caller → agent is RTP arrival to the frame sent on the agent "
             "socket (reordering waits included); agent → caller is agent audio arrival to its RTP packet "
             "sent, beyond real-time pacing. CPU per call-second is the worker's user + system time over the "
             "run divided by calls × seconds; the reference beside it is libopus alone encoding and decoding "
             "one second of call audio at the same settings (16 kHz, 20 ms, complexity 5, FEC), timed by the "
             "load client right after its calls, on the same loaded machine: the floor any implementation "
             "pays (it varies with the load left on the cores, so the ratio is rough). Memory per call is (peak RSS − idle RSS) / N.", "",
             "| calls | ok / failed | setup p50 / p99 ms | caller → agent p50 / p99 ms | agent → caller p50 / p99 ms "
             "| worker CPU ms per call-s | libopus alone ms per call-s | ratio | KiB per call | packets received / lost |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        raw = f(r, "raw_codec_ms_per_call_s")
        per = f(r, "cpu_ms_per_call_s")
        lines.append(
            f"| {r['n']} | {r['ok']} / {r['failed']} | {f(r, 'setup_p50_ms'):.0f} / {f(r, 'setup_p99_ms'):.0f} | "
            f"{f(r, 'in_p50_ms'):.2f} / {f(r, 'in_p99_ms'):.2f} | {f(r, 'out_p50_ms'):.2f} / {f(r, 'out_p99_ms'):.2f} | "
            f"{per:.2f} | {raw:.2f} | {per / raw if raw > 0 else float('nan'):.1f}× | {f(r, 'kib_per_call'):.0f} | "
            f"{r['received']} / {r['lost']} |")
    ok20 = [r for r in rows if r["failed"] == "0" and f(r, "in_p99_ms") <= 20 and f(r, "out_p99_ms") <= 20]
    best = max((int(r["n"]) for r in ok20), default=0)
    lines += ["", f"Percentiles are interpolated inside histogram buckets (bounds 0.5, 1, 2.5, 5, 10, 15, 20, 30, "
              f"50 ms). The load client, both simulators, the controller and the worker share the same "
              f"{facts.get('cores', '?')} cores.", "",
              f"- **Concurrent calls at ≤ 20 ms p99 added latency per direction, every call connected:** "
              f"{best if best else 'none of the sizes run'} (the largest N run that met it; larger N were not "
              "run or did not meet it, see the rows).",
              "- Where a larger N misses it, the two cores are saturated: the load client encodes and decodes "
              "every call too, so the machine carries each call twice. Agent → caller grows first (a tick that "
              "runs late delays a paced packet); caller → agent stays low, as a packet is decoded when it "
              "arrives. The worker's CPU per call-second, not the knee, is the number to size by.", ""]
    return lines


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--audio", required=True)
    ap.add_argument("--spawn", required=True)
    ap.add_argument("--spawns", type=int, required=True)
    ap.add_argument("--command", required=True)
    ap.add_argument("--ingest", help="bench/ingest_bench.sh output; adds the webhook ingest section")
    ap.add_argument("--turn", help="bench/turn_latency.py output; adds the voice-note turn section")
    ap.add_argument("--converse", help="bench/converse_bench.sh output; adds the Media.Converse section")
    ap.add_argument("--calls", help="bench/call_bench.sh output; adds the WhatsApp calls section")
    a = ap.parse_args()
    runs = load_bench(a.audio)
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    out = ["# Benchmarks", "",
           "Rewritten by `tools/bridge.sh bench` (bench/run.sh); every number below comes from one run.",
           "CPU times are per operation from google-benchmark; process rows are wall time including process start.", "",
           f"- **Machine:** {machine()}",
           f"- **Date:** {now}",
           f"- **Command:** `{a.command}`",
           f"- **Reference tools:** {version(['opusdec', '--version'])}; {version(['ffmpeg', '-version'])}",
           "", "## Audio codec", ""]
    out += codec_tables(runs)
    out += [""] + spawn_table(a.spawn, runs, a.spawns) + [""]
    out += reading(runs, a.spawn)
    if a.ingest:
        out += ingest_section(load_ingest(a.ingest))
    if a.turn:
        out += turn_section(json.load(open(a.turn)))
    if a.converse:
        out += converse_section(*load_converse(a.converse))
    if a.calls:
        out += calls_section(*load_converse(a.calls))  # same TSV layout
    print("\n".join(out))


if __name__ == "__main__":
    main()
