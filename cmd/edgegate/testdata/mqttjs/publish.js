// Publishes COUNT bare-number readings (0, 1, 2, ...) at QoS 1 with MQTT.js on a persistent
// session, at most INFLIGHT unacknowledged, and exits 0 once every one was acknowledged.
// MQTT.js keeps what is unacknowledged across reconnects and sends it again when it
// connects, one at a time and without the DUP flag. Prints "acked N" as acknowledgements
// come.
//
// node publish.js URL CLIENT_ID TOPIC COUNT INFLIGHT PROTOCOL_VERSION
const mqtt = require('mqtt');

const [url, clientId, topic, countArg, inflightArg, versionArg] = process.argv.slice(2);
const count = Number(countArg);
const inflight = Number(inflightArg);
const protocolVersion = Number(versionArg);

const opts = { clientId, clean: false, reconnectPeriod: 100, connectTimeout: 5000, protocolVersion };
if (protocolVersion === 5) {
  opts.properties = { sessionExpiryInterval: 3600 };
}
const client = mqtt.connect(url, opts);
client.on('error', (err) => console.error('error: ' + err.message));

let sent = 0;
let acked = 0;
function pump() {
  while (sent < count && sent - acked < inflight) {
    const v = sent++;
    client.publish(topic, String(v), { qos: 1 }, (err) => {
      if (err) {
        console.error('publish ' + v + ': ' + err.message);
        process.exit(2);
      }
      acked++;
      console.log('acked ' + acked);
      if (acked === count) {
        client.end(false, () => process.exit(0));
        return;
      }
      pump();
    });
  }
}
client.once('connect', pump);
