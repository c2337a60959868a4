// The Node reference as the seed guide deploys it: pm2 in cluster mode, i.e.
// Node's cluster module with one server.js process per core sharing the port.
// Prints one READY line once every worker listens (PORT must be set: a
// shared port 0 would mean one random port per worker).
'use strict';
const cluster = require('cluster');
const os = require('os');
const path = require('path');

if (!process.env.PORT || process.env.PORT === '0') {
  console.error('cluster.js: set PORT to a free port');
  process.exit(2);
}
const workers = Number(process.env.NODE_WORKERS || os.availableParallelism());
cluster.setupPrimary({ exec: path.join(__dirname, 'server.js'), silent: true });
let listening = 0;
for (let i = 0; i < workers; i++) cluster.fork();
cluster.on('listening', () => {
  if (++listening === workers) {
    console.log(`READY node-cluster http=127.0.0.1:${process.env.PORT} workers=${workers}`);
  }
});
process.on('SIGTERM', () => {
  for (const w of Object.values(cluster.workers)) w.process.kill('SIGTERM');
  cluster.on('exit', () => { if (Object.keys(cluster.workers).length === 0) process.exit(0); });
});
