#!/usr/bin/env python3
"""The backtest replay of issue 18: the "user's script" run by bench/backtest/run.sh.

A backtest reads settled history: daily candlesticks over two years for 50
markets whose candles all lie in the past, and every trade page (1000 a page,
following `cursor`, with a fixed `max_ts` in the past) of 10 of them. This
script makes those requests the way the Python team's code does: plain
`requests`, one Session, one request after the other. It runs them straight at
the fake Kalshi, through kproxy, or through requests-cache's SQLite backend,
or sends them to kproxy as one POST /batch (trades items with "all_pages").

Subcommands (run.sh drives them; each is usable by hand):

  plan    list the fake's markets once and write the plan (which requests a
          run makes) as JSON; every run replays the same plan
  run     replay the plan once and print one JSON line:
          {name, upstream_requests, wall_s, requests_made, failures,
           bytes_on_disk, ...}
  report  turn the JSON lines of one run.sh into bench/results-backtest.md

Upstream requests are counted from the fake's own request log (kalshi-sim -v
prints one line per request it answered), never from kproxy's metrics.

Needs requests; requests-cache for --cache-file (Debian: python3-requests-cache,
which /usr/bin/python3 imports).
"""

import argparse
import calendar
import hashlib
import json
import os
import re
import sys
import time

import requests

# Fixed window end: 2026-12-01T00:00:00Z, so that every run of the script asks
# for the same bytes; moved back when the clock is not yet 2 days past it.
WINDOW_END = calendar.timegm((2026, 12, 1, 0, 0, 0))
DAY = 86400
TWO_YEARS = 730 * DAY
PERIOD_MINUTES = 1440
TRADES_LIMIT = 1000
CANDLE_MARKETS = 50
TRADE_MARKETS = 10
SETTLED = {"determined", "disputed", "amended", "finalized", "settled", "closed"}

# One request of a sequential run; the connect/read timeout bounds each.
REQUEST_TIMEOUT = (3, 20)
# The one POST /batch of a --batch run.
BATCH_TIMEOUT = (3, 120)
# Safety bound on the pages of one trades walk (the plan's markets have < 10).
MAX_PAGES = 50

SIM_LINE = re.compile(r" (GET|HEAD|POST|PUT|DELETE|PATCH) (\S+) -> ")


# ---------------------------------------------------------------- plan


def cmd_plan(args):
    """Pick the markets from the fake's data and write the plan."""
    base = args.base.rstrip("/")
    s = requests.Session()
    now = int(time.time())
    end = WINDOW_END if now >= WINDOW_END + 2 * DAY else (now // DAY - 2) * DAY
    start = end - TWO_YEARS

    def listing(path):
        out, cursor = [], None
        for _ in range(MAX_PAGES):
            params = {"limit": 1000}
            if cursor:
                params["cursor"] = cursor
            r = s.get(base + path, params=params, timeout=REQUEST_TIMEOUT)
            r.raise_for_status()
            body = r.json()
            out += body.get("markets") or []
            cursor = body.get("cursor")
            if not cursor:
                return out
        raise SystemExit(f"plan: {path}: more than {MAX_PAGES} pages")

    def closes(m):
        return calendar.timegm(time.strptime(m["close_time"][:19], "%Y-%m-%dT%H:%M:%S"))

    hist = [dict(m, _hist=True) for m in listing("/historical/markets")]
    live = [dict(m, _hist=False) for m in listing("/markets")]
    # Markets whose whole life (and so every candle) ends a day before the
    # window's end: settled history. Historical first, then settled, then
    # the rest by close time: the list a backtest over past events builds.
    done = [m for m in hist + live if closes(m) <= end - DAY]

    def rank(m):
        return (0 if m["_hist"] else 1 if m.get("status") in SETTLED else 2, closes(m), m["ticker"])

    done.sort(key=rank)
    if len(done) < CANDLE_MARKETS:
        raise SystemExit(f"plan: only {len(done)} markets closed before {end}; need {CANDLE_MARKETS}")
    picked = done[:CANDLE_MARKETS]

    def series_of(m):
        # Kalshi's market object has no series_ticker: it is the event
        # ticker's first segment.
        return m["event_ticker"].split("-")[0]

    candles = []
    for m in picked:
        q = f"start_ts={start}&end_ts={end}&period_interval={PERIOD_MINUTES}"
        if m["_hist"]:
            path = f"/historical/markets/{m['ticker']}/candlesticks?{q}"
        else:
            path = f"/series/{series_of(m)}/markets/{m['ticker']}/candlesticks?{q}"
        candles.append({"id": "c:" + m["ticker"], "path": path})

    # Trades: 2 historical, 3 settled live and 5 more markets of the list
    # (the Fed decision's, thousands of trades each): several pages apiece.
    groups = [[m for m in picked if rank(m)[0] == k] for k in (0, 1, 2)]
    chosen = groups[0][:2] + groups[1][:3]
    chosen += [m for m in picked if m not in chosen and rank(m)[0] == 2 and series_of(m) == "KXFEDDECISION"]
    chosen += [m for m in picked if m not in chosen]
    trades = []
    for m in chosen[:TRADE_MARKETS]:
        route = "/historical/trades" if m["_hist"] else "/markets/trades"
        trades.append({"id": "t:" + m["ticker"],
                       "path": f"{route}?ticker={m['ticker']}&limit={TRADES_LIMIT}&max_ts={end}"})
    plan = {"window": {"start_ts": start, "end_ts": end, "period_interval": PERIOD_MINUTES},
            "candles": candles, "trades": trades}
    with open(args.out, "w") as f:
        json.dump(plan, f, indent=1)
    print(f"plan: {len(candles)} candlestick windows ({sum(m['_hist'] for m in picked)} historical), "
          f"{len(trades)} trade walks, window {start}..{end}", file=sys.stderr)


# ---------------------------------------------------------------- run


def sim_count(log_path):
    """Requests the fake has answered so far, and their paths."""
    if not log_path:
        return 0, []
    with open(log_path, errors="replace") as f:
        paths = [m.group(2) for m in map(SIM_LINE.search, f) if m]
    return len(paths), paths


def settle_count(log_path, limit_s=3.0, quiet_s=0.4):
    """The fake logs a request after its answer is written: wait until the
    count has not moved for quiet_s (at most limit_s)."""
    n, paths = sim_count(log_path)
    deadline = time.monotonic() + limit_s
    still = time.monotonic()
    while log_path and time.monotonic() < deadline:
        time.sleep(0.1)
        n2, paths2 = sim_count(log_path)
        if n2 != n:
            n, paths, still = n2, paths2, time.monotonic()
        elif time.monotonic() - still >= quiet_s:
            break
    return n, paths


def kind_of(path):
    if "/candlesticks" in path:
        return "candles"
    if "/trades" in path:
        return "trades"
    return "other"


def disk_bytes(paths):
    """Bytes allocated on disk by the files at paths (files or directories),
    as du counts them; a sqlite file counts with its -wal, -shm and -journal."""
    seen, total = set(), 0
    files = []
    if not any(os.path.exists(p) for p in paths):
        return None
    for p in paths:
        if os.path.isdir(p):
            files += [os.path.join(root, n) for root, _dirs, names in os.walk(p) for n in names]
        else:
            files += [p, p + "-wal", p + "-shm", p + "-journal"]
    for f in files:
        try:
            st = os.lstat(f)
        except OSError:
            continue
        if st.st_ino not in seen:
            seen.add(st.st_ino)
            total += st.st_blocks * 512
    return total


def run_sequential(session, base, plan, result):
    """The user's loop: one candlestick window per market, then every trade
    page of each trades market. Fills result; returns {id: list} and the
    sha256 of the raw bodies."""
    data = {}
    raw = hashlib.sha256()
    made = failures = 0
    caches = {}
    errors = []

    def get(path):
        nonlocal made, failures
        made += 1
        try:
            r = session.get(base + path, timeout=REQUEST_TIMEOUT)
        except requests.RequestException as err:
            failures += 1
            errors.append(f"{type(err).__name__}")
            return None
        label = r.headers.get("X-Cache") or ("cached" if getattr(r, "from_cache", False) else "-")
        caches[label] = caches.get(label, 0) + 1
        if r.status_code != 200:
            failures += 1
            try:
                errors.append(f"{r.status_code} {r.json().get('code') or r.json().get('error', '')}"[:60])
            except ValueError:
                errors.append(str(r.status_code))
            return None
        raw.update(r.content)
        return r.json()

    for item in plan["candles"]:
        body = get(item["path"])
        if body is not None:
            data[item["id"]] = body.get("candlesticks")
    for item in plan["trades"]:
        cursor, joined = None, []
        for _ in range(MAX_PAGES):
            path = item["path"] + (f"&cursor={cursor}" if cursor else "")
            body = get(path)
            if body is None:
                joined = None  # cannot follow the cursor any further
                break
            joined += body.get("trades") or []
            cursor = body.get("cursor")
            if not cursor:
                break
        if joined is not None:
            data[item["id"]] = joined
    result.update(requests_made=made, failures=failures, answers=caches)
    if errors:
        result["errors"] = summarize(errors)
    return data, raw.hexdigest()


def run_batch(session, kproxy, plan, result):
    """One POST /batch with every item; trades items follow their cursors
    inside kproxy ("all_pages": true)."""
    items = [dict(id=i["id"], path="/trade-api/v2" + i["path"]) for i in plan["candles"]]
    items += [dict(id=i["id"], path="/trade-api/v2" + i["path"], all_pages=True) for i in plan["trades"]]
    result.update(requests_made=1, items=len(items))
    data = {}
    try:
        r = session.post(kproxy.rstrip("/") + "/batch", json={"requests": items}, timeout=BATCH_TIMEOUT)
    except requests.RequestException as err:
        result.update(failures=len(items), errors={type(err).__name__: len(items)})
        return data, None
    if r.status_code != 200:
        try:
            why = "{code}: {error}".format(**r.json())
        except (ValueError, KeyError, TypeError):
            why = r.text.strip()
        result.update(failures=len(items), errors={f"whole batch {r.status_code} {why}"[:140]: 1})
        return data, None
    failures, caches, errors, pages = 0, {}, [], 0
    for resp in r.json().get("responses") or []:
        caches[resp.get("cache") or "-"] = caches.get(resp.get("cache") or "-", 0) + 1
        status = resp.get("status")
        body = resp.get("body") or {}
        if not isinstance(status, int) or status // 100 != 2:
            failures += 1
            errors.append(f"{status} {(body.get('code') if isinstance(body, dict) else '') or resp.get('error', '')}"[:60])
            continue
        if resp["id"].startswith("c:"):
            data[resp["id"]] = body.get("candlesticks")
        else:
            data[resp["id"]] = body.get("trades")
            pages += body.get("pages") or 0
            if body.get("truncated"):
                errors.append("truncated")
    result.update(failures=failures, answers=caches, pages=pages)
    if errors:
        result["errors"] = summarize(errors)
    return data, None


def summarize(errors):
    out = {}
    for e in errors:
        out[e] = out.get(e, 0) + 1
    return out


def cmd_run(args):
    with open(args.plan) as f:
        plan = json.load(f)
    result = {"name": args.name}
    if args.cache_file:
        import requests_cache  # Debian's python3-requests-cache (0.9)

        make = lambda: requests_cache.CachedSession(  # noqa: E731
            args.cache_file, backend="sqlite", expire_after=requests_cache.NEVER_EXPIRE)
    else:
        make = requests.Session

    before, _ = settle_count(args.sim_log, limit_s=1.0, quiet_s=0.2)
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    session = make()  # opening the SQLite file is part of a requests-cache run
    if args.batch:
        data, raw = run_batch(session, args.batch, plan, result)
    else:
        data, raw = run_sequential(session, args.base.rstrip("/"), plan, result)
    wall = time.perf_counter() - t0
    session.close()
    after, paths = settle_count(args.sim_log)
    up = paths[before:after]

    by_kind = {}
    for p in up:
        by_kind[kind_of(p)] = by_kind.get(kind_of(p), 0) + 1
    planned_items = len(plan["candles"]) + len(plan["trades"])
    result.update(
        upstream_requests=after - before if args.sim_log else None,
        upstream_by_kind=by_kind,
        wall_s=round(wall, 4),
        per_request_ms=round(1000 * wall / max(result["requests_made"], 1), 3),
        bytes_on_disk=disk_bytes(args.disk) if args.disk else None,
        items_ok=sum(1 for v in data.values() if v is not None),
        items_planned=planned_items,
        data_sha=hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]
        if len(data) == planned_items else None,
        bytes_sha=raw[:16] if raw and len(data) == planned_items else None,
        candles=sum(len(v or []) for k, v in data.items() if k.startswith("c:")),
        trades=sum(len(v or []) for k, v in data.items() if k.startswith("t:")),
        load1=round((load0 + os.getloadavg()[0]) / 2, 2),
    )
    if args.note:
        result["note"] = args.note
    line = json.dumps(result, sort_keys=False)
    print(line, flush=True)
    if args.out:
        with open(args.out, "a") as f:
            f.write(line + "\n")


# ---------------------------------------------------------------- report


def cmd_report(args):
    runs = [json.loads(l) for l in open(args.results) if l.strip()]
    meta = dict(kv.split("=", 1) for kv in args.meta or [])
    plan = json.load(open(args.plan)) if args.plan else None
    by = {r["name"]: r for r in runs}
    ref = by.get("requests-cache warm")
    direct = by.get("direct")

    def ratio(r):
        if not ref or not ref.get("per_request_ms") or r.get("failures") or r.get("wall_s") is None:
            return ""
        if r.get("requests_made") == 1 and r.get("items"):  # one /batch: whole run against whole run
            return f"{r['wall_s'] / ref['wall_s']:.2f}× (whole run)"
        return f"{r['per_request_ms'] / ref['per_request_ms']:.1f}×"

    def same(r):
        if not direct or not direct.get("data_sha") or r is direct:
            return ""
        if not r.get("data_sha"):
            return "—"
        if r["data_sha"] != direct["data_sha"]:
            return "**no**"
        if not r.get("bytes_sha"):
            return "yes (data)"
        return "yes (bytes)" if r["bytes_sha"] == direct.get("bytes_sha") else "data yes, **bytes no**"

    def fmt_bytes(n):
        if n is None:
            return ""
        return f"{n / 1048576:.1f} MiB" if n >= 1048576 else f"{n / 1024:.0f} KiB"

    out = ["# Backtest replay (issue 18 \"Measured\")", ""]
    out.append("Written by `bench/backtest/run.sh` (see docs/bench.md, \"Backtest replay\"); "
               "raw JSON lines in the run's `results.jsonl`.")
    out.append("")
    if meta:
        out.append(f"- when: {meta.get('date', '')}; kproxy {meta.get('commit', '')}; "
                   f"kproxy accepts `cache.disk.path`: {meta.get('disk_tier', '?')}, `upstream.offline`: "
                   f"{meta.get('offline', '?')} (probed with `kproxy check-config`; unknown keys are left out)")
        out.append(f"- machine: {meta.get('cpus', '?')} cores ({meta.get('cpu', '')}), shared with other "
                   f"sessions' builds and tests: load average {meta.get('load_start', '?')} at the start, "
                   f"{meta.get('load_end', '?')} at the end (column *load*: during the run). "
                   "Absolute times move with that load; the upstream counts do not.")
        out.append(f"- fake: kalshi-sim `-latency {meta.get('latency', '?')}`; kproxy "
                   f"`KPROXY_UPSTREAM_TIER=basic` (20 requests/s); client: {meta.get('python', '')}, "
                   f"requests {meta.get('requests', '')}, requests-cache {meta.get('requests_cache', '')} "
                   "(SQLite backend, `expire_after=NEVER_EXPIRE`)")
    if plan:
        day = lambda ts: time.strftime("%Y-%m-%d", time.gmtime(ts))  # noqa: E731
        w = plan["window"]
        hist = sum(i["path"].startswith("/historical/") for i in plan["candles"])
        hist_trades = sum(i["path"].startswith("/historical/") for i in plan["trades"])
        out.append(f"- plan: {len(plan['candles'])} candlestick windows (`period_interval=1440`, "
                   f"{day(w['start_ts'])} to {day(w['end_ts'])}; {hist} on "
                   "`/historical/markets/{t}/candlesticks`, the rest on `/series/{s}/markets/{t}/candlesticks`: "
                   "every market of kalshi-sim closed before the window's end, historical and settled first) "
                   f"and every trade page (`limit=1000`, `max_ts` = the window's end) of {len(plan['trades'])} "
                   f"markets ({hist_trades} on `/historical/trades`); {meta.get('elapsed', '?')} for the whole script")
    out.append("")
    out.append("| run | upstream requests | wall s | client requests | ms / request | vs requests-cache warm | "
               "failures | bytes on disk | answers | same as direct | load |")
    out.append("|---|---:|---:|---:|---:|---:|---:|---:|---|---|---:|")
    for r in runs:
        up = r.get("upstream_requests")
        kinds = r.get("upstream_by_kind") or {}
        up_s = "" if up is None else str(up)
        if up and kinds:
            up_s += " (" + ", ".join(f"{v} {k}" for k, v in sorted(kinds.items())) + ")"
        answers = ", ".join(f"{k} {v}" for k, v in sorted((r.get("answers") or {}).items()))
        fails = str(r.get("failures", ""))
        if r.get("errors"):
            fails += " (" + "; ".join(f"{k} ×{v}" for k, v in r["errors"].items()).replace("|", "\\|") + ")"
        made = str(r.get("requests_made", ""))
        if r.get("items"):
            made += f" ({r['items']} items, {r.get('pages', 0)} trade pages)"
        num = lambda k: "" if r.get(k) is None else f"{r[k]:.2f}"  # noqa: E731
        out.append(f"| {r['name']} | {up_s} | {num('wall_s')} | {made} | {num('per_request_ms')} | "
                   f"{ratio(r)} | {fails} | {fmt_bytes(r.get('bytes_on_disk'))} | {answers} | {same(r)} | "
                   f"{r.get('load1', '')} |")
    out.append("")
    out.append("- *1b* (run again at once) is answered from memory: trades pages keep their route ttl "
               "(2 s, then 2 s stale) until the history tier marks them immutable, so how many go upstream "
               "again depends on how long ago run 1 fetched them (a few seconds between runs here).")
    notes = [r for r in runs if r.get("note")]
    if notes:
        for r in notes:
            out.append(f"- *{r['name']}*: {r['note']}")
    out.append("")
    out.append("Goal (issue 18): kproxy runs 2 and 3 cost 0 upstream requests; per request within 2× of "
               "requests-cache's warm run; the /batch run faster than requests-cache's warm run as a whole.")
    out.append("")
    for line in verdicts(runs, ref):
        out.append(f"- {line}")
    text = "\n".join(out) + "\n"
    with open(args.out, "w") as f:
        f.write(text)
    sys.stdout.write(text)


def verdicts(runs, ref):
    """PASS/MISS per goal of issue 18, from the runs by their name prefix."""
    def find(prefix):
        return next((r for r in runs if r["name"].startswith(prefix)), None)

    def ok(r):
        return r is not None and r.get("wall_s") is not None and not r.get("failures")

    out = []
    for prefix in ("kproxy 2 ", "kproxy 3 "):
        r = find(prefix)
        if r is None:
            continue
        good = ok(r) and r.get("upstream_requests") == 0
        out.append(f"{'PASS' if good else 'MISS'}: *{r['name']}*: {r.get('upstream_requests')} upstream "
                   f"requests, {r.get('failures')} failures (goal: 0 and 0)")
        if ok(r) and ref and ref.get("per_request_ms"):
            x = r["per_request_ms"] / ref["per_request_ms"]
            out.append(f"{'PASS' if x <= 2 else 'MISS'}: *{r['name']}*: {r['per_request_ms']:.2f} ms per request, "
                       f"{x:.1f}× requests-cache warm's {ref['per_request_ms']:.2f} ms (goal: ≤ 2×)")
    r = find("kproxy /batch")
    if r is not None and ref and ref.get("wall_s"):
        good = ok(r) and r["wall_s"] < ref["wall_s"]
        out.append(f"{'PASS' if good else 'MISS'}: *{r['name']}*: {r.get('wall_s')} s with {r.get('failures')} "
                   f"failed items, requests-cache warm {ref['wall_s']} s (goal: faster, every item answered)")
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("plan", help="pick the markets from the fake, write the plan")
    p.add_argument("--base", required=True, help="the fake's .../trade-api/v2 URL")
    p.add_argument("--out", required=True)
    p.set_defaults(fn=cmd_plan)
    r = sub.add_parser("run", help="replay the plan once, print one JSON line")
    r.add_argument("--plan", required=True)
    r.add_argument("--name", required=True)
    r.add_argument("--base", help="the .../trade-api/v2 URL to send the GETs to")
    r.add_argument("--batch", metavar="KPROXY_URL", help="send one POST KPROXY_URL/batch instead")
    r.add_argument("--cache-file", help="go through requests-cache with this SQLite file")
    r.add_argument("--sim-log", help="kalshi-sim -v output: the upstream request count")
    r.add_argument("--disk", action="append", help="file or directory whose bytes on disk to report")
    r.add_argument("--note", help="a remark carried into the report")
    r.add_argument("--out", help="append the JSON line to this file too")
    r.set_defaults(fn=cmd_run)
    q = sub.add_parser("report", help="write the markdown table")
    q.add_argument("--results", required=True)
    q.add_argument("--plan")
    q.add_argument("--meta", action="append", metavar="KEY=VALUE")
    q.add_argument("--out", required=True)
    q.set_defaults(fn=cmd_report)
    args = ap.parse_args()
    if args.cmd == "run" and not (args.base or args.batch):
        ap.error("run: --base or --batch is required")
    args.fn(args)


if __name__ == "__main__":
    main()
