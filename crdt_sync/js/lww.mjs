// crdt-sync last-write-wins fields for JavaScript Yjs peers (yjs 13.6): the top-level slots of
// a record written as one value each (docs/lww.md). Since layout v2 this is a thin layer over
// record.mjs (docs/records.md), which reads and writes every kind of field; new code can use
// record.mjs directly.
//
//   key   "<ms:12 hex>.<counter:6 hex>.<replica>"   (timestamp order = code point order)
//   value {f, v, b}  a value, {f, d: true, b}  a deletion, {f, t: "text"|"map"|"array", b}  a
//         container (record.mjs); f is the field name, or the list of names of a nested slot
//
//   import { HybridClock, lwwWrite, lwwDelete, recordFields } from "crdt-sync/lww.mjs";
//   const clock = new HybridClock("web-ana");         // persist clock.state() across restarts
//   lwwWrite(ydoc, clock, "status", "closed");        // stored whole, the most recent write wins
//   lwwDelete(ydoc, clock, "assignee");
//   recordFields(ydoc)                                 // every field, as Python reads the record
import { Kind, parseEntry, readRecord, compareKeys, writeSlot } from "./record.mjs";

export {
  DEFAULT_MAX_SKEW_MS,
  FIELDS_ROOT as FIELDS_MAP,
  HybridClock,
  LWW_ROOT as LWW_MAP,
  MAX_COUNTER,
  compareKeys,
  decodeKey,
  encodeKey,
  isKey,
} from "./record.mjs";

/**
 * field -> [winnerKey, entry] for every top-level field that has entries (`["status"]` is the
 * field "status"). The winner may be a value, a deletion or a container entry; nested slots
 * (`f` a list of two names or more) and malformed entries are skipped.
 */
export function lwwWinners(ydoc) {
  const winners = new Map();
  ydoc.getMap("lww").forEach((raw, key) => {
    const entry = parseEntry(key, raw);
    if (entry === null || entry.slot.length !== 1) return;
    const [field] = entry.slot;
    const best = winners.get(field);
    if (best === undefined || compareKeys(key, best[0]) > 0) winners.set(field, [key, raw]);
  });
  return winners;
}

/**
 * The top-level fields whose winner is a value entry: {field: value}. Deleted fields and
 * texts, maps and lists are absent: `recordFields` (readRecord) shows all of them.
 */
export function lwwValues(ydoc) {
  const values = {};
  for (const [field, [key, raw]] of lwwWinners(ydoc)) {
    const entry = parseEntry(key, raw);
    if (entry.kind === Kind.VALUE) values[field] = entry.value;
  }
  return values;
}

/** A record's fields as crdt-sync reads them (record.mjs `readRecord`, layout v1 included). */
export const recordFields = (ydoc) => readRecord(ydoc);

/**
 * Write the field (a name, or a list of names for a key of a nested map) as one value, stored
 * whole, or with {deleted: true} delete it, in one transaction that follows the writer's rules
 * of docs/records.md. Returns the key of the new entry.
 */
export function lwwWrite(ydoc, clock, field, value, { deleted = false, now = Date.now() } = {}) {
  return deleted
    ? writeSlot(ydoc, clock, field, Kind.DELETED, null, { now })
    : writeSlot(ydoc, clock, field, Kind.VALUE, value, { now });
}

/** Delete a field: a deletion entry that beats the current winner. Returns its key. */
export const lwwDelete = (ydoc, clock, field, options = {}) =>
  lwwWrite(ydoc, clock, field, undefined, { ...options, deleted: true });
