// Streams EventService.GetTTPEvents from a ttp-processor and prints each event as one line of
// protobuf JSON (camelCase, 64-bit integers as strings, RFC 3339 timestamps, absent fields
// left out), the form the other sinks write.
//
//   node ttp_events.js HOST:PORT START_LEDGER END_LEDGER
'use strict';

const path = require('path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const [address, start, end] = process.argv.slice(2);
if (!address || !start || !end) {
  console.error('usage: node ttp_events.js HOST:PORT START_LEDGER END_LEDGER');
  process.exit(2);
}

const protoRoot = path.join(__dirname, '..', '..', '..', 'proto');
const definition = protoLoader.loadSync('token_transfer_service/event_service.proto', {
  includeDirs: [protoRoot],
  keepCase: false,
  longs: String,
  enums: String,
  bytes: String,
  defaults: false,
  oneofs: false,
});
const pkg = grpc.loadPackageDefinition(definition);
const client = new pkg.token_transfer_service.EventService(address, grpc.credentials.createInsecure());

function timestamp(ts) {
  const ms = Number(ts.seconds || 0) * 1000 + Math.floor((ts.nanos || 0) / 1e6);
  const iso = new Date(ms).toISOString();
  return ts.nanos ? iso : iso.replace('.000Z', 'Z');
}

// proto-loader gives plain objects; Timestamp is the one well-known type needing its JSON form.
function toJson(value, key) {
  if (key === 'closedAt' && value && typeof value === 'object') return timestamp(value);
  if (Array.isArray(value)) return value.map((v) => toJson(v));
  if (value && typeof value === 'object') {
    const out = {};
    for (const [k, v] of Object.entries(value)) out[k] = toJson(v, k);
    return out;
  }
  return value;
}

const stream = client.GetTTPEvents({ startLedger: Number(start), endLedger: Number(end) });
stream.on('data', (event) => process.stdout.write(JSON.stringify(toJson(event)) + '\n'));
stream.on('error', (err) => {
  console.error(`GetTTPEvents: ${err.message}`);
  process.exit(1);
});
stream.on('end', () => client.close());
