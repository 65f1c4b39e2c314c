#!/usr/bin/env node
// sign.js — requests signed by http-signature (not by pgpod) sent to a pod's inbox:
// one good request and its variants that must be refused. Prints one line per case:
//   <case> <http status> <response body>
// Usage: node sign.js --url http://127.0.0.1:P/rpc/inbox --actor URL --key FILE --other-key FILE
//        node sign.js --url ... --actor URL --key FILE --friend-request
//          (one friend request as ACTOR, signed with KEY and presenting its public key)
'use strict';
const http = require('http');
const fs = require('fs');
const crypto = require('crypto');
const httpSignature = require('http-signature');

const args = process.argv.slice(2);
const opt = (name) => { const i = args.indexOf(name); return i >= 0 ? args[i + 1] : undefined; };
const url = new URL(opt('--url'));
const actor = opt('--actor');
const key = fs.readFileSync(opt('--key'), 'utf8');
const otherKey = opt('--other-key') ? fs.readFileSync(opt('--other-key'), 'utf8') : null;
const SIGNED = ['(request-target)', 'host', 'date', 'digest'];

function activity(extra) {
  return JSON.stringify(Object.assign({ id: crypto.randomUUID(), type: 'video.published', actor }, extra));
}
function digest(body) {
  return 'SHA-256=' + crypto.createHash('sha256').update(body).digest('base64');
}

// Sends body signed with signKey at date; tamper(headers) may change what is sent.
// Resolves [status, body, sentHeaders].
function send(body, { signKey = key, date = new Date(), sendBody = body, headers = null, sign = true } = {}) {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: url.hostname, port: url.port, path: url.pathname, method: 'POST' }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve([res.statusCode, Buffer.concat(chunks).toString(), sent]));
    });
    req.on('error', reject);
    let sent;
    if (headers) {
      for (const [k, v] of Object.entries(headers)) req.setHeader(k, v);
    } else {
      req.setHeader('Content-Type', 'application/json');
      req.setHeader('Date', date.toUTCString());
      req.setHeader('Digest', digest(body));
      if (sign) {
        httpSignature.sign(req, { key: signKey, keyId: actor + '#main-key', headers: SIGNED,
                                  authorizationHeaderName: 'Signature' });
      }
    }
    sent = req.getHeaders();
    req.end(sendBody);
  });
}

(async () => {
  const out = (name, [status, body]) => process.stdout.write(`${name} ${status} ${body}\n`);
  if (args.includes('--friend-request')) {
    const pub = crypto.createPublicKey(key).export({ type: 'spki', format: 'pem' });
    out('friend-request', await send(activity({ type: 'friend.request', public_key: pub })));
    return;
  }
  const uuid = crypto.randomUUID();
  const good = activity({ object: { uuid, name: 'Signed by http-signature', author: 'js' } });
  const first = await send(good);
  out('good', first);
  out('replayed', await send(good, { headers: first[2] }));
  out('retried', await send(good, { date: new Date(Date.now() + 1000) }));
  const other = activity({ object: { uuid: crypto.randomUUID(), name: 'Refused' } });
  out('forged', await send(other, { signKey: otherKey }));
  out('stale', await send(other, { date: new Date(Date.now() - 31 * 60 * 1000) }));
  out('future', await send(other, { date: new Date(Date.now() + 31 * 60 * 1000) }));
  out('digest', await send(other, { sendBody: other.replace('Refused', 'Changed') }));
  out('unsigned', await send(other, { sign: false }));
  process.stdout.write(`uuid ${uuid}\n`);
})().catch((e) => { console.error(e); process.exit(1); });
