// End-to-end: Kalshi's own TypeScript SDK (kalshi-typescript@3.30.0) talking
// to kproxy, with kalshi-sim as the upstream.
//
//   KPROXY_BIN=/path/kproxy SIM_BIN=/path/kalshi-sim node --test e2e/sdk/
//
// (scripts/e2e-sdk.sh builds both binaries and runs this.) The test starts
// the simulator and kproxy on free loopback ports, with a fresh RSA key pair
// whose public half the simulator uses to verify KALSHI-ACCESS-SIGNATURE
// exactly as Kalshi does, and stops both by PID when it ends. Upstream calls
// are counted from kproxy's /metrics (kproxy_upstream_requests_total).
//
// SDK notes (node_modules/kalshi-typescript, dist/base.js): an API object
// built with apiKey + privateKeyPem adds a signing interceptor to the axios
// instance it is given, by default the global CommonJS one, and that
// interceptor then signs every request made through that instance. Each
// signed client here therefore gets its own axios instance (third
// constructor argument), so that the good and the wrong key never mix; the
// unsigned clients use the global instance, as most users do.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { once } from 'node:events';

// The SDK is CommonJS and hooks the CommonJS axios: load both that way.
const require = createRequire(import.meta.url);
const axios = require('axios');
const { Configuration, MarketApi, EventsApi, PortfolioApi, OrdersApi } = require('kalshi-typescript');

const KEY_ID = '4b2c1d7e-0000-4000-8000-00000000e2e0';
const START_TIMEOUT_MS = 15_000;
const STOP_TIMEOUT_MS = 15_000;

const children = [];
let workDir;
let kproxyBase; // http://127.0.0.1:PORT
let basePath; // kproxyBase + /trade-api/v2
let goodPem;
let wrongPem;

// start runs bin with args and resolves with the first match of ready in its
// stderr (the line it logs once it listens). It rejects if the process exits
// first or nothing matches within START_TIMEOUT_MS.
function start(name, bin, args, env, ready) {
  const child = spawn(bin, args, { env, stdio: ['ignore', 'ignore', 'pipe'] });
  const entry = { name, child, log: '', exited: false };
  children.push(entry);
  child.on('exit', () => {
    entry.exited = true;
  });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      reject(new Error(`${name} did not report ready within ${START_TIMEOUT_MS} ms:\n${entry.log}`));
    }, START_TIMEOUT_MS);
    let pending = '';
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (chunk) => {
      entry.log += chunk;
      pending += chunk;
      let nl;
      while ((nl = pending.indexOf('\n')) >= 0) {
        const line = pending.slice(0, nl);
        pending = pending.slice(nl + 1);
        const m = ready(line);
        if (m) {
          clearTimeout(timer);
          resolve(m);
        }
      }
    });
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(new Error(`${name}: ${err.message}`));
    });
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`${name} exited (code ${code}, signal ${signal}) before it was ready:\n${entry.log}`));
    });
  });
}

// stop sends SIGTERM to each child by PID, waits a bounded time, then SIGKILL.
async function stopAll() {
  for (const { name, child, exited } of children.reverse()) {
    if (exited || child.exitCode !== null || child.signalCode !== null) continue;
    const gone = once(child, 'exit');
    process.kill(child.pid, 'SIGTERM');
    const timer = setTimeout(() => {
      process.stderr.write(`${name} still running ${STOP_TIMEOUT_MS} ms after SIGTERM: killing\n`);
      process.kill(child.pid, 'SIGKILL');
    }, STOP_TIMEOUT_MS);
    await gone;
    clearTimeout(timer);
  }
}

// cleanEnv is the environment without KPROXY_* settings that would change
// the proxy under test, and without the history tier: its default directory
// (the user cache directory) would carry answers from one run to the next.
function cleanEnv(extra = {}) {
  const env = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (!k.startsWith('KPROXY_')) env[k] = v;
  }
  return { ...env, KPROXY_CACHE_DISK_PATH: 'off', ...extra };
}

// upstreamCalls sums kproxy_upstream_requests_total over all labels.
async function upstreamCalls() {
  const res = await fetch(`${kproxyBase}/metrics`);
  assert.equal(res.status, 200, 'GET /metrics');
  let total = 0;
  for (const line of (await res.text()).split('\n')) {
    // Label values hold braces too (route="/trade-api/v2/markets/{ticker}").
    const m = /^kproxy_upstream_requests_total(?:\{.*\})?\s+(\S+)$/.exec(line);
    if (m) total += Number(m[1]);
  }
  return total;
}

// upstreamDelta runs fn and returns [its result, the upstream calls it caused].
async function upstreamDelta(fn) {
  const before = await upstreamCalls();
  const result = await fn();
  return [result, (await upstreamCalls()) - before];
}

// rejection awaits a promise that must reject with an HTTP error response.
async function rejection(promise) {
  try {
    const res = await promise;
    assert.fail(`expected an HTTP error, got ${res.status}`);
  } catch (err) {
    if (!err.response) throw err;
    return err.response;
  }
}

function pem(key) {
  return key.export({ type: 'pkcs8', format: 'pem' });
}

before(async () => {
  const kproxyBin = process.env.KPROXY_BIN;
  const simBin = process.env.SIM_BIN;
  assert.ok(kproxyBin && simBin, 'set KPROXY_BIN and SIM_BIN to the built binaries (scripts/e2e-sdk.sh does)');

  workDir = mkdtempSync(join(tmpdir(), 'kproxy-e2e-sdk-'));
  const good = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const wrong = generateKeyPairSync('rsa', { modulusLength: 2048 });
  goodPem = pem(good.privateKey);
  wrongPem = pem(wrong.privateKey);
  const pubFile = join(workDir, 'kalshi-public.pem');
  writeFileSync(pubFile, good.publicKey.export({ type: 'spki', format: 'pem' }));

  // Routes used here get a long TTL so that the second round is a cache hit
  // however slow the machine; everything else keeps its default.
  const cfgFile = join(workDir, 'kproxy.yaml');
  writeFileSync(
    cfgFile,
    [
      'log: {level: info, format: json, access: false}',
      'cache:',
      '  routes:',
      '    - {pattern: /trade-api/v2/markets, ttl: 10m}',
      '    - {pattern: "/trade-api/v2/markets/{ticker}", ttl: 10m}',
      '    - {pattern: "/trade-api/v2/events/{event_ticker}", ttl: 10m}',
      '    - {pattern: "/trade-api/v2/series/{series_ticker}", ttl: 10m}',
      '',
    ].join('\n'),
  );

  const simURL = await start(
    'kalshi-sim',
    simBin,
    ['-listen', '127.0.0.1:0', '-public-key', pubFile],
    cleanEnv(),
    (line) => /kalshi-sim listening on (http:\/\/127\.0\.0\.1:\d+)\/trade-api\/v2/.exec(line)?.[1],
  );
  const addr = await start(
    'kproxy',
    kproxyBin,
    ['-config', cfgFile, '-listen', '127.0.0.1:0', '-upstream', simURL],
    cleanEnv(),
    (line) => {
      try {
        const rec = JSON.parse(line);
        return rec.msg === 'kproxy listening' ? rec.addr : undefined;
      } catch {
        return undefined;
      }
    },
  );
  kproxyBase = `http://${addr}`;
  basePath = `${kproxyBase}/trade-api/v2`;
});

after(async () => {
  await stopAll();
  if (workDir) rmSync(workDir, { recursive: true, force: true });
});

// publicRound makes the typed public calls and returns their responses.
async function publicRound() {
  const config = new Configuration({ basePath });
  const markets = new MarketApi(config);
  const events = new EventsApi(config);
  const pages = [];
  let cursor;
  for (let i = 0; i < 5; i++) {
    const page = await markets.getMarkets(200, cursor, undefined, 'KXBIGSERIES');
    pages.push(page);
    cursor = page.data.cursor;
    if (!cursor) break;
  }
  const market = await markets.getMarket('KXEARNINGSMENTIONMETA-26JUN30-VR');
  const event = await events.getEvent('KXEARNINGSMENTIONNVDA-26JUN30', true);
  const series = await markets.getSeries('KXFEDDECISION');
  return { pages, market, event, series, all: [...pages, market, event, series] };
}

let first; // publicRound results of the first round

test('public market data through kproxy: typed SDK results', async () => {
  const [round, calls] = await upstreamDelta(publicRound);
  first = round;

  // getMarkets with a cursor loop: 450 markets in pages of 200, 200, 50.
  assert.deepEqual(
    round.pages.map((p) => p.data.markets.length),
    [200, 200, 50],
  );
  const tickers = round.pages.flatMap((p) => p.data.markets.map((m) => m.ticker));
  assert.equal(new Set(tickers).size, 450, 'distinct tickers over all pages');
  assert.equal(tickers[0], 'KXBIGSERIES-26JUN30-M001');
  assert.equal(tickers[449], 'KXBIGSERIES-26JUN30-M450');
  assert.ok(round.pages[0].data.cursor, 'first page has a cursor');
  assert.equal(round.pages[2].data.cursor, '', 'last page has an empty cursor');
  for (const m of round.pages[0].data.markets) {
    assert.equal(m.event_ticker, 'KXBIGSERIES-26JUN30');
    assert.match(m.yes_bid_dollars, /^\d+\.\d+$/, 'prices are *_dollars strings');
  }

  // getMarket
  const m = round.market.data.market;
  assert.equal(m.ticker, 'KXEARNINGSMENTIONMETA-26JUN30-VR');
  assert.equal(m.event_ticker, 'KXEARNINGSMENTIONMETA-26JUN30');

  // getEvent with nested markets
  const ev = round.event.data.event;
  assert.equal(ev.event_ticker, 'KXEARNINGSMENTIONNVDA-26JUN30');
  assert.equal(ev.series_ticker, 'KXEARNINGSMENTIONNVDA');
  assert.equal(ev.markets.length, 12, 'nested markets');
  for (const nm of ev.markets) assert.equal(nm.event_ticker, ev.event_ticker);

  // getSeries
  assert.equal(round.series.data.series.ticker, 'KXFEDDECISION');

  // First round: every answer fetched upstream, exactly once each.
  for (const res of round.all) {
    assert.equal(res.status, 200);
    assert.equal(res.headers['x-cache'], 'MISS', `${res.config.url}: X-Cache`);
  }
  assert.equal(calls, round.all.length, 'upstream calls in the first round (one per distinct request)');
});

test('second round is served from the cache: X-Cache HIT, no upstream call', async () => {
  assert.ok(first, 'first round ran');
  const [round, calls] = await upstreamDelta(publicRound);
  assert.equal(calls, 0, 'upstream calls in the second round');
  assert.equal(round.all.length, first.all.length);
  round.all.forEach((res, i) => {
    assert.equal(res.status, 200);
    assert.equal(res.headers['x-cache'], 'HIT', `${res.config.url}: X-Cache`);
    assert.match(res.headers['cache-status'] ?? '', /^kproxy; hit/, `${res.config.url}: Cache-Status`);
    assert.deepEqual(res.data, first.all[i].data, `${res.config.url}: same body as the first round`);
  });
});

test('signed portfolio call: the simulator verifies the signature, kproxy never caches it', async () => {
  const config = new Configuration({ basePath, apiKey: KEY_ID, privateKeyPem: goodPem });
  const portfolio = new PortfolioApi(config, undefined, axios.create());

  const [b1, calls1] = await upstreamDelta(() => portfolio.getBalance());
  assert.equal(b1.status, 200);
  assert.equal(typeof b1.data.balance, 'number');
  assert.equal(typeof b1.data.portfolio_value, 'number');
  assert.equal(b1.headers['x-cache'], 'BYPASS');
  assert.equal(calls1, 1, 'upstream calls for the first getBalance');

  const [b2, calls2] = await upstreamDelta(() => portfolio.getBalance());
  assert.equal(b2.status, 200);
  assert.equal(b2.headers['x-cache'], 'BYPASS');
  assert.equal(calls2, 1, 'a second getBalance goes upstream again');
  assert.deepEqual(b2.data, b1.data);
});

test('a wrong key gets the upstream 401 passed through', async () => {
  const config = new Configuration({ basePath, apiKey: KEY_ID, privateKeyPem: wrongPem });
  const portfolio = new PortfolioApi(config, undefined, axios.create());
  const [res, calls] = await upstreamDelta(() => rejection(portfolio.getBalance()));
  assert.equal(res.status, 401);
  assert.equal(res.headers['x-cache'], 'BYPASS');
  assert.equal(res.data?.error?.code, 'invalid_signature', `upstream body passed through: ${JSON.stringify(res.data)}`);
  assert.equal(calls, 1, 'upstream calls');

  // No credentials at all: the simulator's 401, passed through.
  const anon = new PortfolioApi(new Configuration({ basePath }));
  const res2 = await rejection(anon.getBalance());
  assert.equal(res2.status, 401);
  assert.equal(res2.data?.error?.code, 'unauthorized');
});

test('a 401 on a public route is not stored: the next caller gets the data', async () => {
  const wrong = new MarketApi(
    new Configuration({ basePath, apiKey: KEY_ID, privateKeyPem: wrongPem }),
    undefined,
    axios.create(),
  );
  const res = await rejection(wrong.getSeries('KXEARNINGSMENTIONTSLA'));
  assert.equal(res.status, 401);

  const [ok, calls] = await upstreamDelta(() => new MarketApi(new Configuration({ basePath })).getSeries('KXEARNINGSMENTIONTSLA'));
  assert.equal(ok.status, 200);
  assert.equal(ok.data.series.ticker, 'KXEARNINGSMENTIONTSLA');
  assert.equal(ok.headers['x-cache'], 'MISS');
  assert.equal(calls, 1);
});

test('signed public calls share the cache with unsigned ones', async () => {
  const signed = new MarketApi(
    new Configuration({ basePath, apiKey: KEY_ID, privateKeyPem: goodPem }),
    undefined,
    axios.create(),
  );
  const [res, calls] = await upstreamDelta(() => signed.getMarket('KXEARNINGSMENTIONMETA-26JUN30-VR'));
  assert.equal(res.status, 200);
  assert.equal(res.headers['x-cache'], 'HIT');
  assert.equal(calls, 0);
  assert.deepEqual(res.data, first.market.data);
});

test('an order (POST) goes upstream exactly once and is never cached', async () => {
  const orders = new OrdersApi(
    new Configuration({ basePath, apiKey: KEY_ID, privateKeyPem: goodPem }),
    undefined,
    axios.create(),
  );
  const request = {
    ticker: 'KXEARNINGSMENTIONMETA-26JUN30-VR',
    client_order_id: 'e2e-sdk-1',
    side: 'bid',
    count: '1.00',
    price: '0.4200',
    time_in_force: 'good_till_canceled',
    self_trade_prevention_type: 'taker_at_cross',
  };
  const [res, calls] = await upstreamDelta(() => orders.createOrderV2(request));
  assert.equal(res.status, 201);
  assert.equal(res.headers['x-cache'], 'BYPASS');
  assert.equal(res.data.order.client_order_id, 'e2e-sdk-1');
  assert.equal(res.data.order.ticker, request.ticker);
  assert.equal(calls, 1, 'upstream calls for one order');
});
