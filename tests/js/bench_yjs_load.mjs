// Load generator for benchmarks/bench_yjs.py: y-websocket clients (yjs 13.6, y-websocket 3.1)
// against a y-websocket server (our relay's /yjs endpoint or @y/websocket-server).
//
//   node bench_yjs_load.mjs '{"serverUrl": "ws://127.0.0.1:PORT/yjs", "params": {"token": ".."},
//     "rooms": 4, "writers": 2, "readers": 1, "updates": 500, "mode": "throughput"|"latency",
//     "interval": 5}'
//
// Each room is a record "jobs/bench-<n>" with `writers` + `readers` connections (own Y.Doc
// each). A writer's update = one transaction: append one character to the Y.Text "notes" of the
// root map "fields" and set fields["w<i>"] = seq. A reader has an update when it sees
// fields["w<i>"] >= seq.
// throughput: every writer sends all its updates at once (yielding every 50); time from the
// first send until every reader holds every writer's last update -> updates/s delivered.
// latency: one update at a time, round-robin over writers, every `interval` ms; per update the
// time from the writer's transaction to the first reader of its room seeing it -> p50/p99.
// Prints one JSON object.
import WebSocket from "ws";
import * as Y from "yjs";
import { WebsocketProvider } from "y-websocket";

const cfg = JSON.parse(process.argv[2]);
const now = () => performance.now();

function connect(room) {
  const doc = new Y.Doc();
  const provider = new WebsocketProvider(cfg.serverUrl, room, doc, {
    WebSocketPolyfill: WebSocket, params: cfg.params ?? {}, disableBc: true,
  });
  const synced = new Promise((resolve) => {
    if (provider.synced) resolve();
    else provider.once("sync", () => resolve());
  });
  return { doc, provider, synced, fields: doc.getMap("fields") };
}

const rooms = [];
for (let r = 0; r < cfg.rooms; r++) {
  const name = `jobs/bench-${cfg.tag ?? "x"}-${r}`;
  const writers = Array.from({ length: cfg.writers }, () => connect(name));
  const readers = Array.from({ length: cfg.readers }, () => connect(name));
  rooms.push({ name, writers, readers });
}
const all = rooms.flatMap((r) => [...r.writers, ...r.readers]);
const syncTimeout = setTimeout(() => { console.error("sync timeout"); process.exit(2); }, 30000);
await Promise.all(all.map((c) => c.synced));
clearTimeout(syncTimeout);

// The Y.Text is created once per room, before the measurement, by writer 0.
for (const room of rooms) room.writers[0].fields.set("notes", new Y.Text());
await Promise.all(rooms.flatMap((room) => [...room.writers, ...room.readers].map((c) =>
  new Promise((resolve) => {
    const check = () => { if (c.fields.get("notes") instanceof Y.Text) { c.doc.off("update", check); resolve(); } };
    c.doc.on("update", check); check();
  }))));

const write = (conn, key, seq) => {
  conn.doc.transact(() => {
    const text = conn.fields.get("notes");
    text.insert(text.length, "x");
    conn.fields.set(key, seq);
  });
};

function percentile(sorted, p) {
  if (!sorted.length) return null;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

const result = { mode: cfg.mode, rooms: cfg.rooms, writers: cfg.writers, readers: cfg.readers,
  updatesPerWriter: cfg.updates };

if (cfg.mode === "throughput") {
  const total = cfg.rooms * cfg.writers * cfg.updates;
  const done = new Promise((resolve) => {
    let pending = 0;
    for (const room of rooms) {
      for (const reader of room.readers) {
        pending++;
        const check = () => {
          for (let i = 0; i < cfg.writers; i++) {
            if ((reader.fields.get(`w${i}`) ?? 0) < cfg.updates) return;
          }
          reader.doc.off("update", check);
          if (--pending === 0) resolve();
        };
        reader.doc.on("update", check);
      }
    }
  });
  const start = now();
  for (let seq = 1; seq <= cfg.updates; seq++) {
    for (const room of rooms) room.writers.forEach((w, i) => write(w, `w${i}`, seq));
    if (seq % 50 === 0) await new Promise((r) => setImmediate(r));
  }
  const sent = now();
  const timer = setTimeout(() => { console.error("throughput timeout"); process.exit(3); }, 300000);
  await done;
  clearTimeout(timer);
  const seconds = (now() - start) / 1000;
  Object.assign(result, { updates: total, seconds, sendSeconds: (sent - start) / 1000,
    updatesPerSecond: total / seconds,
    deliveriesPerSecond: (total * cfg.readers) / seconds });
  // Check: every reader holds every writer's text.
  for (const room of rooms) {
    for (const reader of room.readers) {
      const len = reader.fields.get("notes").length;
      if (len !== cfg.writers * cfg.updates) throw new Error(`reader has ${len} chars`);
    }
  }
} else {
  const latencies = [];
  const sentAt = new Map(); // `${room}|${i}|${seq}` -> time
  for (const room of rooms) {
    const reader = room.readers[0];
    const seen = new Array(cfg.writers).fill(0);
    reader.doc.on("update", () => {
      const t = now();
      for (let i = 0; i < cfg.writers; i++) {
        const value = reader.fields.get(`w${i}`) ?? 0;
        for (let s = seen[i] + 1; s <= value; s++) {
          const key = `${room.name}|${i}|${s}`;
          latencies.push(t - sentAt.get(key));
          sentAt.delete(key);
        }
        if (value > seen[i]) seen[i] = value;
      }
    });
  }
  const expected = cfg.rooms * cfg.writers * cfg.updates;
  for (let seq = 1; seq <= cfg.updates; seq++) {
    for (const room of rooms) {
      for (let i = 0; i < cfg.writers; i++) {
        sentAt.set(`${room.name}|${i}|${seq}`, now());
        write(room.writers[i], `w${i}`, seq);
        await new Promise((r) => setTimeout(r, cfg.interval));
      }
    }
  }
  const deadline = now() + 30000;
  while (latencies.length < expected && now() < deadline) {
    await new Promise((r) => setTimeout(r, 20));
  }
  if (latencies.length < expected) throw new Error(`only ${latencies.length}/${expected} seen`);
  latencies.sort((a, b) => a - b);
  Object.assign(result, { updates: expected, p50ms: percentile(latencies, 50),
    p99ms: percentile(latencies, 99), maxms: latencies[latencies.length - 1] });
}

for (const c of all) c.provider.destroy();
process.stdout.write(JSON.stringify(result) + "\n");
setTimeout(() => process.exit(0), 50);
