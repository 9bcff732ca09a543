#!/usr/bin/env python3
"""summarize.py: turn a loadgen --json-out file into the benchmark figure lines
(same-run differences and ratios against their targets) used in BENCHMARKS.md.

Usage: summarize.py latency|stream FILE...   (several runs: median of differences)
       summarize.py throughput FILE
       summarize.py memory FILE [process-name]
"""
import json
import statistics
import sys


def ms(us):
    return f"{us / 1000:.3f} ms"


def verdict(ok):
    return "MET" if ok else "MISSED"


def by_name(doc):
    return {t["name"]: t for t in doc["targets"]}


def diff(doc, name, kind, q):
    for d in doc["diff_vs_first"]:
        if d["target"] == name:
            return d[kind][q]
    return None


def cpu_lines(docs):
    rows = {}
    for d in docs:
        for c in d.get("cpu") or []:
            rows.setdefault(c["name"], []).append(c["cpu_us_per_request"])
    for name, v in rows.items():
        print(f"  CPU per request, {name}: median {statistics.median(v):.1f} µs "
              f"(runs: {', '.join(f'{x:.1f}' for x in v)})")


def latency(docs):
    doc = docs[0]
    print(f"\nFIGURE 1: added latency, {doc['rate_per_target']:.0f} req/s per target, non-streaming "
          f"(same run, differences vs direct-to-mock; {len(docs)} run(s))")
    for i, d in enumerate(docs, 1):
        for n, v in by_name(d).items():
            print(f"  run {i} {n:<8} ok={v['ok']} errors={v['errors']} p50={ms(v['latency_us']['p50'])} "
                  f"p99={ms(v['latency_us']['p99'])} p99.9={ms(v['latency_us']['p99.9'])} "
                  f"(loadgen send-lag p99 {ms(v['send_lag_us']['p99'])})")
    for n in by_name(doc):
        if n == doc["targets"][0]["name"]:
            continue
        p50s = [diff(d, n, "latency_us", "p50") for d in docs]
        p99s = [diff(d, n, "latency_us", "p99") for d in docs]
        p50, p99 = statistics.median(p50s), statistics.median(p99s)
        runs = ", ".join(f"{a / 1000:+.3f}/{b / 1000:+.3f}" for a, b in zip(p50s, p99s))
        line = f"  {n} - direct (median): p50 {p50 / 1000:+.3f} ms, p99 {p99 / 1000:+.3f} ms  (per run p50/p99: {runs})"
        if n == "llmtap":
            line += (f"\n    [target p50 <= 0.150 ms: {verdict(p50 <= 150)}; "
                     f"p99 <= 0.500 ms: {verdict(p99 <= 500)}]")
        print(line)
    cpu_lines(docs)


def stream(docs):
    doc = docs[0]
    print(f"\nFIGURE 2: streaming, {doc['rate_per_target']:.0f} streams/s per target "
          f"(same run, differences vs direct-to-mock; {len(docs)} run(s))")
    for i, d in enumerate(docs, 1):
        for n, v in by_name(d).items():
            print(f"  run {i} {n:<8} ok={v['ok']} errors={v['errors']} bytes/resp={v['mean_response_bytes']} "
                  f"TTFB p50={ms(v['ttfb_us']['p50'])} p99={ms(v['ttfb_us']['p99'])}  "
                  f"TTLB p50={ms(v['latency_us']['p50'])} p99={ms(v['latency_us']['p99'])}  "
                  f"last-event transit p50={ms(v['last_event_transit_us']['p50'])} "
                  f"p99={ms(v['last_event_transit_us']['p99'])}")
    for n in by_name(doc):
        if n == doc["targets"][0]["name"]:
            continue
        med = {}
        for kind in ("ttfb_us", "last_event_transit_us", "latency_us"):
            for q in ("p50", "p99"):
                med[kind, q] = statistics.median(diff(d, n, kind, q) for d in docs)
        f99s = ", ".join(f"{diff(d, n, 'ttfb_us', 'p99') / 1000:+.3f}" for d in docs)
        e99s = ", ".join(f"{diff(d, n, 'last_event_transit_us', 'p99') / 1000:+.3f}" for d in docs)
        line = (f"  {n} - direct (median): TTFB p50 {med['ttfb_us', 'p50'] / 1000:+.3f} "
                f"p99 {med['ttfb_us', 'p99'] / 1000:+.3f} ms; last byte (last-event transit) "
                f"p50 {med['last_event_transit_us', 'p50'] / 1000:+.3f} "
                f"p99 {med['last_event_transit_us', 'p99'] / 1000:+.3f} ms; raw TTLB p99 "
                f"{med['latency_us', 'p99'] / 1000:+.3f} ms (histogram resolution ~8 ms at 1.2 s)"
                f"\n    per run p99: TTFB {f99s}; last byte {e99s}")
        if n == "llmtap":
            line += (f"\n    [target p99 <= 0.500 ms: TTFB {verdict(med['ttfb_us', 'p99'] <= 500)}, "
                     f"last byte {verdict(med['last_event_transit_us', 'p99'] <= 500)}]")
        print(line)
    cpu_lines(docs)


def throughput(doc):
    print(f"\nFIGURE 3: throughput, highest rate with p99 < {doc['p99_limit_us'] / 1000:.0f} ms and no errors")
    rates = {t["name"]: t["max_rate"] for t in doc["targets"]}
    for n, r in rates.items():
        line = f"  {n:<8} {r:>8.0f} req/s"
        if n == "llmtap":
            line += f"   [target >= 15000: {verdict(r >= 15000)}]"
        print(line)
    if "llmtap" in rates:
        for other in ("direct", "nginx"):
            if rates.get(other):
                print(f"  llmtap / {other}: {rates['llmtap'] / rates[other]:.2f}")


def memory(doc, name):
    print(f"\nFIGURE 5: RSS with {doc['open']} of {doc['streams']} concurrent slow streams open "
          f"({doc['failed']} failed, {doc['still_open_at_end']} still open after {doc['hold_s']:.0f}s hold)")
    tl = doc.get("timeline") or []
    for i, p in enumerate(doc["processes"]):
        if tl:
            first, lastt = tl[0], tl[-1]
            print(f"  {p['name']:<8} RSS just after all streams opened {first['rss_kb'][i] / 1024:.1f} MB; "
                  f"after {lastt['t_s']} s of streaming (one event per {doc.get('event_delay_ms', '?')} ms) "
                  f"{lastt['rss_kb'][i] / 1024:.1f} MB")
        line = (f"  {p['name']:<8} before {p['rss_before_kb'] / 1024:.1f} MB, peak {p['rss_peak_kb'] / 1024:.1f} MB, "
                f"~{p['kb_per_stream']:.1f} KiB/stream")
        if p["name"] == name:
            line += f"   [target < 200 MB: {verdict(p['rss_peak_kb'] < 200 * 1024)}]"
        print(line)


if __name__ == "__main__":
    kind, path = sys.argv[1], sys.argv[2]
    with open(path) as f:
        d = json.load(f)
    if kind in ("latency", "stream"):
        docs = [d]
        for p in sys.argv[3:]:
            with open(p) as f:
                docs.append(json.load(f))
        {"latency": latency, "stream": stream}[kind](docs)
    elif kind == "memory":
        memory(d, sys.argv[3] if len(sys.argv) > 3 else "llmtap")
    else:
        throughput(d)
