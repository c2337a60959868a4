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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--audio", required=True)
    ap.add_argument("--spawn", required=True)
    ap.add_argument("--spawns", type=int, required=True)
    ap.add_argument("--command", required=True)
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
    print("\n".join(out))


if __name__ == "__main__":
    main()
