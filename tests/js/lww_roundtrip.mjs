// Reads a record written by Python through crdt_sync/js/lww.mjs, then writes to it.
// stdin: JSON {update: base64 Yjs v1 update, replica: string, writes: [[field, value]...],
//              deletes: [field...], now: ms}
// stdout: JSON {before: fields, values: lwwValues before, winners: [fields lwwWinners lists],
//               after: fields, update: base64 update of the JS writes}
import * as Y from "yjs";
import {
  HybridClock,
  lwwDelete,
  lwwValues,
  lwwWinners,
  lwwWrite,
  recordFields,
} from "../../crdt_sync/js/lww.mjs";

const plain = (value) => {
  if (value instanceof Uint8Array) return { $bytes: Buffer.from(value).toString("base64") };
  if (Array.isArray(value)) return value.map(plain);
  if (value !== null && typeof value === "object") {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, plain(v)]));
  }
  return value;
};

const chunks = [];
for await (const chunk of process.stdin) chunks.push(chunk);
const input = JSON.parse(Buffer.concat(chunks).toString("utf8"));
const doc = new Y.Doc();
Y.applyUpdate(doc, Buffer.from(input.update, "base64"));
const before = plain(recordFields(doc));
const values = plain(lwwValues(doc));
const winners = [...lwwWinners(doc).keys()].sort();
const stateBefore = Y.encodeStateVector(doc);
const clock = new HybridClock(input.replica);
for (const [field, value] of input.writes) lwwWrite(doc, clock, field, value, { now: input.now });
for (const field of input.deletes) lwwDelete(doc, clock, field, { now: input.now });
const update = Y.encodeStateAsUpdate(doc, stateBefore);
process.stdout.write(JSON.stringify({
  before,
  values,
  winners,
  after: plain(recordFields(doc)),
  update: Buffer.from(update).toString("base64"),
}));
