"use strict";
// kproxy status page: polls status.json every 2 s and draws it. Plain DOM
// and SVG; no library, no request anywhere but this kproxy.
(function () {
  var SVGNS = "http://www.w3.org/2000/svg";
  var PERIOD = 2000;
  var updates = 0;
  var last = null;

  function get(obj, path) {
    var parts = path.split(".");
    for (var i = 0; i < parts.length; i++) {
      if (obj == null) return undefined;
      obj = obj[parts[i]];
    }
    return obj;
  }

  function pct(v) { return v == null ? "–" : (v * 100).toFixed(Math.abs(v) >= 0.9995 || v === 0 ? 0 : 1) + "%"; }
  function num(v) {
    if (v == null) return "–";
    if (Math.abs(v) >= 1e6) return (v / 1e6).toFixed(2) + "M";
    return Math.round(v).toLocaleString("en-US");
  }
  function rate(v) {
    if (v == null) return "–";
    if (v === 0) return "0";
    if (v < 10) return v.toFixed(2);
    if (v < 100) return v.toFixed(1);
    return Math.round(v).toLocaleString("en-US");
  }
  function bytes(v) {
    if (v == null) return "–";
    var u = ["B", "KiB", "MiB", "GiB", "TiB"], i = 0;
    while (v >= 1024 && i < u.length - 1) { v /= 1024; i++; }
    return (i === 0 ? v.toFixed(0) : v.toFixed(1)) + " " + u[i];
  }
  function ms(v) {
    if (v == null) return "–";
    if (v < 1) return v.toFixed(2) + " ms";
    if (v < 1000) return v.toFixed(v < 10 ? 1 : 0) + " ms";
    return (v / 1000).toFixed(2) + " s";
  }
  function duration(s) {
    if (s == null) return "–";
    var d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600), m = Math.floor(s % 3600 / 60), sec = s % 60;
    function two(n) { return (n < 10 ? "0" : "") + n; }
    if (d > 0) return d + "d " + h + "h";
    if (h > 0) return h + "h " + two(m) + "m";
    if (m > 0) return m + "m " + two(sec) + "s";
    return sec + "s";
  }
  function clock(t) {
    var d = new Date(t);
    function two(n) { return (n < 10 ? "0" : "") + n; }
    return two(d.getHours()) + ":" + two(d.getMinutes()) + ":" + two(d.getSeconds());
  }
  function part(v) {
    if (v == null || v === "off") return "off";
    if (typeof v !== "object") return String(v);
    var out = [];
    Object.keys(v).sort().forEach(function (k) {
      var x = v[k];
      if (x !== null && typeof x === "object") x = JSON.stringify(x);
      out.push(k + ": " + x);
    });
    return out.join(" · ") || "on";
  }

  // How each field is shown; the rest are plain counts.
  var formats = {
    "uptime_seconds": duration,
    "upstream_calls_avoided.share": pct, "upstream_calls_avoided.last_minute.share": pct,
    "hit_ratio.last_minute": pct, "hit_ratio.since_start": pct,
    "stale_ratio.last_minute": pct, "stale_ratio.since_start": pct,
    "rates.window_seconds": function (v) { return v == null ? "–" : Math.round(v); },
    "rates.total": rate, "rates.hit": rate, "rates.stale": rate, "rates.miss": rate,
    "rates.upstream": rate, "rates.passed_through": rate,
    "upstream_budget.read_share": pct, "upstream_budget.write_share": pct,
    "upstream_budget.reads_per_second": rate, "upstream_budget.writes_per_second": rate,
    "upstream_budget.read_rate": function (v) { return v ? rate(v) : "unlimited"; },
    "upstream_budget.write_rate": function (v) { return v ? rate(v) : "unlimited"; },
    "cache.share": pct, "cache.bytes": bytes,
    "disk.bytes": bytes, "disk.max_bytes": bytes,
    "disk.state": function (v) { return v == null ? "off" : String(v); },
    "disk.reason": function (v) { return v == null ? "" : String(v); },
    "cache.max_bytes": function (v) { return v ? bytes(v) : "unbounded"; },
    "version": String, "upstream": String, "breaker.state": String, "upstream_budget.tier": String,
    "redis": part, "live": part
  };

  function fields(r) {
    var els = document.querySelectorAll("[data-f]");
    for (var i = 0; i < els.length; i++) {
      var el = els[i], path = el.getAttribute("data-f"), v = get(r, path);
      var f = formats[path] || num;
      el.textContent = f(v);
      el.setAttribute("data-value", v == null ? "null" : (typeof v === "object" ? JSON.stringify(v) : String(v)));
    }
  }

  function gauge(id, share) {
    var el = document.getElementById(id);
    var v = share == null ? 0 : Math.min(share, 1);
    el.style.width = (v * 100).toFixed(1) + "%";
    el.className = "fill" + (v >= 0.9 ? " bad" : v >= 0.7 ? " warn" : "");
  }

  // diskTile draws the disk tier's bytes against its bound ("off": none).
  function diskTile(d) {
    var share = d && typeof d === "object" && d.max_bytes > 0 ? d.bytes / d.max_bytes : null;
    gauge("g-disk", share);
    document.getElementById("disk-share").textContent = pct(share);
  }

  function outcomeBar(rates) {
    var bar = document.getElementById("outcome-bar");
    while (bar.firstChild) bar.removeChild(bar.firstChild);
    var total = rates.hit + rates.stale + rates.miss;
    if (!(total > 0)) return;
    ["hit", "stale", "miss"].forEach(function (k) {
      if (!(rates[k] > 0)) return;
      var d = document.createElement("div");
      d.className = "k-" + k;
      d.style.width = (rates[k] / total * 100).toFixed(2) + "%";
      bar.appendChild(d);
    });
  }

  function transitions(list) {
    var ol = document.getElementById("transitions");
    while (ol.firstChild) ol.removeChild(ol.firstChild);
    if (!list || list.length === 0) {
      var li = document.createElement("li");
      li.className = "sub";
      li.textContent = "no transitions since start";
      ol.appendChild(li);
      return;
    }
    list.slice().reverse().forEach(function (t) {
      var li = document.createElement("li");
      li.textContent = clock(t.at) + "  " + t.from + " → " + t.to;
      ol.appendChild(li);
    });
  }

  // table fills tbody id with one row per item: cells(item) gives [text,
  // raw value] pairs; key(item) names the row (data-key).
  function table(id, list, width, key, cells) {
    var tb = document.getElementById(id);
    while (tb.firstChild) tb.removeChild(tb.firstChild);
    if (!list || list.length === 0) {
      var tr0 = document.createElement("tr"), td0 = document.createElement("td");
      td0.colSpan = width; td0.className = "sub"; td0.textContent = "no requests yet";
      tr0.appendChild(td0); tb.appendChild(tr0);
      return;
    }
    list.forEach(function (r) {
      var tr = document.createElement("tr");
      tr.setAttribute("data-key", key(r));
      cells(r).forEach(function (c, i) {
        var td = document.createElement("td");
        td.textContent = c[0];
        td.setAttribute("data-value", c[1] == null ? "null" : String(c[1]));
        if (i === 0) td.title = key(r);
        tr.appendChild(td);
      });
      tb.appendChild(tr);
    });
  }

  function routes(list) {
    table("routes", list, 11, function (r) { return r.route; }, function (r) {
      var name = r.route.indexOf("/trade-api/v2") === 0 ? r.route.slice("/trade-api/v2".length) || "/" : r.route;
      var avoided = num(r.avoided) + (r.avoided_share == null ? "" : " (" + pct(r.avoided_share) + ")");
      return [[name, r.route], [r.ttl_seconds == null ? "–" : r.ttl_seconds + " s", r.ttl_seconds],
        [num(r.requests), r.requests], [num(r.hit), r.hit], [num(r.stale), r.stale], [num(r.miss), r.miss],
        [num(r.upstream), r.upstream], [avoided, r.avoided], [pct(r.hit_ratio), r.hit_ratio],
        [ms(r.p50_ms), r.p50_ms], [ms(r.p99_ms), r.p99_ms]];
    });
  }

  function clients(list) {
    table("clients", list, 3, function (c) { return c.name; }, function (c) {
      return [[c.name, c.name], [num(c.requests), c.requests], [num(c.upstream), c.upstream]];
    });
  }

  function advice(list) {
    var box = document.getElementById("advice");
    while (box.firstChild) box.removeChild(box.firstChild);
    (list || []).forEach(function (a) {
      var p = document.createElement("p");
      p.textContent = a;
      box.appendChild(p);
    });
    box.hidden = !list || list.length === 0;
  }

  function el(name, attrs, parent) {
    var e = document.createElementNS(SVGNS, name);
    for (var k in attrs) e.setAttribute(k, attrs[k]);
    if (parent) parent.appendChild(e);
    return e;
  }

  // chart draws lines over time into an SVG sized by CSS. lines: [{cls,
  // values, dash}]; opts.max fixes the top of the y axis; opts.fmt labels it.
  function chart(id, t, lines, opts) {
    var svg = document.getElementById(id);
    var W = Math.max(svg.clientWidth || 300, 200), H = Math.max(svg.clientHeight || 150, 100);
    var L = 44, R = 8, T = 8, B = 20;
    svg.setAttribute("viewBox", "0 0 " + W + " " + H);
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    var top = opts.max;
    if (top == null) {
      top = 0;
      lines.forEach(function (l) { l.values.forEach(function (v) { if (v != null && v > top) top = v; }); });
      top = top > 0 ? top * 1.15 : 1;
    }
    var t1 = t.length ? t[t.length - 1] : Date.now();
    var t0 = Math.max(t.length ? t[0] : t1 - 60000, t1 - 15 * 60000);
    if (t1 - t0 < 10000) t0 = t1 - 10000;
    function x(v) { return L + (v - t0) / (t1 - t0) * (W - L - R); }
    function y(v) { return T + (1 - Math.min(v, top) / top) * (H - T - B); }
    for (var g = 0; g <= 2; g++) {
      var gv = top * g / 2;
      el("line", { "class": "grid", x1: L, x2: W - R, y1: y(gv), y2: y(gv) }, svg);
      el("text", { x: L - 6, y: y(gv) + 4, "text-anchor": "end" }, svg).textContent = opts.fmt(gv);
    }
    el("text", { x: L, y: H - 4 }, svg).textContent = clock(t0);
    el("text", { x: W - R, y: H - 4, "text-anchor": "end" }, svg).textContent = clock(t1);
    lines.forEach(function (l) {
      var d = "", pen = false;
      for (var i = 0; i < t.length; i++) {
        var v = l.values[i];
        if (v == null) { pen = false; continue; }
        d += (pen ? "L" : "M") + x(t[i]).toFixed(1) + " " + y(v).toFixed(1);
        pen = true;
      }
      if (l.flat != null) d = "M" + L + " " + y(l.flat).toFixed(1) + "L" + (W - R) + " " + y(l.flat).toFixed(1);
      if (d) el("path", { "class": "line s-" + l.cls + (l.dash ? " dash" : ""), d: d }, svg);
    });
  }

  function charts(r) {
    var s = r.series, t = s.t;
    chart("c-outcomes", t, [
      { cls: "hit", values: s.hit }, { cls: "stale", values: s.stale },
      { cls: "miss", values: s.miss }, { cls: "bypass", values: s.passed_through }
    ], { fmt: rate });
    chart("c-ratio", t, [{ cls: "ratio", values: s.hit_ratio }], { max: 1, fmt: pct });
    var up = [{ cls: "read", values: s.upstream_reads }, { cls: "write", values: s.upstream_writes }];
    var budget = r.upstream_budget.read_rate;
    var top = null;
    if (budget > 0) {
      up.push({ cls: "budget", values: [], flat: budget, dash: true });
      top = budget * 1.15;
      s.upstream_reads.concat(s.upstream_writes).forEach(function (v) { if (v * 1.15 > top) top = v * 1.15; });
    }
    chart("c-upstream", t, up, { max: top, fmt: rate });
    chart("c-429", t, [{ cls: "from", values: s.from_kalshi_429 }, { cls: "given", values: s.by_kproxy_429, dash: true }], { fmt: rate });
  }

  function render(r) {
    last = r;
    fields(r);
    var saved = r.upstream_calls_avoided.share;
    document.querySelector(".hero .big").className = "big" + (saved != null && saved < 0 ? " negative" : "");
    var badge = document.getElementById("breaker-badge");
    badge.className = "badge " + r.breaker.state;
    gauge("g-read", r.upstream_budget.read_share);
    gauge("g-write", r.upstream_budget.write_share);
    gauge("g-cache", r.cache.share);
    diskTile(r.disk);
    outcomeBar(r.rates);
    transitions(r.breaker.transitions);
    routes(r.routes);
    clients(r.clients);
    advice(r.advice);
    charts(r);
    updates++;
    document.body.setAttribute("data-updates", String(updates));
    document.body.setAttribute("data-now", r.now);
    document.getElementById("updated").textContent = "updated " + clock(r.now);
  }

  function refresh() {
    fetch("status.json", { cache: "no-store", credentials: "omit" })
      .then(function (resp) {
        if (!resp.ok) throw new Error("status.json: HTTP " + resp.status);
        return resp.json();
      })
      .then(render)
      .catch(function (err) {
        document.getElementById("updated").textContent = "disconnected (" + err.message + ")";
      })
      .then(function () { setTimeout(refresh, PERIOD); });
  }

  window.addEventListener("resize", function () { if (last) charts(last); });
  refresh();
})();
