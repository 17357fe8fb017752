// The benchmarks' load generator: drives paymux (or the baseline) over keep-alive HTTP/1.1 and prints one JSON
// object of counts and latencies.
//
// It is Node.js with no dependencies, not Python, on purpose: it shares a 2-core machine with the server it
// measures, so it must spend as little CPU per request as possible (Node's HTTP client costs a fraction of
// httpx's), and it signs every request with HMAC like a merchant's server would.
//
//   node bench/loadgen.mjs '<json config>'
//
// config: {base, scenario, mode: "closed"|"open", connections, seconds, rate (open mode: requests/s),
//          client_id, secret, store_id, ids (retrieve), receiver_port (qr), sandbox (qr)}
import crypto from "node:crypto";
import http from "node:http";

const config = JSON.parse(process.argv[2]);
const base = new URL(config.base);
// FIFO: every open socket is reused in turn, so none sits idle until the server's keep-alive timeout closes it
// while a request is being sent on it (a reset that would count as an error of the server's).
const agent = new http.Agent({ keepAlive: true, maxSockets: config.connections, scheduling: "fifo" });
let sequence = 0;
const run = `${process.pid}-${Date.now().toString(36)}`;

function request(method, path, body, headers = {}, target = base) {
  return new Promise((resolve) => {
    const payload = body === undefined ? undefined : Buffer.from(body);
    const req = http.request(
      {
        host: target.hostname,
        port: target.port,
        method,
        path,
        agent,
        headers: payload ? { "content-type": "application/json", "content-length": payload.length, ...headers } : headers,
      },
      (res) => {
        const chunks = [];
        res.on("data", (chunk) => chunks.push(chunk));
        res.on("end", () => resolve({ status: res.statusCode, body: Buffer.concat(chunks).toString() }));
      },
    );
    req.on("error", (error) => resolve({ status: 0, body: String(error) }));
    if (payload) req.write(payload);
    req.end();
  });
}

function signed(method, path, body = "") {
  const timestamp = Math.floor(Date.now() / 1000);
  const signature = crypto
    .createHmac("sha256", config.secret)
    .update(`${method}:${path}:${timestamp}:${body}`)
    .digest("base64");
  return { authorization: `HMAC-SHA256 ${config.client_id}:${timestamp}:${signature}` };
}

function intentBody(extra = {}) {
  return JSON.stringify({
    merchant_ref_id: `B-${run}-${++sequence}`,
    amount: 1000,
    currency: "JPY",
    store_id: config.store_id,
    payment_method_type: "credit_card",
    processing_mode: "pgw_processed",
    ...extra,
  });
}

async function createIntent(extra) {
  const body = intentBody(extra);
  const headers = { ...signed("POST", "/v1/payment_intents", body), "idempotency-key": `idem-${run}-${sequence}` };
  return request("POST", "/v1/payment_intents", body, headers);
}

// Merchant webhooks of the QR scenario arrive here; each completes the payment it names.
const waiting = new Map();
function startReceiver(port) {
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on("data", (chunk) => chunks.push(chunk));
    req.on("end", () => {
      res.writeHead(200).end();
      try {
        const event = JSON.parse(Buffer.concat(chunks).toString());
        const id = event?.data?.id;
        if (event.type === "payment_intent.succeeded" && waiting.has(id)) {
          waiting.get(id)();
          waiting.delete(id);
        }
      } catch {
        // not an event of ours
      }
    });
  });
  server.keepAliveTimeout = 60_000;
  return new Promise((resolve) => server.listen(port, "127.0.0.1", () => resolve(server)));
}

// One operation of a scenario: resolves to an HTTP status (2xx counts as success) or 0 on a failed step.
const scenarios = {
  baseline: async () => (await request("POST", "/rows", JSON.stringify({ value: `${run}-${++sequence}` }))).status,
  create: async () => (await createIntent()).status,
  retrieve: async () => {
    const id = config.ids[Math.floor(Math.random() * config.ids.length)];
    const path = `/v1/payment_intents/${id}`;
    return (await request("GET", path, undefined, signed("GET", path))).status;
  },
  list: async () => {
    const path = "/v1/payment_intents?limit=10";
    return (await request("GET", path, undefined, signed("GET", path))).status;
  },
  // The full QR lifecycle: create, confirm (paymux asks PayPay's sandbox for a QR code), the customer pays at
  // the sandbox, the sandbox's webhook reaches paymux, paymux checks the payment, posts it to the ledger and
  // delivers payment_intent.succeeded to the merchant's endpoint (this process). Done when that arrives.
  qr: async () => {
    const created = await createIntent({ payment_method_type: "qr_mpm", provider_name: "paypay" });
    if (created.status !== 201) return created.status;
    const intent = JSON.parse(created.body);
    const delivered = new Promise((resolve) => waiting.set(intent.id, resolve));
    const path = `/v1/payment_intents/${intent.id}/confirm`;
    const body = JSON.stringify({});
    const confirmed = await request("POST", path, body, { ...signed("POST", path, body), "idempotency-key": `c-${intent.id}` });
    if (confirmed.status !== 200) {
      waiting.delete(intent.id);
      return confirmed.status;
    }
    const sandbox = new URL(config.sandbox);
    const paid = await request(
      "POST",
      `${sandbox.pathname.replace(/\/$/, "")}/_sandbox/payments/${intent.id}`,
      JSON.stringify({ outcome: "COMPLETED" }),
      {},
      sandbox,
    );
    if (paid.status >= 300) {
      waiting.delete(intent.id);
      return paid.status;
    }
    const timeout = new Promise((resolve) => setTimeout(() => resolve("timeout"), 30_000));
    return (await Promise.race([delivered, timeout])) === "timeout" ? 0 : 200;
  },
};

function percentile(sorted, p) {
  if (sorted.length === 0) return null;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

async function main() {
  const operation = scenarios[config.scenario];
  const receiver = config.scenario === "qr" ? await startReceiver(config.receiver_port) : null;
  const latencies = [];
  const statuses = {};
  let started = 0;
  const begin = performance.now();
  const end = begin + config.seconds * 1000;

  async function once() {
    const t0 = performance.now();
    const status = await operation();
    const elapsed = performance.now() - t0;
    statuses[status] = (statuses[status] || 0) + 1;
    if (status >= 200 && status < 300) latencies.push(elapsed);
  }

  if (config.mode === "open") {
    // A fixed arrival rate, whatever the answers' speed: the latency a caller sees at that load.
    const interval = 1000 / config.rate;
    const inflight = new Set();
    let next = begin;
    while (performance.now() < end) {
      const now = performance.now();
      if (now >= next) {
        next += interval;
        started += 1;
        const pending = once().finally(() => inflight.delete(pending));
        inflight.add(pending);
      } else {
        await new Promise((resolve) => setTimeout(resolve, Math.min(next - now, 5)));
      }
    }
    await Promise.all(inflight);
  } else {
    // Closed loop: each connection sends its next request when the last is answered (saturation).
    await Promise.all(
      Array.from({ length: config.connections }, async () => {
        while (performance.now() < end) {
          started += 1;
          await once();
        }
      }),
    );
  }
  const seconds = (performance.now() - begin) / 1000;
  latencies.sort((a, b) => a - b);
  const ok = latencies.length;
  const round = (value) => (value === null ? null : Math.round(value * 100) / 100);
  process.stdout.write(
    JSON.stringify({
      scenario: config.scenario,
      mode: config.mode,
      connections: config.connections,
      rate: config.rate ?? null,
      seconds: round(seconds),
      requests: started,
      ok,
      errors: Object.fromEntries(Object.entries(statuses).filter(([status]) => status < 200 || status >= 300)),
      throughput: round(ok / seconds),
      latency_ms: {
        p50: round(percentile(latencies, 50)),
        p90: round(percentile(latencies, 90)),
        p99: round(percentile(latencies, 99)),
        max: round(latencies.at(-1) ?? null),
      },
    }) + "\n",
  );
  agent.destroy();
  if (receiver) receiver.close();
}

await main();
