'use strict';
// devline's wire format with a schema registry (DEVLINE_REGISTRY_URL): Confluent's.
//
//   00 | 4-byte schema id (big-endian) | Avro binary of the record
//
// Each event type is registered under its record's full name (RecordNameStrategy), e.g.
// subject dev.devline.PlanSubmitted, as devline registers them. Reading, the writer's
// schema is fetched by id and resolved against ours (avsc resolvers), so a record written
// with an older or newer compatible schema still reads.

const avsc = require('avsc');

const MEDIA = 'application/vnd.schemaregistry.v1+json';

/** A client for the two calls devline's codec makes; credentials in the URL become basic
 * auth and never appear in an error message. */
function registryClient(url, fetchImpl = fetch) {
  const parsed = new URL(url);
  const headers = { Accept: MEDIA, 'Content-Type': MEDIA };
  if (parsed.username || parsed.password) {
    const user = decodeURIComponent(parsed.username);
    const pass = decodeURIComponent(parsed.password);
    headers.Authorization = `Basic ${Buffer.from(`${user}:${pass}`).toString('base64')}`;
    parsed.username = '';
    parsed.password = '';
  }
  const base = parsed.toString().replace(/\/$/, '');
  async function call(method, path, body) {
    let res;
    try {
      res = await fetchImpl(`${base}${path}`, { method, headers, body: body && JSON.stringify(body) });
    } catch (err) {
      throw new Error(`schema registry at ${base} unreachable: ${err.cause?.code || err.cause?.message || err.message}`);
    }
    const text = await res.text();
    if (!res.ok) {
      throw new Error(`schema registry at ${base}: ${method} ${path} -> HTTP ${res.status} ${text.slice(0, 200)}`);
    }
    return JSON.parse(text);
  }
  const ids = new Map(); // subject -> id
  const schemas = new Map(); // id -> promise of the writer's avsc type
  return {
    base,
    /** The id of `schemaText` under `subject` (registered if new; cached). */
    async register(subject, schemaText) {
      if (!ids.has(subject)) {
        const found = await call('POST', `/subjects/${encodeURIComponent(subject)}/versions`, { schema: schemaText });
        ids.set(subject, found.id);
      }
      return ids.get(subject);
    },
    /** The writer schema with this id, as an avsc type (cached). */
    writerType(id) {
      if (!schemas.has(id)) {
        const loading = call('GET', `/schemas/ids/${id}`).then((found) => {
          if (found.schemaType && found.schemaType !== 'AVRO') throw new Error(`schema id ${id} is ${found.schemaType}, not Avro`);
          return avsc.Type.forSchema(JSON.parse(found.schema));
        });
        loading.catch(() => schemas.delete(id)); // a failed fetch is tried again next time
        schemas.set(id, loading);
      }
      return schemas.get(id);
    },
  };
}

/** Confluent framing of `record` written with `eventType` under registry schema `id`. */
function encodeConfluent(eventType, id, record) {
  const head = Buffer.alloc(5);
  head.writeUInt32BE(id, 1);
  return Buffer.concat([head, eventType.type.toBuffer(record)]);
}

/**
 * A decoder for Confluent-framed records of the given event types: `await decode(buf)`
 * returns {eventType, value}, or null for any other type or format (skip those).
 */
function confluentDecoder(registry, eventTypes) {
  const byName = new Map(eventTypes.map((t) => [t.type.name, t]));
  const resolvers = new Map(); // id -> {eventType, resolver} | null
  return async (buf) => {
    if (!buf || buf.length < 5 || buf[0] !== 0) return null;
    const id = buf.readUInt32BE(1);
    if (!resolvers.has(id)) {
      const writer = await registry.writerType(id);
      const ours = byName.get(writer.name);
      resolvers.set(id, ours ? { ours, resolver: ours.type.createResolver(writer) } : null);
    }
    const found = resolvers.get(id);
    if (!found) return null;
    return { eventType: found.ours.type.name.split('.').pop(), value: found.ours.type.fromBuffer(buf.subarray(5), found.resolver) };
  };
}

module.exports = { registryClient, encodeConfluent, confluentDecoder };
