// crdt-sync last-write-wins fields for JavaScript Yjs peers (yjs 13.6).
//
// Reads and writes the "lww" root map of a record document exactly as docs/lww.md describes:
//   key   "<ms:12 hex>.<counter:6 hex>.<replica>"   (string order = timestamp order)
//   value {f: field, v: value, b: baseKey|null}  or  {f: field, d: true, b: baseKey|null}
// Read: group entries by f, the greatest key wins, d: true means deleted; malformed entries are
// ignored. Write: a key greater than the field's winner (HLC), then delete every entry of the
// field that was seen, all in one transaction.
//
// Usage:
//   import { HybridClock, lwwValues, lwwWrite, recordFields } from "crdt-sync/lww.mjs";
//   const clock = new HybridClock("web-ana");         // persist clock.state() across restarts
//   lwwWrite(ydoc, clock, "status", "closed");
//   lwwWrite(ydoc, clock, "assignee", null, { deleted: true });
//   recordFields(ydoc)  // {...fields map, ...LWW values}

export const LWW_MAP = "lww";
export const FIELDS_MAP = "fields";
export const MAX_COUNTER = 0xffffff;
export const DEFAULT_MAX_SKEW_MS = 5 * 60 * 1000;

const KEY = /^[0-9a-f]{12}\.[0-9a-f]{6}\..+$/s;

/** Whether `key` is a canonical LWW timestamp key. */
export const isKey = (key) => typeof key === "string" && KEY.test(key);

/** Encode a timestamp as an LWW key. */
export const encodeKey = (ms, counter, replica) =>
  ms.toString(16).padStart(12, "0") + "." + counter.toString(16).padStart(6, "0") + "." + replica;

/** Decode an LWW key into [ms, counter, replica] (the replica id may contain dots). */
export const decodeKey = (key) => {
  const [ms, counter, ...replica] = key.split(".");
  return [parseInt(ms, 16), parseInt(counter, 16), replica.join(".")];
};

const next = (ms, counter) => (counter < MAX_COUNTER ? [ms, counter + 1] : [ms + 1, 0]);

const validEntry = (key, entry) =>
  isKey(key) &&
  typeof entry === "object" &&
  entry !== null &&
  !(entry instanceof Uint8Array) &&
  !Array.isArray(entry) &&
  typeof entry.f === "string" &&
  (entry.b === undefined || entry.b === null || typeof entry.b === "string");

/** field -> [winnerKey, entry] for every LWW field of the document. */
export function lwwWinners(ydoc) {
  const winners = new Map();
  ydoc.getMap(LWW_MAP).forEach((entry, key) => {
    if (!validEntry(key, entry)) return;
    const best = winners.get(entry.f);
    if (best === undefined || key > best[0]) winners.set(entry.f, [key, entry]);
  });
  return winners;
}

/** The current LWW values: {field: value}; deleted fields are absent. */
export function lwwValues(ydoc) {
  const values = {};
  for (const [field, [, entry]] of lwwWinners(ydoc)) {
    if (entry.d !== true) values[field] = entry.v;
  }
  return values;
}

/** A record's fields as crdt-sync reads them: the "fields" map, then LWW values over it. */
export function recordFields(ydoc) {
  return { ...ydoc.getMap(FIELDS_MAP).toJSON(), ...lwwValues(ydoc) };
}

/** A hybrid logical clock (docs/lww.md, "The hybrid logical clock"). */
export class HybridClock {
  constructor(replica, { maxSkewMs = DEFAULT_MAX_SKEW_MS, state = null } = {}) {
    if (typeof replica !== "string" || replica === "") throw new Error("replica id required");
    this.replica = replica;
    this.maxSkewMs = maxSkewMs;
    this.ms = 0;
    this.counter = 0;
    if (state !== null) [this.ms, this.counter] = decodeKey(state);
  }

  /** The clock position as a key, to persist and pass back as `state`. */
  state() {
    return encodeKey(this.ms, this.counter, this.replica);
  }

  /** A local event: a timestamp greater than any issued or observed before. */
  tick(now = Date.now()) {
    [this.ms, this.counter] = now > this.ms ? [now, 0] : next(this.ms, this.counter);
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
    if (winner === null) return this.tick(now);
    this.observe(winner, now);
    const ts = this.tick(now);
    if (ts > winner) return ts;
    const [ms, counter] = decodeKey(winner);
    let stepped = next(ms, counter);
    if (this.lastStep && (this.lastStep[0] > stepped[0] ||
        (this.lastStep[0] === stepped[0] && this.lastStep[1] >= stepped[1]))) {
      stepped = next(...this.lastStep);
    }
    this.lastStep = stepped;
    return encodeKey(...stepped, this.replica);
  }
}

/**
 * Write (or, with {deleted: true}, delete) an LWW field in one transaction.
 * Returns the key of the new entry.
 */
export function lwwWrite(ydoc, clock, field, value, { deleted = false, now = Date.now() } = {}) {
  if (typeof field !== "string") throw new Error("field name must be a string");
  const lww = ydoc.getMap(LWW_MAP);
  let written = null;
  ydoc.transact(() => {
    const seen = [];
    lww.forEach((entry, key) => {
      if (validEntry(key, entry) && entry.f === field) seen.push(key);
    });
    const winner = seen.length ? seen.reduce((a, b) => (a > b ? a : b)) : null;
    let key = clock.after(winner, now);
    while (lww.has(key)) key = clock.after(key, now);
    lww.set(key, deleted ? { f: field, d: true, b: winner } : { f: field, v: value, b: winner });
    for (const old of seen) lww.delete(old);
    written = key;
  });
  return written;
}

/** Delete an LWW field (a deletion entry that beats the current winner). */
export const lwwDelete = (ydoc, clock, field, options = {}) =>
  lwwWrite(ydoc, clock, field, undefined, { ...options, deleted: true });
