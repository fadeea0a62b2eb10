// A device that nobody here wrote: MQTT.js, driven by the broker tests (see mqttjs_test.go).
// Usage: node client.js '<json options>'. Prints one JSON line per event to stdout and
// exits 0 when the scenario ran (assertions are the Go test's).
'use strict';
const mqtt = require('mqtt');

const o = JSON.parse(process.argv[2]);
const out = (ev) => process.stdout.write(JSON.stringify(ev) + '\n');
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function connect() {
  return mqtt.connect(o.url, {
    clientId: o.clientId,
    username: o.username,
    password: o.password,
    protocolVersion: o.protocolVersion || 4,
    clean: o.clean !== false,
    reconnectPeriod: o.reconnectPeriod || 200,
    connectTimeout: 5000,
    keepalive: 30,
  });
}

// publish sends one message and resolves with its outcome: the error MQTT.js reports
// (an MQTT 5 reason code >= 0x80 is an error), or null once acknowledged.
function publish(c, topic, payload, qos) {
  return new Promise((resolve) => {
    c.publish(topic, payload, { qos }, (err) => resolve(err ? String(err.code || err.message) : null));
  });
}

async function main() {
  const c = connect();
  let connects = 0;
  c.on('connect', (ack) => { connects++; out({ ev: 'connect', n: connects, sessionPresent: ack.sessionPresent }); });
  c.on('error', (err) => out({ ev: 'error', err: String(err.message) }));
  await new Promise((r) => c.once('connect', r));

  switch (o.scenario) {
  case 'burst': {
    // An offline queue replayed at once: n QoS 1 publishes without waiting.
    const t0 = Date.now();
    const results = await Promise.all(
      Array.from({ length: o.n }, (_, i) => publish(c, o.topic, JSON.stringify({ value: i, id: `${o.clientId}-${i}` }), 1)));
    out({ ev: 'done', ms: Date.now() - t0, errors: results.filter((r) => r !== null), acked: results.filter((r) => r === null).length });
    break;
  }
  case 'refused': {
    // Refused publishes, then valid ones, then reconnects: an unacknowledged message is
    // resent at every reconnect, forever, by MQTT.js.
    const pending = [];
    for (let i = 0; i < o.n; i++) pending.push(publish(c, o.topic, o.bad, 1));
    const good = await Promise.race([
      Promise.all(Array.from({ length: o.n }, (_, i) => publish(c, o.topic, JSON.stringify({ value: i }), 1))),
      sleep(5000).then(() => 'timeout'),
    ]);
    out({ ev: 'good', result: good === 'timeout' ? 'timeout' : 'acked' });
    for (let r = 0; r < o.reconnects; r++) {
      c.stream.destroy();
      const again = await Promise.race([new Promise((res) => c.once('connect', () => res(true))), sleep(10000).then(() => false)]);
      if (!again) { out({ ev: 'reconnect', result: 'timeout' }); break; }
      await sleep(300);
    }
    const settled = await Promise.race([Promise.all(pending).then(() => 'acked'), sleep(1000).then(() => 'pending')]);
    out({ ev: 'done', refused: settled, connects });
    break;
  }
  case 'publish': {
    // n QoS 1 publishes to o.topic, one at a time; each result is null (acknowledged) or
    // the error MQTT.js reports (an MQTT 5 reason code >= 0x80 is final for it).
    const results = [];
    for (let i = 0; i < o.n; i++) {
      results.push(await Promise.race([publish(c, o.topic, o.payload, 1), sleep(5000).then(() => 'timeout')]));
    }
    out({ ev: 'done', results });
    break;
  }
  default:
    throw new Error('unknown scenario ' + o.scenario);
  }
  await Promise.race([new Promise((r) => c.end(false, {}, r)), sleep(2000).then(() => c.end(true))]);
}

main().then(() => process.exit(0), (err) => { out({ ev: 'fatal', err: String(err && err.stack || err) }); process.exit(1); });
