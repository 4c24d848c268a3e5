// A JavaScript replica of records (yjs + crdt_sync/js/record.mjs), driven by the Python tests
// over stdin/stdout, one JSON object per line; no network. See tests/helpers/js_peer.py
// (JsRecordPeer) and tests/crdt_sync/test_record_js.py.
//
// Commands {"id": n, "op": ..., ...} each get one reply {"id": n, "ok": true, ...} or
// {"id": n, "ok": false, "error": "..."}. Updates are base64 Yjs v1 updates; bytes values are
// {"$bytes": base64} both ways.
//
//   open   {doc, replica, clientId, update?}      a new document (and HLC) named doc
//   apply  {doc, update}                          apply an update
//   edit   {doc, now, edits: [...]}               run edits (each its own transaction)
//            -> {update: what the edits wrote, refused: [indices of InvalidEdit refusals]}
//   read   {doc}                                  -> {fields, conflicts, state: full update}
//   round  {doc, now, edits, remote}              edit, read, read `remote` alone, apply it,
//            read again: -> {update, refused, mine: {fields, conflicts, state,
//                            raw: [lww map, conflicts map]},
//                            remote: {fields, conflicts}, merged: {fields, conflicts}}
//   close  {doc}
//
// Edits (paths are a name or a list of names; text positions count code points, as Python's):
//   {do: "set", path, value, atomic?}     setField            {do: "delete", path}  deleteField
//   {do: "text", path, pos, delete, insert}  fieldText, then a splice (clamped to the length)
//   {do: "array", path, pos, delete, insert: [...]}  fieldArray, then a splice (clamped)
//   {do: "map", path}                     fieldMap
//   {do: "reassign", path, pos, delete, chars, items, patch, drop, atomic?}   read the field,
//        change a copy (a string: splice `chars` at code point `pos`; a list: splice `items`;
//        an object: `patch` keys set, `drop` deleted), set the whole of it back (setField)
//   {do: "lww", path, value}  {do: "lwwDelete", path}      crdt_sync/js/lww.mjs
//   {do: "rootText", name, insert}        insert at 0 of the root Y.Text `name` (no entry)
//   {do: "rootArray", name, insert: [...]}  push to the root Y.Array `name` (no entry)
//   {do: "rawEntry", key, value}          lww.set(key, value) as is (malformed entries)
//   {do: "v1", key, value}                fields.set(key, ...) as layout v1 wrote it
import * as readline from "node:readline";
import * as Y from "yjs";
import * as R from "../../crdt_sync/js/record.mjs";
import { lwwDelete, lwwWrite } from "../../crdt_sync/js/lww.mjs";

const docs = new Map(); // name -> {doc, clock}

const decode = (value) => {
  if (Array.isArray(value)) return value.map(decode);
  if (value !== null && typeof value === "object") {
    const keys = Object.keys(value);
    if (keys.length === 1 && keys[0] === "$bytes") return new Uint8Array(Buffer.from(value.$bytes, "base64"));
    return Object.fromEntries(keys.map((k) => [k, decode(value[k])]));
  }
  return value;
};

const encode = (value) => {
  if (value instanceof Uint8Array) return { $bytes: Buffer.from(value).toString("base64") };
  if (Array.isArray(value)) return value.map(encode);
  if (value !== null && typeof value === "object") {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, encode(v)]));
  }
  return value;
};

const b64 = (bytes) => Buffer.from(bytes).toString("base64");
const unb64 = (text) => new Uint8Array(Buffer.from(text, "base64"));

/** UTF-16 index of code point `pos` in `text`. */
const unitIndex = (text, pos) => [...text].slice(0, pos).join("").length;

function legacy(doc, value) {
  if (Array.isArray(value)) return Y.Array.from(value.map((v) => legacy(doc, v)));
  if (value !== null && typeof value === "object" && !(value instanceof Uint8Array)) {
    if (typeof value.$text === "string") return new Y.Text(value.$text);
    return new Y.Map(Object.entries(value).map(([k, v]) => [k, legacy(doc, v)]));
  }
  return value;
}

function reassigned(current, { pos = 0, delete: del = 0, chars = "", items = [], patch = {}, drop = null }) {
  const splice = (items, inserted) => {
    const at = Math.min(pos, items.length);
    return [...items.slice(0, at), ...inserted, ...items.slice(at + del)];
  };
  if (typeof current === "string") return splice([...current], [...chars]).join("");
  if (Array.isArray(current)) return splice(current, decode(items));
  if (current !== null && typeof current === "object" && !(current instanceof Uint8Array)) {
    const changed = { ...current, ...decode(patch) };
    if (drop !== null) delete changed[drop];
    return changed;
  }
  return undefined;
}

function runEdit(doc, clock, now, edit) {
  const path = edit.path;
  switch (edit.do) {
    case "set":
      R.setField(doc, clock, path, decode(edit.value), { now, atomic: edit.atomic ?? false });
      break;
    case "delete":
      R.deleteField(doc, clock, path, { now });
      break;
    case "text": {
      const text = R.fieldText(doc, clock, path, { now });
      doc.transact(() => {
        const chars = [...text.toString()];
        const pos = Math.min(edit.pos ?? chars.length, chars.length);
        const del = Math.min(edit.delete ?? 0, chars.length - pos);
        const current = text.toString();
        const start = unitIndex(current, pos);
        if (del) text.delete(start, unitIndex(current, pos + del) - start);
        if (edit.insert) text.insert(start, edit.insert);
      });
      break;
    }
    case "array": {
      const array = R.fieldArray(doc, clock, path, { now });
      doc.transact(() => {
        const pos = Math.min(edit.pos ?? array.length, array.length);
        const del = Math.min(edit.delete ?? 0, array.length - pos);
        if (del) array.delete(pos, del);
        if (edit.insert?.length) array.insert(pos, decode(edit.insert));
      });
      break;
    }
    case "map":
      R.fieldMap(doc, clock, path, { now });
      break;
    case "reassign": {
      const current = R.readField(doc, path);
      const changed = reassigned(current, edit);
      if (changed !== undefined) R.setField(doc, clock, path, changed, { now, atomic: edit.atomic ?? false });
      break;
    }
    case "lww":
      lwwWrite(doc, clock, path, decode(edit.value), { now });
      break;
    case "lwwDelete":
      lwwDelete(doc, clock, path, { now });
      break;
    case "rootText":
      doc.getText(edit.name).insert(0, edit.insert);
      break;
    case "rootArray":
      doc.getArray(edit.name).push(decode(edit.insert));
      break;
    case "rawEntry":
      doc.getMap("lww").set(edit.key, decode(edit.value));
      break;
    case "v1":
      doc.getMap("fields").set(edit.key, legacy(doc, decode(edit.value)));
      break;
    default:
      throw new Error(`unknown edit ${JSON.stringify(edit)}`);
  }
}

function edit(name, now, edits) {
  const { doc, clock } = docs.get(name);
  const before = Y.encodeStateVector(doc);
  const refused = [];
  edits.forEach((e, i) => {
    try {
      runEdit(doc, clock, now + i, e);
    } catch (error) {
      if (!(error instanceof R.InvalidEdit)) throw error;
      refused.push(i);
    }
  });
  return { update: b64(Y.encodeStateAsUpdate(doc, before)), refused };
}

const view = (doc) => ({
  fields: encode(R.readRecord(doc)),
  conflicts: encode(R.recordConflicts(doc)),
});

const ops = {
  open: ({ doc: name, replica, clientId, update }) => {
    const doc = new Y.Doc();
    if (clientId !== undefined) doc.clientID = clientId;
    if (update) Y.applyUpdate(doc, unb64(update));
    docs.set(name, { doc, clock: new R.HybridClock(replica) });
    return {};
  },
  apply: ({ doc, update }) => {
    Y.applyUpdate(docs.get(doc).doc, unb64(update));
    return {};
  },
  edit: ({ doc, now, edits }) => edit(doc, now, edits),
  read: ({ doc }) => {
    const { doc: ydoc } = docs.get(doc);
    return { ...view(ydoc), state: b64(Y.encodeStateAsUpdate(ydoc)) };
  },
  round: ({ doc, now, edits, remote }) => {
    const result = edit(doc, now, edits);
    const { doc: ydoc } = docs.get(doc);
    const raw = [encode(ydoc.getMap("lww").toJSON()), encode(ydoc.getMap("conflicts").toJSON())];
    const mine = { ...view(ydoc), state: b64(Y.encodeStateAsUpdate(ydoc)), raw };
    const alone = new Y.Doc();
    Y.applyUpdate(alone, unb64(remote));
    const remoteView = view(alone);
    Y.applyUpdate(ydoc, unb64(remote));
    return { ...result, mine, remote: remoteView, merged: view(ydoc) };
  },
  close: ({ doc }) => {
    docs.get(doc)?.doc.destroy();
    docs.delete(doc);
    return {};
  },
};

const lines = readline.createInterface({ input: process.stdin });
lines.on("line", (line) => {
  if (!line.trim()) return;
  const command = JSON.parse(line);
  let reply;
  try {
    reply = { id: command.id, ok: true, ...ops[command.op](command) };
  } catch (error) {
    reply = { id: command.id, ok: false, error: String(error?.stack ?? error) };
  }
  process.stdout.write(JSON.stringify(reply) + "\n");
});
lines.on("close", () => process.exit(0));
