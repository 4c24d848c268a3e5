// crdt-sync records (layout v2) for JavaScript Yjs peers: web and React Native apps (yjs 13.6).
//
// A record is one Y.Doc. This module reads and writes it exactly as docs/records.md specifies
// and as the Python package does (crdt_sync/records/layout.py, crdt_sync/records/record.py):
//
//   root "lww"            Y.Map   register entries, one per write of a slot, keyed by HLC time
//   root 'text:["notes"]' Y.Text  the content of the text slot ["notes"]
//   root 'array:["a","b"]' Y.Array the content of the list slot ["a","b"]
//   root "conflicts"      Y.Map   conflicts a writer resolved, kept for every replica to list
//   root "fields"         Y.Map   layout v1 records (read; their nested objects edited in place)
//   root "deleted"        Y.Map   tombstones: HLC time of a deletion -> true (the record is gone)
//
// Content lives in root-level types named after the slot, so two peers that create the same
// text, map or list offline both keep what they wrote; two peers that set the same field or map
// key offline resolve by hybrid-logical-clock time ("the most recent write wins"), and the
// loser is listed by recordConflicts() on every replica.
//
//   import * as Y from "yjs";
//   import { HybridClock, readRecord, setField, fieldText } from "./record.mjs";
//   const clock = new HybridClock("web-ana");            // one replica id per device
//   setField(ydoc, clock, "status", "on_site");          // a value: the most recent write wins
//   setField(ydoc, clock, ["address", "floor"], 3);      // a key of the map "address"
//   fieldText(ydoc, clock, "notes").insert(0, "Hi ");    // the Y.Text of "notes" (UTF-16 positions)
//   readRecord(ydoc);                                     // {status, address: {floor}, notes}
//
// No dependencies: the module never imports yjs. It uses the Y.Doc you pass it (and takes the
// Y.Text / Y.Map / Y.Array classes from that document's own yjs), so it works with whichever
// copy of yjs your app bundles.

export const LWW_ROOT = "lww";
export const CONFLICTS_ROOT = "conflicts";
export const FIELDS_ROOT = "fields";
export const DELETED_ROOT = "deleted";
export const TEXT_PREFIX = "text:";
export const ARRAY_PREFIX = "array:";
/** Conflicts kept in a record's "conflicts" map; a writer drops the oldest beyond it. */
export const KEPT_CONFLICTS = 100;
export const MAX_COUNTER = 0xffffff;
export const DEFAULT_MAX_SKEW_MS = 5 * 60 * 1000;

/** What a slot holds (or what one side of a conflict wrote). */
export const Kind = Object.freeze({
  VALUE: "value",
  DELETED: "deleted",
  TEXT: "text",
  MAP: "map",
  ARRAY: "array",
});
const CONTAINERS = new Set([Kind.TEXT, Kind.MAP, Kind.ARRAY]);
const KINDS = new Set(Object.values(Kind));
const CONTENT_ORDER = [Kind.MAP, Kind.ARRAY, Kind.TEXT]; // shown after a deletion, in this order
const KIND_NAMES = { value: "value", text: "text", map: "map", array: "list" };

/** A write the record cannot hold (a value of another kind at a slot, a bad value or path). */
export class InvalidEdit extends Error {
  constructor(message) {
    super(message);
    this.name = "InvalidEdit";
  }
}

// -- strings and keys -----------------------------------------------------------------------

/**
 * Compare two strings by Unicode code point, as Python does (JavaScript's `<` compares UTF-16
 * units; the two orders differ only between astral characters and U+E000..U+FFFF).
 */
export function compareStrings(a, b) {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    let x = a.charCodeAt(i);
    let y = b.charCodeAt(i);
    if (x !== y) {
      // Move surrogates above U+E000..U+FFFF: UTF-16 order becomes code point order.
      if (x >= 0xd800) x += x >= 0xe000 ? -0x800 : 0x2000;
      if (y >= 0xd800) y += y >= 0xe000 ? -0x800 : 0x2000;
      return x < y ? -1 : 1;
    }
  }
  return a.length - b.length;
}

/** Compare two LWW keys in timestamp order (code point order of the canonical keys). */
export const compareKeys = compareStrings;

const KEY = /^[0-9a-f]{12}\.[0-9a-f]{6}\..+$/s;

/** Whether `key` is a canonical HLC timestamp key (`"<ms:12 hex>.<counter:6 hex>.<replica>"`). */
export const isKey = (key) => typeof key === "string" && KEY.test(key);

/** Encode a timestamp as a key. */
export const encodeKey = (ms, counter, replica) =>
  ms.toString(16).padStart(12, "0") + "." + counter.toString(16).padStart(6, "0") + "." + replica;

/** Decode a key into [ms, counter, replica] (the replica id may contain dots). */
export const decodeKey = (key) => {
  const [ms, counter, ...replica] = key.split(".");
  return [parseInt(ms, 16), parseInt(counter, 16), replica.join(".")];
};

const nextTick = (ms, counter) => (counter < MAX_COUNTER ? [ms, counter + 1] : [ms + 1, 0]);

function isWellFormed(text) {
  for (let i = 0; i < text.length; i++) {
    const unit = text.charCodeAt(i);
    if (unit >= 0xd800 && unit <= 0xdbff) {
      const low = text.charCodeAt(i + 1);
      if (!(low >= 0xdc00 && low <= 0xdfff)) return false;
      i++;
    } else if (unit >= 0xdc00 && unit <= 0xdfff) {
      return false;
    }
  }
  return true;
}

function checkText(text, where) {
  if (typeof text !== "string") throw new InvalidEdit(`${where}: expected a string, got ${typeof text}`);
  if (!isWellFormed(text)) throw new InvalidEdit(`${where}: text is not valid Unicode (a lone surrogate)`);
  return text;
}

/** A hybrid logical clock (docs/lww.md, "The hybrid logical clock"). */
export class HybridClock {
  /**
   * @param {string} replica  this device's replica id (ASCII; one per device)
   * @param {{maxSkewMs?: number, state?: string|null}} options  `state`: a saved `state()`
   */
  constructor(replica, { maxSkewMs = DEFAULT_MAX_SKEW_MS, state = null } = {}) {
    if (typeof replica !== "string" || replica === "") throw new Error("replica id required");
    this.replica = replica;
    this.maxSkewMs = maxSkewMs;
    this.ms = 0;
    this.counter = 0;
    this.lastStep = null;
    if (state !== null) [this.ms, this.counter] = decodeKey(state);
  }

  /** The clock position as a key, to persist and pass back as `state`. */
  state() {
    return encodeKey(this.ms, this.counter, this.replica);
  }

  /** A local event: a timestamp greater than any issued or observed before. */
  tick(now = Date.now()) {
    [this.ms, this.counter] = now > this.ms ? [now, 0] : nextTick(this.ms, this.counter);
    return encodeKey(this.ms, this.counter, this.replica);
  }

  /** Receipt of a remote key; returns false (not adopted) if it is beyond the skew bound. */
  observe(key, now = Date.now()) {
    const [ms, counter] = decodeKey(key);
    if (ms > now + this.maxSkewMs) return false;
    if (ms > this.ms || (ms === this.ms && counter > this.counter)) {
      [this.ms, this.counter] = [ms, counter];
    }
    return true;
  }

  /** A timestamp that beats `winner` (null: a plain tick); a skewed winner is stepped past
   *  without dragging this clock forward. */
  after(winner, now = Date.now()) {
    if (winner === null || winner === undefined) return this.tick(now);
    this.observe(winner, now);
    const ts = this.tick(now);
    if (compareKeys(ts, winner) > 0) return ts;
    const [ms, counter] = decodeKey(winner);
    let stepped = nextTick(ms, counter);
    const last = this.lastStep;
    if (last && (last[0] > stepped[0] || (last[0] === stepped[0] && last[1] >= stepped[1]))) {
      stepped = nextTick(...last);
    }
    this.lastStep = stepped;
    return encodeKey(...stepped, this.replica);
  }
}

// -- slots and root names -------------------------------------------------------------------

/** The slot as compact JSON (`["address","street"]`), as in root names. */
export const slotName = (slot) => JSON.stringify(slot);
/** The name of the root Y.Text holding a text slot's content. */
export const textRootName = (slot) => TEXT_PREFIX + slotName(slot);
/** The name of the root Y.Array holding a list slot's content. */
export const arrayRootName = (slot) => ARRAY_PREFIX + slotName(slot);

const isSlot = (raw) =>
  Array.isArray(raw) && raw.length > 0 && raw.every((part) => typeof part === "string");

/** `[kind, slot]` for a content root's name ("text" or "array"), else null. */
export function parseRootName(name) {
  let kind;
  let rest;
  if (name.startsWith(TEXT_PREFIX)) [kind, rest] = [Kind.TEXT, name.slice(TEXT_PREFIX.length)];
  else if (name.startsWith(ARRAY_PREFIX)) [kind, rest] = [Kind.ARRAY, name.slice(ARRAY_PREFIX.length)];
  else return null;
  let parts;
  try {
    parts = JSON.parse(rest);
  } catch {
    return null;
  }
  if (!isSlot(parts)) return null;
  return slotName(parts) === rest ? [kind, parts] : null; // canonical names only
}

/** A path as a slot: "status" -> ["status"], ["address", "zip"] as it is. */
function toSlot(path) {
  const slot = typeof path === "string" ? [path] : path;
  if (!isSlot(slot)) throw new InvalidEdit(`a field path is a string or a non-empty array of strings`);
  for (const part of slot) checkText(part, "key");
  return [...slot];
}

const sameSlot = (a, b) => a.length === b.length && a.every((part, i) => part === b[i]);
const startsWith = (slot, prefix) =>
  slot.length > prefix.length && prefix.every((part, i) => part === slot[i]);

function compareSlots(a, b) {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const c = compareStrings(a[i], b[i]);
    if (c) return c;
  }
  return a.length - b.length;
}

// -- Yjs classes and plain values -----------------------------------------------------------

const TYPES = new WeakMap(); // Y.Doc class -> {Text, Map, Array}

/** The Y.Text / Y.Map / Y.Array classes of the yjs copy that made `ydoc`. */
function typesOf(ydoc) {
  let types = TYPES.get(ydoc.constructor);
  if (types === undefined) {
    const probe = new ydoc.constructor(); // a scratch document, never shared
    const text = probe.getText("t");
    types = {
      Text: text.constructor,
      Map: probe.getMap("m").constructor,
      Array: probe.getArray("a").constructor,
    };
    probe.destroy();
    TYPES.set(ydoc.constructor, types);
  }
  return types;
}

const hasOwn = (object, key) => Object.prototype.hasOwnProperty.call(object, key);

const isPlainObject = (value) => {
  if (typeof value !== "object" || value === null) return false;
  const proto = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null;
};

/** A plain copy of a value read from a document (Y types become strings, objects, arrays). */
function toPlain(value, T) {
  if (value === undefined || value === null) return null;
  if (value instanceof T.Text) return value.toString();
  if (value instanceof T.Map) {
    const out = {};
    value.forEach((v, k) => { out[k] = toPlain(v, T); });
    return out;
  }
  if (value instanceof T.Array) return value.toArray().map((v) => toPlain(v, T));
  if (value instanceof Uint8Array) return value.slice();
  if (Array.isArray(value)) return value.map((v) => toPlain(v, T));
  if (isPlainObject(value)) {
    const out = {};
    for (const [k, v] of Object.entries(value)) out[k] = toPlain(v, T);
    return out;
  }
  return value;
}

/** Check a value a record can hold atomically (JSON-like; binary as Uint8Array); a copy. */
function checkJson(value, where = "value") {
  if (value === null || typeof value === "boolean" || typeof value === "number") return value;
  if (typeof value === "string") return checkText(value, where);
  if (value instanceof Uint8Array) return value.slice();
  if (Array.isArray(value)) return value.map((v, i) => checkJson(v, `${where}[${i}]`));
  if (isPlainObject(value)) {
    const out = {};
    for (const [k, v] of Object.entries(value)) {
      checkText(k, `${where}: key`);
      out[k] = checkJson(v, `${where}.${k}`);
    }
    return out;
  }
  const what = value === undefined ? "undefined" : value?.constructor?.name ?? typeof value;
  throw new InvalidEdit(`${where}: cannot store ${what} in a record`);
}

/** Equality of plain values as JSON: bytes by content, objects key by key (true is not 1). */
function samePlain(a, b) {
  if (a === null || b === null || typeof a !== "object" || typeof b !== "object") return a === b;
  if (a instanceof Uint8Array || b instanceof Uint8Array) {
    return a instanceof Uint8Array && b instanceof Uint8Array &&
      a.length === b.length && a.every((x, i) => x === b[i]);
  }
  if (Array.isArray(a) || Array.isArray(b)) {
    return Array.isArray(a) && Array.isArray(b) &&
      a.length === b.length && a.every((x, i) => samePlain(x, b[i]));
  }
  const keys = Object.keys(a);
  return keys.length === Object.keys(b).length &&
    keys.every((k) => hasOwn(b, k) && samePlain(a[k], b[k]));
}

// -- register entries -----------------------------------------------------------------------

/**
 * The entry stored at `key` ({key, slot, kind, value, base}), or null if it is malformed:
 * a non-canonical key, a value that is not an object, `f` not a string or a non-empty list of
 * strings, a `t` other than "text" / "map" / "array", a `b` that is neither null nor a key.
 */
export function parseEntry(key, raw) {
  if (!isKey(key) || !isPlainObject(raw)) return null;
  const slot = typeof raw.f === "string" ? [raw.f] : isSlot(raw.f) ? [...raw.f] : null;
  if (slot === null) return null;
  const base = raw.b ?? null;
  if (base !== null && !isKey(base)) return null;
  if (raw.d === true) return { key, slot, kind: Kind.DELETED, value: null, base };
  const container = raw.t ?? null;
  if (container !== null) {
    if (!CONTAINERS.has(container)) return null;
    return { key, slot, kind: container, value: null, base };
  }
  return { key, slot, kind: Kind.VALUE, value: raw.v ?? null, base };
}

function encodeEntry(slot, kind, value, base) {
  const raw = { f: slot.length === 1 ? slot[0] : [...slot], b: base };
  if (kind === Kind.DELETED) raw.d = true;
  else if (kind === Kind.VALUE) raw.v = value;
  else raw.t = kind;
  return raw;
}

const written = (kind, value, ts) => ({ kind, value, ts });

function encodeWritten(w) {
  return { k: w.kind, v: w.value, ts: w.ts };
}

function decodeWritten(raw, T) {
  if (!isPlainObject(raw) || !KINDS.has(raw.k)) return null;
  let ts = null;
  if (typeof raw.ts === "string") {
    if (!isKey(raw.ts)) return null;
    ts = raw.ts;
  }
  return written(raw.k, toPlain(raw.v, T), ts);
}

function decodeConflict(key, raw, T) {
  if (!isPlainObject(raw)) return null;
  const slot = typeof raw.f === "string" ? [raw.f] : isSlot(raw.f) ? [...raw.f] : null;
  if (slot === null) return null;
  const lost = decodeWritten(raw.l, T);
  const won = decodeWritten(raw.w, T);
  if (lost === null || won === null) return null;
  return { key, slot, lost, won };
}

const encodeConflict = (c) => ({
  f: c.slot.length === 1 ? c.slot[0] : [...c.slot],
  l: encodeWritten(c.lost),
  w: encodeWritten(c.won),
});

// -- the layout view of one document --------------------------------------------------------

/**
 * The layout of one record document: an index of its register entries by slot, what each slot
 * shows, what lost, and the writer's rules. Made afresh for each call of this module's
 * functions (indexing costs one pass over the "lww" map), so it never goes stale.
 */
class Layout {
  constructor(ydoc) {
    this.doc = ydoc;
    this.T = typesOf(ydoc);
    this.registers = ydoc.getMap(LWW_ROOT);
    this.kept = ydoc.getMap(CONFLICTS_ROOT);
    this.legacy = ydoc.getMap(FIELDS_ROOT);
    this.tombstones = ydoc.getMap(DELETED_ROOT);
    this.bySlot = new Map(); // slot name -> {slot, entries: Map(key -> entry)}
    this.slotOf = new Map(); // key -> slot name (null: malformed)
    this.children = new Map(); // parent slot name -> Map(child key -> count of slots below)
    this.registers.forEach((raw, key) => this.index(key, raw));
  }

  index(key, raw) {
    this.unindex(key);
    const entry = parseEntry(key, raw);
    const name = entry === null ? null : slotName(entry.slot);
    this.slotOf.set(key, name);
    if (entry === null) return;
    let bucket = this.bySlot.get(name);
    if (bucket === undefined) {
      bucket = { slot: entry.slot, entries: new Map() };
      this.bySlot.set(name, bucket);
      for (let depth = 0; depth < entry.slot.length; depth++) {
        const parent = slotName(entry.slot.slice(0, depth));
        let below = this.children.get(parent);
        if (below === undefined) this.children.set(parent, (below = new Map()));
        below.set(entry.slot[depth], (below.get(entry.slot[depth]) ?? 0) + 1);
      }
    }
    bucket.entries.set(key, entry);
  }

  unindex(key) {
    const name = this.slotOf.get(key);
    this.slotOf.delete(key);
    if (name === null || name === undefined) return;
    const bucket = this.bySlot.get(name);
    bucket.entries.delete(key);
    if (bucket.entries.size) return;
    this.bySlot.delete(name);
    for (let depth = 0; depth < bucket.slot.length; depth++) {
      const parent = slotName(bucket.slot.slice(0, depth));
      const below = this.children.get(parent);
      const left = below.get(bucket.slot[depth]) - 1;
      if (left) below.set(bucket.slot[depth], left);
      else below.delete(bucket.slot[depth]);
    }
  }

  /** The entries of `slot`, oldest first. */
  entries(slot) {
    const bucket = this.bySlot.get(slotName(slot));
    if (bucket === undefined) return [];
    return [...bucket.entries.values()].sort((a, b) => compareKeys(a.key, b.key));
  }

  /** The entry of `slot` with the greatest timestamp, or null. */
  winner(slot) {
    const bucket = this.bySlot.get(slotName(slot));
    let best = null;
    if (bucket !== undefined) {
      for (const entry of bucket.entries.values()) {
        if (best === null || compareKeys(entry.key, best.key) > 0) best = entry;
      }
    }
    return best;
  }

  // content roots

  rootSlots() {
    const found = new Map(); // slot name -> {slot, kinds: Set}
    for (const name of this.doc.share.keys()) {
      const parsed = parseRootName(name);
      if (parsed === null) continue;
      const key = slotName(parsed[1]);
      let item = found.get(key);
      if (item === undefined) found.set(key, (item = { slot: parsed[1], kinds: new Set() }));
      item.kinds.add(parsed[0]);
    }
    return found;
  }

  text(slot) {
    return this.doc.getText(textRootName(slot));
  }

  array(slot) {
    return this.doc.getArray(arrayRootName(slot));
  }

  rootContent(slot, kind, roots) {
    if (!roots.get(slotName(slot))?.kinds.has(kind)) return false;
    return (kind === Kind.TEXT ? this.text(slot) : this.array(slot)).length > 0;
  }

  /** Keys that have entries or content below `slot` (shown or not). */
  childKeys(slot, roots = this.rootSlots()) {
    const keys = new Set(this.children.get(slotName(slot))?.keys() ?? []);
    for (const { slot: rootSlot } of roots.values()) {
      if (startsWith(rootSlot, slot)) keys.add(rootSlot[slot.length]);
    }
    if (slot.length === 0) for (const key of this.legacy.keys()) keys.add(key);
    return [...keys];
  }

  hasContent(slot, kind, roots) {
    if (kind === Kind.MAP) {
      return this.childKeys(slot, roots).some((k) => this.shown([...slot, k], roots).present);
    }
    return this.rootContent(slot, kind, roots);
  }

  // what a slot shows

  legacyAt(slot) {
    if (slot.length !== 1 || !this.legacy.has(slot[0])) return undefined;
    return { value: this.legacy.get(slot[0]) };
  }

  legacyKind(value) {
    if (value instanceof this.T.Text) return Kind.TEXT;
    if (value instanceof this.T.Map) return Kind.MAP;
    if (value instanceof this.T.Array) return Kind.ARRAY;
    return Kind.VALUE;
  }

  /** What `slot` shows: {kind, present, winner, value, legacy} (`legacy`: a v1 object). */
  shown(slot, roots = null) {
    const make = (kind, winner, value = null, legacy = undefined) =>
      ({ kind, winner, value, legacy, present: kind !== Kind.DELETED });
    const winner = this.winner(slot);
    if (winner === null) {
      const legacy = this.legacyAt(slot);
      if (legacy !== undefined) {
        const kind = this.legacyKind(legacy.value);
        return make(kind, null, kind === Kind.VALUE ? legacy.value ?? null : null, legacy);
      }
    } else if (winner.kind === Kind.VALUE) {
      return make(Kind.VALUE, winner, winner.value);
    } else if (CONTAINERS.has(winner.kind)) {
      return make(winner.kind, winner);
    }
    roots ??= this.rootSlots();
    for (const kind of CONTENT_ORDER) { // after a deletion (or no entry): content written since
      if (this.hasContent(slot, kind, roots)) return make(kind, winner);
    }
    return make(Kind.DELETED, winner);
  }

  plain(slot, shown, roots) {
    if (shown.kind === Kind.VALUE) return toPlain(shown.value, this.T);
    if (shown.legacy !== undefined) return toPlain(shown.legacy.value, this.T);
    return this.content(slot, shown.kind, roots);
  }

  content(slot, kind, roots) {
    if (kind === Kind.TEXT) return this.text(slot).toString();
    if (kind === Kind.ARRAY) return this.array(slot).toArray().map((v) => toPlain(v, this.T));
    return this.readMap(slot, roots ?? this.rootSlots());
  }

  /** The slots below `slot` that show something, as plain values. */
  readMap(slot, roots = this.rootSlots()) {
    const values = {};
    for (const key of this.childKeys(slot, roots)) {
      const child = [...slot, key];
      const shown = this.shown(child, roots);
      if (shown.present) values[key] = this.plain(child, shown, roots);
    }
    return values;
  }

  // conflicts

  writtenOf(slot, shown, roots) {
    const winner = shown.winner;
    if (winner !== null) {
      if (winner.kind === Kind.VALUE) return written(Kind.VALUE, toPlain(winner.value, this.T), winner.key);
      if (winner.kind === Kind.DELETED) return written(Kind.DELETED, null, winner.key);
      return written(winner.kind, this.content(slot, winner.kind, roots), winner.key);
    }
    if (!shown.present) return written(Kind.DELETED, null, null);
    return written(shown.kind, this.plain(slot, shown, roots), null);
  }

  /** What lost at `slot` and is still in the document outside "conflicts". */
  slotConflicts(slot, roots = this.rootSlots()) {
    const shown = this.shown(slot, roots);
    const winner = shown.winner;
    let won = null;
    const winning = () => (won ??= this.writtenOf(slot, shown, roots));
    const found = [];
    const latest = new Map(); // container kind -> its latest entry
    for (const entry of this.entries(slot)) {
      if (CONTAINERS.has(entry.kind)) latest.set(entry.kind, entry);
      else if (entry !== winner) {
        const lost = written(entry.kind, toPlain(entry.value, this.T), entry.key);
        found.push({ key: entry.key, slot, lost, won: winning() });
      }
    }
    for (const kind of CONTENT_ORDER) {
      if (kind === shown.kind && shown.legacy === undefined) continue;
      if (!this.hasContent(slot, kind, roots)) continue;
      const creator = latest.get(kind) ?? null;
      const lost = written(kind, this.content(slot, kind, roots), creator?.key ?? null);
      const key = creator?.key ?? `${kind}:${slotName(slot)}@${winner?.key ?? ""}`;
      found.push({ key, slot, lost, won: winning() });
    }
    const legacy = this.legacyAt(slot);
    if (legacy !== undefined && winner !== null) {
      const lost = written(this.legacyKind(legacy.value), toPlain(legacy.value, this.T), null);
      found.push({ key: `v1:${slotName(slot)}@${winner.key}`, slot, lost, won: winning() });
    }
    return found;
  }

  /** Every conflict the document holds (in place, then kept), each once, by slot then key. */
  conflicts() {
    const roots = this.rootSlots();
    const slots = new Map();
    for (const [name, { slot }] of this.bySlot) slots.set(name, slot);
    for (const [name, { slot }] of roots) if (!slots.has(name)) slots.set(name, slot);
    const found = new Map();
    for (const slot of slots.values()) {
      for (const c of this.slotConflicts(slot, roots)) if (!found.has(c.key)) found.set(c.key, c);
    }
    const deletion = this.deletion();
    if (deletion !== null) {
      for (const c of this.lostToDeletion(deletion, roots)) if (!found.has(c.key)) found.set(c.key, c);
    }
    this.kept.forEach((raw, key) => {
      if (found.has(key)) return;
      const kept = decodeConflict(key, raw, this.T);
      if (kept !== null) found.set(key, kept);
    });
    return [...found.values()].sort(
      (a, b) => compareSlots(a.slot, b.slot) || compareStrings(a.key, b.key));
  }

  // deletion (docs/records.md, "Deleting a record")

  /** The record's greatest tombstone key (when, by whom), or null if it is not deleted. */
  deletion() {
    let found = null;
    this.tombstones.forEach((_value, key) => {
      if (isKey(key) && (found === null || compareKeys(key, found) > 0)) found = key;
    });
    return found;
  }

  /** The writes that show in a deleted record: each was made without seeing the deletion
   *  (a deleter removes what it saw), so each lost to it. Per value / text / list slot. */
  lostToDeletion(deletion, roots = this.rootSlots()) {
    const won = written(Kind.DELETED, null, deletion);
    const found = [];
    const walk = (slot) => {
      const shown = this.shown(slot, roots);
      if (!shown.present) return;
      if (shown.kind === Kind.MAP && shown.legacy === undefined) {
        for (const key of this.childKeys(slot, roots)) walk([...slot, key]);
        return;
      }
      const winner = shown.winner;
      const own = winner !== null && winner.kind === shown.kind;
      const key = own ? winner.key : `${shown.kind}:${slotName(slot)}@${deletion ?? "purged"}`;
      const lost = written(shown.kind, this.plain(slot, shown, roots), own ? winner.key : null);
      found.push({ key, slot, lost, won });
    };
    for (const name of this.childKeys([], roots)) walk([name]);
    return found;
  }

  /** Delete the record: supersede every slot (conflicts kept), add a tombstone whose key beats
   *  every entry seen. Returns the tombstone's key. Inside a transaction. */
  deleteRecord(stamp) {
    let latest = this.deletion();
    for (const key of this.slotOf.keys()) {
      if (isKey(key) && (latest === null || compareKeys(key, latest) > 0)) latest = key;
    }
    let key = stamp(latest);
    while (this.registers.has(key) || this.tombstones.has(key)) key = stamp(key);
    for (const name of this.childKeys([])) this.supersede([name]);
    this.tombstones.set(key, true);
    return key;
  }

  // writing (inside a transaction)

  /**
   * Replace whatever `slot` holds with a value, a deletion or an empty container (docs/records.md,
   * "How a writer writes a slot"); returns the new entry's key.
   */
  write(slot, kind, value, stamp) {
    const winner = this.winner(slot);
    let key = stamp(winner?.key ?? null);
    // Keys are unique across slots: a key stepped past a skewed winner can meet another
    // entry's; stamp again past it until the key is free.
    while (this.registers.has(key)) key = stamp(key);
    this.supersede(slot);
    const raw = encodeEntry(slot, kind, value, winner?.key ?? null);
    this.registers.set(key, raw);
    this.index(key, raw);
    return key;
  }

  /** Remove everything `slot` holds, keeping its conflicts (and those below it). */
  supersede(slot) {
    const roots = this.rootSlots();
    const conflicts = this.slotConflicts(slot, roots);
    const children = this.childKeys(slot, roots);
    const entries = this.entries(slot);
    this.keep(conflicts);
    for (const child of children) this.supersede([...slot, child]);
    for (const entry of entries) {
      if (this.registers.has(entry.key)) this.registers.delete(entry.key);
      this.unindex(entry.key);
    }
    if (slot.length === 1 && this.legacy.has(slot[0])) this.legacy.delete(slot[0]);
    const kinds = roots.get(slotName(slot))?.kinds;
    if (kinds?.has(Kind.TEXT)) {
      const text = this.text(slot);
      if (text.length) text.delete(0, text.length);
    }
    if (kinds?.has(Kind.ARRAY)) {
      const array = this.array(slot);
      if (array.length) array.delete(0, array.length);
    }
  }

  keep(conflicts) {
    if (!conflicts.length) return;
    for (const c of conflicts) this.kept.set(c.key, encodeConflict(c));
    if (this.kept.size <= KEPT_CONFLICTS) return;
    const byAge = [];
    this.kept.forEach((raw, key) => {
      const kept = decodeConflict(key, raw, this.T);
      byAge.push([kept?.won.ts ?? "", key]);
    });
    byAge.sort((a, b) => compareStrings(a[0], b[0]) || compareStrings(a[1], b[1]));
    for (const [, key] of byAge.slice(0, byAge.length - KEPT_CONFLICTS)) this.kept.delete(key);
  }
}

// -- editing ----------------------------------------------------------------------------------

/** Make a Y.Text equal `value` with one minimal splice (code point boundaries). */
function replaceText(ytext, value) {
  checkText(value, "text");
  const current = ytext.toString();
  if (current === value) return;
  const limit = Math.min(current.length, value.length);
  let prefix = 0;
  while (prefix < limit && current.charCodeAt(prefix) === value.charCodeAt(prefix)) prefix++;
  if (prefix > 0 && isHigh(current.charCodeAt(prefix - 1))) prefix--; // not inside a pair
  let suffix = 0;
  while (suffix < limit - prefix &&
    current.charCodeAt(current.length - 1 - suffix) === value.charCodeAt(value.length - 1 - suffix)) {
    suffix++;
  }
  if (suffix > 0 && isLow(current.charCodeAt(current.length - suffix))) suffix--;
  const removed = current.length - prefix - suffix;
  if (removed) ytext.delete(prefix, removed);
  const inserted = value.slice(prefix, value.length - suffix);
  if (inserted) ytext.insert(prefix, inserted);
}

const isHigh = (unit) => unit >= 0xd800 && unit <= 0xdbff;
const isLow = (unit) => unit >= 0xdc00 && unit <= 0xdfff;

/** Make a Y.Array equal `values` with one minimal splice (common prefix and suffix kept). */
function replaceArray(yarray, values, T) {
  const items = values.map((v, i) => checkJson(v, `[${i}]`));
  const current = yarray.toArray().map((v) => toPlain(v, T));
  const limit = Math.min(current.length, items.length);
  let prefix = 0;
  while (prefix < limit && samePlain(current[prefix], items[prefix])) prefix++;
  let suffix = 0;
  while (suffix < limit - prefix &&
    samePlain(current[current.length - 1 - suffix], items[items.length - 1 - suffix])) {
    suffix++;
  }
  const removed = current.length - prefix - suffix;
  if (removed) yarray.delete(prefix, removed);
  const inserted = items.slice(prefix, items.length - suffix);
  if (inserted.length) yarray.insert(prefix, inserted);
}

function transact(ydoc, run) {
  let result;
  ydoc.transact(() => { result = run(); });
  return result;
}

/**
 * A map of a record, edited slot by slot: the record itself (`recordEditor`) or a nested map
 * (`fieldMap`, `.map(key)`). Each method is one transaction (or joins the one you are in).
 * Values read are plain copies; `text()` / `array()` return the Yjs types to edit.
 */
export class RecordMap {
  constructor(ydoc, clock, slot = [], { now } = {}) {
    this.ydoc = ydoc;
    this.clock = clock;
    this.slot = slot;
    this.now = now;
  }

  /** A new key that beats `winner` (null: a plain tick). */
  stamp(winner) {
    return this.clock.after(winner, this.now ?? Date.now());
  }

  child(key) {
    return [...this.slot, checkText(key, "key")];
  }

  /** The plain value at `key`, or undefined if it shows nothing. */
  get(key) {
    const L = new Layout(this.ydoc);
    const slot = this.child(key);
    const shown = L.shown(slot);
    return shown.present ? L.plain(slot, shown, L.rootSlots()) : undefined;
  }

  /** Whether `key` shows something. */
  has(key) {
    return new Layout(this.ydoc).shown(this.child(key)).present;
  }

  /** What `key` shows: "value", "text", "map", "array", or undefined. */
  kindOf(key) {
    const shown = new Layout(this.ydoc).shown(this.child(key));
    return shown.present ? shown.kind : undefined;
  }

  /** The keys that show something. */
  keys() {
    return Object.keys(this.toJSON());
  }

  /** The map as plain values. */
  toJSON() {
    return new Layout(this.ydoc).readMap(this.slot);
  }

  /**
   * Set `key`: a value is written last-write-wins; a string over a text edits the text
   * minimally; an object over a map writes only the keys that changed and deletes the missing
   * ones; an array over a list is one minimal splice; an object or array elsewhere makes a map
   * or a list. `{atomic: true}` stores the object or array as one value instead.
   */
  set(key, value, { atomic = false } = {}) {
    transact(this.ydoc, () => assign(this, this.child(key), value, atomic));
  }

  /** Delete `key`; false (and nothing written) if it shows nothing. */
  delete(key) {
    return transact(this.ydoc, () => {
      const L = new Layout(this.ydoc);
      const slot = this.child(key);
      if (!L.shown(slot).present) return false;
      L.write(slot, Kind.DELETED, null, (w) => this.stamp(w));
      return true;
    });
  }

  /** The Y.Text at `key`, created if `key` shows nothing; throws if it shows another kind. */
  text(key) {
    return transact(this.ydoc, () => {
      const [L, slot, shown] = this.container(key, Kind.TEXT);
      return shown?.legacy !== undefined ? shown.legacy.value : L.text(slot);
    });
  }

  /** The Y.Array at `key` (items are plain values), created if `key` shows nothing. */
  array(key) {
    return transact(this.ydoc, () => {
      const [L, slot, shown] = this.container(key, Kind.ARRAY);
      return shown?.legacy !== undefined ? shown.legacy.value : L.array(slot);
    });
  }

  /** The map at `key`, created (a container entry) if `key` shows nothing. */
  map(key) {
    return transact(this.ydoc, () => {
      const [, slot, shown] = this.container(key, Kind.MAP);
      if (shown?.legacy !== undefined) return new LegacyMap(this.ydoc, shown.legacy.value);
      return new RecordMap(this.ydoc, this.clock, slot, { now: this.now });
    });
  }

  /** The map at `key` if it shows one, else null (nothing written). */
  mapAt(key) {
    const slot = this.child(key);
    const shown = new Layout(this.ydoc).shown(slot);
    if (shown.kind !== Kind.MAP) return null;
    if (shown.legacy !== undefined) return new LegacyMap(this.ydoc, shown.legacy.value);
    return new RecordMap(this.ydoc, this.clock, slot, { now: this.now });
  }

  container(key, kind) {
    const L = new Layout(this.ydoc);
    const slot = this.child(key);
    const shown = L.shown(slot);
    if (shown.kind === kind) return [L, slot, shown];
    if (shown.present) {
      throw new InvalidEdit(
        `field ${JSON.stringify(slot.join("."))} holds a ${KIND_NAMES[shown.kind]}, not a ${KIND_NAMES[kind]}`);
    }
    L.write(slot, kind, null, (w) => this.stamp(w));
    return [L, slot, null];
  }
}

function assign(editor, slot, value, atomic) {
  const plain = checkJson(value, slot.join(".")); // refuse before changing anything
  const L = new Layout(editor.ydoc);
  if (atomic) {
    L.write(slot, Kind.VALUE, plain, (w) => editor.stamp(w));
    return;
  }
  const shown = L.shown(slot);
  const legacy = shown.legacy?.value;
  const isMap = isPlainObject(plain);
  if (typeof plain === "string" && shown.kind === Kind.TEXT) {
    // Edit the text in place, minimally: replacing it would drop concurrent edits.
    replaceText(legacy ?? L.text(slot), plain);
  } else if (isMap && shown.kind === Kind.MAP) {
    const target = legacy !== undefined
      ? new LegacyMap(editor.ydoc, legacy)
      : new RecordMap(editor.ydoc, editor.clock, slot, { now: editor.now });
    mergeInto(target, plain);
  } else if (Array.isArray(plain) && shown.kind === Kind.ARRAY) {
    replaceArray(legacy ?? L.array(slot), plain, L.T);
  } else if (isMap) {
    L.write(slot, Kind.MAP, null, (w) => editor.stamp(w));
    const map = new RecordMap(editor.ydoc, editor.clock, slot, { now: editor.now });
    for (const [k, v] of Object.entries(plain)) map.set(k, v);
  } else if (Array.isArray(plain)) {
    L.write(slot, Kind.ARRAY, null, (w) => editor.stamp(w));
    if (plain.length) L.array(slot).push(plain);
  } else {
    L.write(slot, Kind.VALUE, plain, (w) => editor.stamp(w));
  }
}

/** Make `target` equal `value` key by key: unchanged keys are not written, missing ones deleted. */
function mergeInto(target, value) {
  const current = target.toJSON();
  for (const [key, item] of Object.entries(value)) {
    if (!hasOwn(current, key) || !samePlain(current[key], item)) target.set(key, item);
  }
  for (const key of Object.keys(current)) if (!hasOwn(value, key)) target.delete(key);
}

/**
 * A nested map of a layout v1 record (a Y.Map under its field in "fields"), edited in place
 * with Yjs map semantics (concurrent sets of one key resolve by Yjs client id), as Python does.
 * Same methods as RecordMap.
 */
export class LegacyMap {
  constructor(ydoc, ymap) {
    this.ydoc = ydoc;
    this.ymap = ymap;
    this.T = typesOf(ydoc);
  }

  get(key) {
    return this.ymap.has(key) ? toPlain(this.ymap.get(key), this.T) : undefined;
  }

  has(key) {
    return this.ymap.has(key);
  }

  kindOf(key) {
    if (!this.ymap.has(key)) return undefined;
    const value = this.ymap.get(key);
    if (value instanceof this.T.Text) return Kind.TEXT;
    if (value instanceof this.T.Map) return Kind.MAP;
    if (value instanceof this.T.Array) return Kind.ARRAY;
    return Kind.VALUE;
  }

  keys() {
    return [...this.ymap.keys()];
  }

  toJSON() {
    return toPlain(this.ymap, this.T);
  }

  set(key, value) {
    checkText(key, "key");
    const plain = checkJson(value, key);
    const current = this.ymap.get(key);
    transact(this.ydoc, () => {
      if (typeof plain === "string" && current instanceof this.T.Text) replaceText(current, plain);
      else this.ymap.set(key, this.toCrdt(plain));
    });
  }

  toCrdt(value) {
    if (Array.isArray(value)) return this.T.Array.from(value.map((v) => this.toCrdt(v)));
    if (isPlainObject(value)) {
      return new this.T.Map(Object.entries(value).map(([k, v]) => [k, this.toCrdt(v)]));
    }
    return value;
  }

  delete(key) {
    if (!this.ymap.has(key)) return false;
    transact(this.ydoc, () => this.ymap.delete(key));
    return true;
  }

  text(key) {
    return this.nested(key, this.T.Text, "text");
  }

  array(key) {
    return this.nested(key, this.T.Array, "list");
  }

  map(key) {
    return new LegacyMap(this.ydoc, this.nested(key, this.T.Map, "map"));
  }

  mapAt(key) {
    const value = this.ymap.get(key);
    return value instanceof this.T.Map ? new LegacyMap(this.ydoc, value) : null;
  }

  nested(key, Type, name) {
    checkText(key, "key");
    return transact(this.ydoc, () => {
      if (!this.ymap.has(key)) this.ymap.set(key, new Type());
      const value = this.ymap.get(key);
      if (!(value instanceof Type)) throw new InvalidEdit(`key ${JSON.stringify(key)} is not a ${name}`);
      return value;
    });
  }
}

// -- the record -------------------------------------------------------------------------------

/**
 * The fields of a record as an editor (`.get`, `.set`, `.delete`, `.text`, `.array`, `.map`).
 * `options.now` fixes the wall clock (ms) passed to `clock`; by default Date.now() per write.
 */
export function recordEditor(ydoc, clock, options = {}) {
  return new RecordMap(ydoc, clock, [], options);
}

/** The editor of the map that holds `slot`'s last key, creating maps on the way if `create`. */
function parentOf(ydoc, clock, slot, options, create) {
  let editor = recordEditor(ydoc, clock, options);
  for (const key of slot.slice(0, -1)) {
    editor = create ? editor.map(key) : editor.mapAt(key);
    if (editor === null) return null;
  }
  return editor;
}

/** Every field of the record that shows something, as plain values (Python `read_fields`). */
export function readRecord(ydoc) {
  return new Layout(ydoc).readMap([]);
}

/** The plain value at `path` ("status" or ["address", "zip"]), or undefined. */
export function readField(ydoc, path) {
  const slot = toSlot(path);
  const parent = parentOf(ydoc, null, slot, {}, false);
  return parent === null ? undefined : parent.get(slot[slot.length - 1]);
}

/** What `path` shows: "value", "text", "map", "array", or undefined (nothing). */
export function fieldKind(ydoc, path) {
  const slot = toSlot(path);
  const parent = parentOf(ydoc, null, slot, {}, false);
  return parent === null ? undefined : parent.kindOf(slot[slot.length - 1]);
}

/**
 * The record's conflicts, as Python's `Layout.conflicts()` lists them: what lost at which slot,
 * to what. Each is `{key, slot, lost, won}`; `lost` / `won` are `{kind, value, ts}` (`kind`:
 * "value", "deleted", "text", "map", "array"; `value`: the value or the content; `ts`: the
 * entry's key, whose replica id says who wrote it, or null when unknown). `key` identifies the
 * conflict in the record, the same on every replica. Ordered by slot, then key.
 */
export function recordConflicts(ydoc) {
  return new Layout(ydoc).conflicts();
}

/** Set the field at `path` (see RecordMap.set); maps on the way are created. One transaction. */
export function setField(ydoc, clock, path, value, { now, atomic = false } = {}) {
  const slot = toSlot(path);
  transact(ydoc, () =>
    parentOf(ydoc, clock, slot, { now }, true).set(slot[slot.length - 1], value, { atomic }));
}

/** Delete the field at `path`; false (nothing written) if it shows nothing. One transaction. */
export function deleteField(ydoc, clock, path, { now } = {}) {
  const slot = toSlot(path);
  return transact(ydoc, () => {
    const parent = parentOf(ydoc, clock, slot, { now }, false);
    return parent === null ? false : parent.delete(slot[slot.length - 1]);
  });
}

/**
 * The Y.Text of the text field at `path`, created if it shows nothing (a container entry, in
 * a transaction of its own); throws InvalidEdit if it shows a value, map or list. Edit it with
 * the Yjs API: positions are UTF-16 code units (Python's TextField counts characters).
 */
export function fieldText(ydoc, clock, path, { now } = {}) {
  const slot = toSlot(path);
  return transact(ydoc, () => parentOf(ydoc, clock, slot, { now }, true).text(slot[slot.length - 1]));
}

/** The Y.Array of the list field at `path` (items: plain values), created if it shows nothing. */
export function fieldArray(ydoc, clock, path, { now } = {}) {
  const slot = toSlot(path);
  return transact(ydoc, () => parentOf(ydoc, clock, slot, { now }, true).array(slot[slot.length - 1]));
}

/** The map field at `path` as an editor (RecordMap, or LegacyMap for a v1 map), created if it
 *  shows nothing. */
export function fieldMap(ydoc, clock, path, { now } = {}) {
  const slot = toSlot(path);
  return transact(ydoc, () => parentOf(ydoc, clock, slot, { now }, true).map(slot[slot.length - 1]));
}

/**
 * Delete the record (docs/records.md, "Deleting a record"): what this peer sees of it is
 * removed and a tombstone added to the root map "deleted", in one transaction; the deletion
 * wins over writes made without seeing it. Returns the tombstone's key (null if the record was
 * deleted already: nothing is written).
 */
export function deleteRecord(ydoc, clock, { now } = {}) {
  return transact(ydoc, () => {
    const layout = new Layout(ydoc);
    if (layout.deletion() !== null) return null;
    return layout.deleteRecord((latest) =>
      latest === null ? clock.tick(now ?? Date.now()) : clock.after(latest, now ?? Date.now()));
  });
}

/** The key of the record's tombstone ("<ms>.<counter>.<replica>": when, by whom), or null. */
export function recordDeletion(ydoc) {
  return new Layout(ydoc).deletion();
}

/**
 * Write one register entry at `path` following the writer's rules: `kind` "value" (with
 * `value`, stored whole), "deleted", or an empty "text" / "map" / "array". Whatever the slot
 * showed is replaced, even if nothing (lwwWrite / lwwDelete use it). Returns the entry's key.
 */
export function writeSlot(ydoc, clock, path, kind, value = null, { now } = {}) {
  const slot = toSlot(path);
  if (!KINDS.has(kind)) throw new InvalidEdit(`unknown kind ${JSON.stringify(kind)}`);
  const plain = kind === Kind.VALUE ? checkJson(value, slot.join(".")) : null;
  const stamp = (winner) => clock.after(winner, now ?? Date.now());
  return transact(ydoc, () => new Layout(ydoc).write(slot, kind, plain, stamp));
}
