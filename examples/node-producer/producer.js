#!/usr/bin/env node
'use strict';
// Submit a plan to devline from Node and follow it to completion, as `devline submit
// --wait` does: PlanSubmitted (Avro single-object encoding, key = plan id) on
// <prefix>devline.plans, then the plan's events on <prefix>devline.events.
// See README.md here and the "Wire format" section of devline's README.

const crypto = require('crypto');
const fs = require('fs');
const path = require('path');
const { Kafka, Partitioners, logLevel } = require('kafkajs');
const YAML = require('yaml');
const { loadEventType, encodeSingleObject, singleObjectDecoder } = require('./wire');
const { registryClient, encodeConfluent, confluentDecoder } = require('./registry');

const DONE = 0;
const REJECTED = 1; // also: invalid plan or arguments
const TIMED_OUT = 2;
const STALLED = 3;
const FAILED = 4; // Kafka unreachable, or another error

const USAGE = `usage: node producer.js PLAN [--timeout SECONDS] [--schemas DIR] [--dry-run]

Submit PLAN (a devline plan file, YAML or JSON: project, name, files, options, optional
plan_id) to devline and wait until it is done and its files are written.

options:
  --timeout SECONDS  how long to wait for the plan to finish (default 120)
  --schemas DIR      devline's schemas/ folder (default: ../../schemas from this script)
  --dry-run          print the PlanSubmitted as hex (single-object encoding) and exit;
                     no Kafka, no registry
  -h, --help         show this help

environment (the names devline itself reads):
  DEVLINE_BOOTSTRAP         Kafka bootstrap servers (default 127.0.0.1:9092)
  DEVLINE_TOPIC_PREFIX      prefix of every devline topic and group (default none)
  DEVLINE_SECURITY_PROTOCOL PLAINTEXT (default), SSL, SASL_PLAINTEXT or SASL_SSL
  DEVLINE_SASL_MECHANISM    PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512
  DEVLINE_SASL_USERNAME, DEVLINE_SASL_PASSWORD   SASL credentials
  DEVLINE_SSL_CAFILE        CA bundle for SSL (default: Node's trust store)
  DEVLINE_REGISTRY_URL      a Confluent-compatible schema registry (user:password@ in
                            the URL for basic auth): records are written in Confluent's
                            wire format, as devline writes them then; unset: Avro
                            single-object encoding

exit codes: 0 done, 1 invalid or rejected, 2 timed out, 3 stalled on a dead letter,
4 any other error (e.g. no broker)`;

function parseArgs(argv) {
  const opts = { timeout: 120, schemas: path.join(__dirname, '..', '..', 'schemas'), dryRun: false };
  const rest = [];
  for (let i = 0; i < argv.length; i += 1) {
    const arg = argv[i];
    if (arg === '-h' || arg === '--help') opts.help = true;
    else if (arg === '--dry-run') opts.dryRun = true;
    else if (arg === '--timeout' || arg === '--schemas') {
      if (i + 1 >= argv.length) throw new Error(`${arg} needs a value`);
      opts[arg.slice(2)] = argv[(i += 1)];
    } else if (arg.startsWith('-')) throw new Error(`unknown option ${arg}`);
    else rest.push(arg);
  }
  opts.timeout = Number(opts.timeout);
  if (!(opts.timeout > 0)) throw new Error('--timeout must be a positive number of seconds');
  if (!opts.help && rest.length !== 1) throw new Error('expected exactly one PLAN file');
  [opts.plan] = rest;
  return opts;
}

/** A plan document (what `devline submit` reads) as a PlanSubmitted record. */
function planRecord(doc) {
  if (!doc || typeof doc !== 'object' || Array.isArray(doc)) {
    throw new Error("a plan is a mapping with 'project', 'name' and 'files'");
  }
  if (!Array.isArray(doc.files)) throw new Error('files: expected a list');
  const planId = String(doc.plan_id || doc.id || crypto.randomBytes(6).toString('hex'));
  const options = {};
  for (const [k, v] of Object.entries(doc.options || {})) options[k] = String(v);
  return {
    plan_id: planId,
    project: doc.project || 'default',
    name: doc.name || planId,
    files: doc.files.map((f) => ({
      path: f.path,
      language: f.language ?? null,
      description: f.description ?? '',
      depends_on: f.depends_on ?? [],
      content: f.content ?? null,
      cost: f.cost ?? null,
      executor: f.executor ?? null,
      // avsc fills the Simulate fields that are left out with their schema defaults.
      simulate: f.simulate ?? null,
    })),
    options,
    submitted_at: Date.now(),
    submitted_by: doc.submitted_by ?? 'node-producer',
    files_ref: null,
  };
}

function kafkaConfig(env) {
  const protocol = (env.DEVLINE_SECURITY_PROTOCOL || 'PLAINTEXT').toUpperCase();
  const allowed = ['PLAINTEXT', 'SSL', 'SASL_PLAINTEXT', 'SASL_SSL'];
  if (!allowed.includes(protocol)) {
    throw new Error(`DEVLINE_SECURITY_PROTOCOL=${protocol}: expected one of ${allowed.join(', ')}`);
  }
  const config = {
    clientId: 'devline-node-producer',
    brokers: (env.DEVLINE_BOOTSTRAP || '127.0.0.1:9092').split(',').map((b) => b.trim()),
    logLevel: logLevel.NOTHING, // failures are reported once, by this script
    connectionTimeout: 5000,
  };
  if (protocol.endsWith('SSL')) {
    config.ssl = env.DEVLINE_SSL_CAFILE ? { ca: [fs.readFileSync(env.DEVLINE_SSL_CAFILE, 'utf8')] } : true;
  }
  if (protocol.startsWith('SASL')) {
    config.sasl = {
      mechanism: (env.DEVLINE_SASL_MECHANISM || 'PLAIN').toLowerCase(),
      username: env.DEVLINE_SASL_USERNAME || '',
      password: env.DEVLINE_SASL_PASSWORD || '',
    };
  }
  return config;
}

/** Follow the plan's events from `start` offsets until a final verdict or `within` ms. */
async function follow(kafka, prefix, planId, decode, start, within) {
  const topic = `${prefix}devline.events`;
  // A group of its own (kafkajs has no group-less consumer), prefixed like devline's groups.
  const groupId = `${prefix}devline-node-producer-${crypto.randomBytes(6).toString('hex')}`;
  const consumer = kafka.consumer({ groupId });
  let total = 0;
  const done = new Set();
  let settle;
  const finished = new Promise((resolve) => { settle = resolve; });
  const timer = setTimeout(() => settle({ code: TIMED_OUT }), within);
  await consumer.connect();
  try {
    await consumer.subscribe({ topic, fromBeginning: false });
    await consumer.run({
      autoCommit: false, // a reader of its own: nothing to resume, so no offsets left behind
      eachMessage: async ({ partition, message }) => {
        if (!message.key || message.key.toString() !== planId) return;
        let event;
        try {
          event = await decode(message.value);
        } catch (err) {
          if (err.message.startsWith('schema registry')) throw err; // retried by kafkajs
          return; // not an event this version knows: `devline tail` shows it
        }
        if (!event) return;
        const ev = event.value;
        switch (event.eventType) {
          case 'PlanAccepted':
            total = ev.tasks.length;
            console.log(`accepted: ${total} files, critical path ${ev.critical_path.length}`);
            break;
          case 'PlanRejected':
            console.log(`rejected: ${ev.reason}`);
            settle({ code: REJECTED });
            break;
          case 'TaskCompleted':
            if (!done.has(ev.task_id)) {
              done.add(ev.task_id);
              console.log(`[${done.size}/${total}] ${ev.path}${ev.cached ? ' (cached)' : ''}`);
            }
            break;
          case 'TaskDeadLettered':
            console.log(`dead letter: ${ev.path} after ${ev.attempts} attempts: ${ev.reason}`);
            settle({ code: STALLED });
            break;
          case 'PlanCompleted':
            console.log(`plan ${planId} done: ${ev.files} files, makespan ${(ev.makespan_ms / 1000).toFixed(2)}s`);
            settle({ code: DONE, partition, offset: Number(message.offset) });
            break;
          default:
        }
      },
    });
    // Read from the offsets seen before the plan was sent: nothing after them is missed,
    // however long the group takes to join.
    for (const { partition, offset } of start) consumer.seek({ topic, partition, offset });
    return await finished;
  } finally {
    clearTimeout(timer);
    await consumer.disconnect();
  }
}

/** `op()`, again while it fails with an error kafkajs calls retriable (e.g. a partition
 * whose leader is being elected, just after the topic was created), for up to `within` ms. */
async function retrying(op, within = 15000) {
  const deadline = Date.now() + within;
  for (;;) {
    try {
      return await op();
    } catch (err) {
      if (!err.retriable || Date.now() > deadline) throw err;
      await new Promise((resolve) => { setTimeout(resolve, 250); });
    }
  }
}

/** The file sink writes files as a stage of its own: wait until it is past the plan. */
async function waitForSink(admin, groupId, topic, partition, offset, within) {
  const deadline = Date.now() + within;
  while (Date.now() < deadline) {
    const [found] = await retrying(() => admin.fetchOffsets({ groupId, topics: [topic] }));
    const at = found && found.partitions.find((p) => p.partition === partition);
    if (at && Number(at.offset) > offset) return true;
    await new Promise((resolve) => { setTimeout(resolve, 200); });
  }
  return false;
}

async function main(argv, env) {
  let opts;
  try {
    opts = parseArgs(argv);
  } catch (err) {
    console.error(`${err.message}\n\n${USAGE}`);
    return REJECTED;
  }
  if (opts.help) {
    console.log(USAGE);
    return DONE;
  }
  const load = (name) => loadEventType(opts.schemas, name);
  let value;
  let record;
  let submitted;
  try {
    submitted = load('plan_submitted.avsc');
    record = planRecord(YAML.parse(fs.readFileSync(opts.plan, 'utf8')));
    value = encodeSingleObject(submitted, record); // also checks the record against the schema
  } catch (err) {
    console.error(`invalid plan ${opts.plan}: ${err.message}`);
    return REJECTED;
  }
  if (opts.dryRun) {
    console.log(value.toString('hex'));
    return DONE;
  }
  const answers = ['plan_accepted.avsc', 'plan_rejected.avsc', 'task_completed.avsc',
    'task_dead_lettered.avsc', 'plan_completed.avsc'].map(load);
  const single = singleObjectDecoder(answers);
  let decode = async (buf) => single(buf);
  if (env.DEVLINE_REGISTRY_URL) {
    // devline writes Confluent-framed records when it has a registry: so does this, and it
    // reads both framings (a process without the registry may have written some).
    const registry = registryClient(env.DEVLINE_REGISTRY_URL);
    value = encodeConfluent(submitted, await registry.register(submitted.type.name, submitted.text), record);
    const framed = confluentDecoder(registry, answers);
    decode = async (buf) => (buf && buf[0] === 0 ? framed(buf) : single(buf));
  }
  const prefix = env.DEVLINE_TOPIC_PREFIX || '';
  const events = `${prefix}devline.events`;
  const kafka = new Kafka(kafkaConfig(env));
  const admin = kafka.admin();
  const producer = kafka.producer({ createPartitioner: Partitioners.DefaultPartitioner });
  try {
    await admin.connect();
  } catch (err) {
    throw new Error(`cannot reach Kafka at ${kafkaConfig(env).brokers.join(',')} (DEVLINE_BOOTSTRAP): ${err.message}`);
  }
  try {
    const start = await retrying(() => admin.fetchTopicOffsets(events));
    const following = follow(kafka, prefix, record.plan_id, decode, start, opts.timeout * 1000);
    following.catch(() => {}); // awaited below; meanwhile a failure is not "unhandled"
    await producer.connect();
    // Key = plan id, hashed by the Java-compatible murmur2 partitioner, as devline's own
    // producers do. The headers are for people and tools; devline decodes the value.
    await producer.send({
      topic: `${prefix}devline.plans`,
      acks: -1,
      messages: [{ key: record.plan_id, value, headers: {
        'event-type': 'PlanSubmitted', 'plan-id': record.plan_id, 'trace-id': record.plan_id } }],
    });
    await producer.disconnect();
    console.log(record.plan_id);
    const result = await following;
    if (result.code === TIMED_OUT) {
      console.error(`timed out after ${opts.timeout}s (is \`devline run\` running? A plan id `
        + 'accepted before with the same content gets no new answer: see `devline status`)');
    }
    if (result.code !== DONE) return result.code;
    const sink = `${prefix}devline-sink`;
    if (await waitForSink(admin, sink, events, result.partition, result.offset, 30000)) {
      console.log('files written');
    } else {
      console.error('the file sink has not written the files within 30s (is `devline run` running?)');
    }
    return DONE;
  } finally {
    await admin.disconnect();
  }
}

if (require.main === module) {
  main(process.argv.slice(2), process.env).then(
    (code) => { process.exitCode = code; },
    (err) => { console.error(`error: ${err.message}`); process.exitCode = FAILED; },
  );
}

module.exports = { main, planRecord, kafkaConfig };
