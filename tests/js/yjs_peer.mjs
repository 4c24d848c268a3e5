// A Yjs peer driven by the Python tests over stdin/stdout (one JSON object per line).
//
//   node yjs_peer.mjs '{"provider": "websocket"|"hocuspocus", "url": "ws://127.0.0.1:PORT",
//                       "token": "...", "docs": ["jobs/j1", ...], "connect": true,
//                       "tokens": {"jobs/j1": "..."}, "replica": "js-ana"}'
//
// "tokens" (optional) gives some documents a token of their own; the others use "token".
// "replica" (optional) is the replica id of the peer's hybrid logical clock.
// Hocuspocus providers ask for their token each time they send it (a function), so "setToken"
// followed by "sendToken" is a token refresh on the open socket.
//
// y-websocket: one WebsocketProvider per doc at URL/yjs/<doc>?token=...;
// hocuspocus: one HocuspocusProviderWebsocket at URL/hocuspocus, one provider per doc.
// Records are read and written with crdt_sync/js/record.mjs (layout v2, docs/records.md):
// "read" and "waitFields" compare readRecord(), the edits write through setField/fieldText/
// fieldArray, "conflicts" is recordConflicts(), "delete" is deleteRecord() and "waitDeleted"
// waits for recordDeletion() (docs/records.md, "Deleting a record").
//
// Commands (stdin): {"id": n, "op": ..., ...} (read, conflicts, text, append, push, set, setIn,
// waitFields, waitConflicts, waitSynced, ... below); each gets one reply {"id": n, "ok": true, ...}
// or {"id": n, "ok": false, "error": "..."}. Events are lines {"event": name, "doc": ..., ...}:
// status, synced, denied (permissionDenied / authenticationFailed), closed, unsynced.
import * as readline from "node:readline";
import WebSocket from "ws";
import * as Y from "yjs";
import { WebsocketProvider } from "y-websocket";
import { HocuspocusProvider, HocuspocusProviderWebsocket } from "@hocuspocus/provider";
import {
  HybridClock,
  deleteRecord,
  fieldArray,
  fieldText,
  readRecord,
  recordConflicts,
  recordDeletion,
  setField,
} from "../../crdt_sync/js/record.mjs";

const config = JSON.parse(process.argv[2]);
const emit = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
const docs = new Map(); // name -> {doc, provider}
const tokens = { ...(config.tokens ?? {}) };
const tokenOf = (name) => tokens[name] ?? config.token;
let socket = null;
const clock = new HybridClock(config.replica ?? `js-${process.pid}`);

const fields = (name) => readRecord(docs.get(name).doc);

function open(name) {
  const doc = new Y.Doc();
  let provider;
  if (config.provider === "websocket") {
    provider = new WebsocketProvider(`${config.url}/yjs`, name, doc, {
      WebSocketPolyfill: WebSocket,
      params: { token: tokenOf(name) },
      connect: config.connect !== false,
      disableBc: true,
    });
    provider.on("status", ({ status }) => emit({ event: "status", doc: name, status }));
    provider.on("sync", (synced) => emit({ event: "synced", doc: name, synced }));
    provider.on("connection-close", (ev) =>
      emit({ event: "closed", doc: name, code: ev?.code ?? null, reason: ev?.reason ?? "" }));
    // y-websocket logs permissionDenied with console.warn; capture it as an event.
  } else {
    if (socket === null) {
      socket = new HocuspocusProviderWebsocket({
        url: `${config.url}/hocuspocus`,
        WebSocketPolyfill: WebSocket,
        autoConnect: config.connect !== false,
      });
      socket.on("status", ({ status }) => emit({ event: "status", status }));
      socket.on("close", ({ event }) =>
        emit({ event: "closed", code: event?.code ?? null, reason: event?.reason ?? "" }));
    }
    provider = new HocuspocusProvider({
      websocketProvider: socket,
      name,
      document: doc,
      token: async () => tokenOf(name),
      onSynced: ({ state }) => emit({ event: "synced", doc: name, synced: state }),
      onAuthenticationFailed: ({ reason }) => emit({ event: "denied", doc: name, reason }),
      onAuthenticated: ({ scope }) => emit({ event: "authenticated", doc: name, scope }),
      onUnsyncedChanges: ({ number }) => emit({ event: "unsynced", doc: name, number }),
    });
    provider.attach();
  }
  docs.set(name, { doc, provider });
}

const origWarn = console.warn;
console.warn = (...args) => {
  const text = args.join(" ");
  const m = /^Permission denied to access (\S+)\.\n([\s\S]*)$/.exec(text);
  if (m) emit({ event: "denied", url: m[1], reason: m[2] });
  else origWarn(...args);
};

for (const name of config.docs) open(name);

const canonical = (value) => JSON.stringify(value, (_k, v) =>
  v !== null && typeof v === "object" && !Array.isArray(v)
    ? Object.fromEntries(Object.entries(v).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)))
    : v);

function subset(actual, expected) {
  return Object.entries(expected).every(
    ([k, v]) => canonical(actual[k]) === canonical(v));
}

function waitFor(name, predicate, timeoutMs) {
  const { doc } = docs.get(name);
  return new Promise((resolve, reject) => {
    const check = () => {
      if (predicate()) {
        doc.off("update", check);
        clearTimeout(timer);
        resolve();
      }
    };
    const timer = setTimeout(() => {
      doc.off("update", check);
      reject(new Error(`timeout; fields are ${JSON.stringify(fields(name))}`));
    }, timeoutMs);
    doc.on("update", check);
    check();
  });
}

const ops = {
  read: ({ doc }) => ({ fields: fields(doc) }),
  conflicts: ({ doc }) => ({ conflicts: recordConflicts(docs.get(doc).doc) }),
  text: ({ doc, field, index, insert, delete: del = 0 }) => {
    const ydoc = docs.get(doc).doc;
    ydoc.transact(() => {
      const text = fieldText(ydoc, clock, field); // index and delete in UTF-16 units (Yjs)
      if (del) text.delete(index, del);
      if (insert) text.insert(index ?? text.length, insert);
    });
    return {};
  },
  append: ({ doc, field, insert }) => {
    const text = fieldText(docs.get(doc).doc, clock, field);
    text.insert(text.length, insert);
    return {};
  },
  push: ({ doc, field, items }) => {
    fieldArray(docs.get(doc).doc, clock, field).push(items);
    return {};
  },
  set: ({ doc, key, value }) => {
    setField(docs.get(doc).doc, clock, key, value);
    return {};
  },
  delete: ({ doc }) => ({ tombstone: deleteRecord(docs.get(doc).doc, clock) }),
  waitDeleted: async ({ doc, timeout = 10000 }) => {
    const ydoc = docs.get(doc).doc;
    await waitFor(doc, () => recordDeletion(ydoc) !== null, timeout);
    return { tombstone: recordDeletion(ydoc), fields: fields(doc) };
  },
  setIn: ({ doc, map: mapName, key, value }) => {
    setField(docs.get(doc).doc, clock, [mapName, key], value);
    return {};
  },
  waitFields: async ({ doc, expect, timeout = 10000 }) => {
    await waitFor(doc, () => subset(fields(doc), expect), timeout);
    return { fields: fields(doc) };
  },
  waitConflicts: async ({ doc, count, timeout = 10000 }) => {
    const ydoc = docs.get(doc).doc;
    await waitFor(doc, () => recordConflicts(ydoc).length >= count, timeout);
    return { conflicts: recordConflicts(ydoc) };
  },
  waitSynced: async ({ doc, timeout = 10000 }) => {
    const { provider } = docs.get(doc);
    if (config.provider === "websocket") {
      if (!provider.synced) {
        await new Promise((resolve, reject) => {
          const t = setTimeout(() => reject(new Error("not synced")), timeout);
          provider.once("sync", () => { clearTimeout(t); resolve(); });
        });
      }
    } else if (!provider.isSynced || provider.hasUnsyncedChanges) {
      await new Promise((resolve, reject) => {
        const t = setTimeout(() => reject(new Error(
          `not synced (unsynced=${provider.unsyncedChanges})`)), timeout);
        const check = () => {
          if (provider.isSynced && !provider.hasUnsyncedChanges) {
            clearTimeout(t);
            provider.off("unsyncedChanges", check);
            provider.off("synced", check);
            resolve();
          }
        };
        provider.on("unsyncedChanges", check);
        provider.on("synced", check);
        check();
      });
    }
    return {};
  },
  unsynced: ({ doc }) => ({ unsynced: docs.get(doc).provider.unsyncedChanges }),
  open: ({ docs: names, token }) => {
    for (const name of names) {
      if (token !== undefined) tokens[name] = token;
      open(name);
    }
    return {};
  },
  setToken: ({ docs: names, token }) => {
    if (names === undefined) config.token = token;
    else for (const name of names) tokens[name] = token;
    return {};
  },
  sendToken: async ({ docs: names }) => {
    for (const name of names ?? docs.keys()) await docs.get(name).provider.sendToken();
    return {};
  },
  disconnect: async () => {
    if (config.provider === "websocket") {
      for (const { provider } of docs.values()) provider.disconnect();
    } else if (socket.status !== "disconnected") {
      // Wait for the close: HocuspocusProviderWebsocket.connect() is a no-op while the status
      // is still "connected" (a connect() right after disconnect() would never reconnect).
      const closed = new Promise((resolve) => {
        const onStatus = ({ status }) => {
          if (status === "disconnected") { socket.off("status", onStatus); resolve(); }
        };
        socket.on("status", onStatus);
      });
      socket.disconnect();
      await closed;
    }
    return {};
  },
  connect: async () => {
    if (config.provider === "websocket") for (const { provider } of docs.values()) provider.connect();
    else await socket.connect();
    return {};
  },
  setAwareness: ({ doc, state }) => {
    docs.get(doc).provider.awareness.setLocalState(state);
    return { clientId: docs.get(doc).doc.clientID };
  },
  awareness: ({ doc }) => {
    const { provider, doc: ydoc } = docs.get(doc);
    const states = {};
    provider.awareness.getStates().forEach((s, id) => { if (id !== ydoc.clientID) states[id] = s; });
    return { states, clientId: ydoc.clientID };
  },
  waitAwareness: async ({ doc, count, timeout = 10000 }) => {
    const { provider, doc: ydoc } = docs.get(doc);
    const others = () => [...provider.awareness.getStates().keys()].filter((id) => id !== ydoc.clientID);
    if (others().length !== count) {
      await new Promise((resolve, reject) => {
        const t = setTimeout(() => reject(new Error(`awareness: ${others().length} others`)), timeout);
        const check = () => {
          if (others().length === count) {
            clearTimeout(t);
            provider.awareness.off("change", check);
            resolve();
          }
        };
        provider.awareness.on("change", check);
      });
    }
    const states = {};
    provider.awareness.getStates().forEach((s, id) => { if (id !== ydoc.clientID) states[id] = s; });
    return { states };
  },
  quit: () => {
    for (const { provider } of docs.values()) provider.destroy();
    if (socket) socket.destroy();
    setTimeout(() => process.exit(0), 10);
    return {};
  },
};

const lines = readline.createInterface({ input: process.stdin });
lines.on("line", async (line) => {
  if (!line.trim()) return;
  const command = JSON.parse(line);
  try {
    const result = await ops[command.op](command);
    emit({ id: command.id, ok: true, ...result });
  } catch (error) {
    emit({ id: command.id, ok: false, error: String(error?.stack ?? error) });
  }
});
lines.on("close", () => process.exit(0));
emit({ event: "ready" });
