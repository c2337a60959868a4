// The Node reference for bench/ingest_bench.sh: the webhook edge as the seed
// guide (shared/seed/whatsapp-elevenlabs-setup-guide.md) writes it, in one
// express process. It verifies X-Hub-Signature-256 with crypto.createHmac over
// the raw body and timingSafeEqual, parses the JSON, appends the accepted body
// to a file and answers 200 "EVENT_RECEIVED" from the write callback.
//
// The append is there so both sides "keep" what they acknowledge, but it is
// NOT fsynced: the data sits in the page cache when Node says 200, while the
// bridge answers only after SQLite's WAL is fsynced. The report says so.
//
// env: WEBHOOK_SIGNATURE_SECRET (required), EVENTS_FILE (default ./events.ndjson),
// PORT (default 0: the kernel picks; the READY line tells which).
'use strict';
const crypto = require('crypto');
const fs = require('fs');
const express = require('express');

const secret = process.env.WEBHOOK_SIGNATURE_SECRET;
if (!secret) {
  console.error('WEBHOOK_SIGNATURE_SECRET is not set');
  process.exit(2);
}
const eventsFile = process.env.EVENTS_FILE || 'events.ndjson';

// The guide's verifyWhatsAppSignature, fed the raw bytes (the guide passes the
// parsed req.body, which cannot match Meta's signature once re-serialised).
function verifySignature(raw, header) {
  if (typeof header !== 'string' || !header.startsWith('sha256=')) return false;
  const expected = crypto.createHmac('sha256', secret).update(raw).digest('hex');
  const got = Buffer.from(header.slice('sha256='.length));
  const want = Buffer.from(expected);
  // timingSafeEqual throws on a length mismatch, so check that first.
  return got.length === want.length && crypto.timingSafeEqual(got, want);
}

const app = express();
// express.json keeps the raw bytes for the HMAC through its verify hook.
app.use(express.json({
  limit: '1mb',
  verify: (req, _res, buf) => { req.rawBody = buf; },
}));

app.post('/webhook/whatsapp', (req, res) => {
  if (!req.rawBody || !verifySignature(req.rawBody, req.headers['x-hub-signature-256'])) {
    return res.sendStatus(403);
  }
  const { entry } = req.body;
  if (!Array.isArray(entry)) return res.sendStatus(400);
  // One line per accepted delivery; answer once the write has been handed to the kernel.
  fs.appendFile(eventsFile, Buffer.concat([req.rawBody, Buffer.from('\n')]), (err) => {
    if (err) return res.sendStatus(500);
    res.status(200).send('EVENT_RECEIVED');
  });
});

// Malformed JSON lands here (express.json's 400), as in any express app.
app.use((err, _req, res, _next) => res.sendStatus(err.status || 500));

const server = app.listen(Number(process.env.PORT || 0), '127.0.0.1', () => {
  console.log(`READY node-reference http=127.0.0.1:${server.address().port}`);
});
process.on('SIGTERM', () => {
  server.close(() => process.exit(0));
  server.closeAllConnections(); // keep-alive sockets would hold close() open
});
