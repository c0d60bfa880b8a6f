'use strict';
// devline's wire format without a schema registry: Avro single-object encoding.
//
//   C3 01 | 8-byte CRC-64-AVRO fingerprint (little-endian) | Avro binary of the record
//
// The fingerprint is of the schema's Parsing Canonical Form, so devline finds the schema
// from the fingerprint alone. avsc's `type.fingerprint()` knows only hashes Node's crypto
// has (md5, sha256), not CRC-64-AVRO, so it is computed here as the Avro spec gives it.

const fs = require('fs');
const path = require('path');
const avsc = require('avsc');

const MAGIC = Buffer.from([0xc3, 0x01]);
const EMPTY = 0xc15d213aa4d7a795n; // the Avro spec's CRC-64-AVRO seed and polynomial
const MASK = 0xffffffffffffffffn;

const TABLE = Array.from({ length: 256 }, (_, i) => {
  let fp = BigInt(i);
  for (let j = 0; j < 8; j += 1) fp = (fp >> 1n) ^ (EMPTY & -(fp & 1n) & MASK);
  return fp;
});

/** CRC-64-AVRO of a string's UTF-8 bytes, as 8 little-endian bytes. */
function crc64Avro(text) {
  let fp = EMPTY;
  for (const byte of Buffer.from(text, 'utf8')) {
    fp = (fp >> 8n) ^ TABLE[Number((fp ^ BigInt(byte)) & 0xffn)];
  }
  const out = Buffer.alloc(8);
  out.writeBigUInt64LE(fp);
  return out;
}

/** An event type from devline's `schemas/` folder: its avsc type and fingerprint. */
function loadEventType(schemaDir, fileName) {
  const file = path.join(schemaDir, fileName);
  const schema = JSON.parse(fs.readFileSync(file, 'utf8'));
  const type = avsc.Type.forSchema(schema);
  // avsc's getSchema() without options is the Parsing Canonical Form.
  const canonical = JSON.stringify(type.getSchema());
  // The whole schema (defaults and docs too) is what a registry is given.
  return { type, canonical, fingerprint: crc64Avro(canonical), text: JSON.stringify(schema) };
}

/** The single-object encoding of `record`; throws naming the first invalid field. */
function encodeSingleObject(eventType, record) {
  const problems = [];
  eventType.type.isValid(record, {
    errorHook: (fieldPath, value) => problems.push(`${fieldPath.join('.') || '(record)'}=${JSON.stringify(value)}`),
  });
  if (problems.length) {
    throw new Error(`record does not match ${eventType.type.name}: ${problems.slice(0, 3).join(', ')}`);
  }
  return Buffer.concat([MAGIC, eventType.fingerprint, eventType.type.toBuffer(record)]);
}

/**
 * A decoder for single-object records of the given event types: `decode(buf)` returns
 * {eventType, value}, or null for bytes of any other type or format (skip those).
 */
function singleObjectDecoder(eventTypes) {
  const byFingerprint = new Map(eventTypes.map((t) => [t.fingerprint.toString('hex'), t]));
  return (buf) => {
    if (!buf || buf.length < 10 || buf[0] !== 0xc3 || buf[1] !== 0x01) return null;
    const found = byFingerprint.get(buf.subarray(2, 10).toString('hex'));
    if (!found) return null;
    return { eventType: found.type.name.split('.').pop(), value: found.type.fromBuffer(buf.subarray(10)) };
  };
}

module.exports = { MAGIC, crc64Avro, loadEventType, encodeSingleObject, singleObjectDecoder };
