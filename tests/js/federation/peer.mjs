#!/usr/bin/env node
// peer.mjs — a federation peer that is not a pgpod pod: its own RSA key, requests
// signed with @misskey-dev/node-http-message-signatures (the library Misskey uses in
// place of http-signature), an actor document at its keyId's URL (content negotiation
// on Accept, as Mastodon serves it), and an inbox that verifies what a pod sends it the
// way such peers do: it dereferences the keyId (GET with Accept:
// application/activity+json), takes publicKey.publicKeyPem, checks Digest (RFC 3230)
// and the draft signature.
//   GET  /users/peer      the actor document (406 unless ActivityStreams JSON is asked)
//   POST /rpc/inbox       the peer's inbox; answers 202, or /control's status
//   POST /send            {activity, host, date, digest, target, keyId, sign}: signs and
//                         POSTs a request to the pod (--pod), answers {status, body}
//   POST /control         {"status": N, "retry_after": "S"} for the inbox's answers
//   GET  /stats           counters as JSON
// Usage: node peer.mjs --port N --pod http://127.0.0.1:H --key FILE
import http from 'node:http';
import fs from 'node:fs';
import crypto from 'node:crypto';
import {
  signAsDraftToRequest, genRFC3230DigestHeader, parseRequestSignature, verifyDraftSignature, verifyDigestHeader,
} from '@misskey-dev/node-http-message-signatures';

const args = process.argv.slice(2);
const opt = (name, dflt) => { const i = args.indexOf(name); return i >= 0 ? args[i + 1] : dflt; };
const port = Number(opt('--port'));
const pod = new URL(opt('--pod'));
const privateKeyPem = fs.readFileSync(opt('--key'), 'utf8');
const publicKeyPem = crypto.createPublicKey(privateKeyPem).export({ type: 'spki', format: 'pem' });
const me = `http://127.0.0.1:${port}`;
const actorId = `${me}/users/peer`;
const keyId = `${actorId}#main-key`;

const stats = {
  actor_gets: 0, actor_refused: 0, inbox: 0, inbox_verified: 0, inbox_failed: 0, last_error: null,
  key_fetch_accept: null, key_fetch_type: null, types: {},
};
let inboxStatus = 202;
let retryAfter = null;

const readBody = (req) => new Promise((resolve) => {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => resolve(Buffer.concat(chunks)));
});

function get(url, headers) {
  return new Promise((resolve, reject) => {
    http.get(url, { headers }, (res) => {
      readBody(res).then((b) => resolve([res.statusCode, res.headers, b.toString()]));
    }).on('error', reject);
  });
}

// Signs and sends one request to the pod, as a Misskey-style peer would.
async function send(o) {
  const body = o.body ?? JSON.stringify(Object.assign({ id: crypto.randomUUID(), actor: me }, o.activity));
  const target = o.target ?? '/rpc/inbox';
  const headers = { Date: o.date ?? new Date().toUTCString(), Host: o.host ?? pod.host, 'Content-Type': 'application/json' };
  if (o.digest === 'lower') {
    headers.Digest = (await genRFC3230DigestHeader(body, 'SHA-256')).replace(/^SHA-256=/, 'sha-256=');
  } else if (o.digest === 'both') {
    headers.Digest = `${await genRFC3230DigestHeader(body, 'SHA-256')},${await genRFC3230DigestHeader(body, 'SHA-512')}`;
  } else if (o.digest === 'sha512') {
    headers.Digest = await genRFC3230DigestHeader(body, 'SHA-512');
  } else {
    headers.Digest = await genRFC3230DigestHeader(body, 'SHA-256');
  }
  // a relative url keeps the query in the request-target (the library takes only the
  // pathname of an absolute one)
  const request = { url: o.sign_target ?? target, method: 'POST', headers, body };
  if (o.sign !== false) {
    await signAsDraftToRequest(request, { keyId: o.keyId ?? keyId, privateKeyPem },
                               ['(request-target)', 'host', 'date', 'digest']);
  }
  return new Promise((resolve, reject) => {
    const req = http.request({ host: pod.hostname, port: pod.port, path: target, method: 'POST',
                               headers: request.headers }, (res) => {
      readBody(res).then((b) => resolve({ status: res.statusCode, body: b.toString(), retry_after: res.headers['retry-after'] ?? null }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

// The peer's inbox: verifies a pod's request as Misskey-style software does.
async function inbox(req, raw) {
  stats.inbox++;
  try {
    const activity = JSON.parse(raw.toString());
    stats.types[activity.type] = (stats.types[activity.type] ?? 0) + 1;
    if (!(await verifyDigestHeader(req, raw, true))) throw new Error('digest does not verify');
    const parsed = parseRequestSignature(req, { clockSkew: { forward: 300000, delay: 300000 } });
    if (!parsed || parsed.version !== 'draft') throw new Error('no draft signature');
    const [status, headers, doc] = await get(parsed.value.keyId.split('#')[0],
                                             { Accept: 'application/activity+json, application/ld+json' });
    stats.key_fetch_type = headers['content-type'] ?? null;
    if (status !== 200) throw new Error(`keyId answered ${status}`);
    const actor = JSON.parse(doc);
    const key = [].concat(actor.publicKey ?? []).find((k) => k.id === parsed.value.keyId);
    if (!key) throw new Error(`no publicKey ${parsed.value.keyId} in the document at the keyId's URL`);
    if (!(await verifyDraftSignature(parsed.value, key.publicKeyPem))) throw new Error('signature does not verify');
    stats.inbox_verified++;
  } catch (e) {
    stats.inbox_failed++;
    stats.last_error = String(e.message ?? e);
  }
}

http.createServer(async (req, res) => {
  const raw = await readBody(req);
  const json = (code, o, extra = {}) => { res.writeHead(code, { 'Content-Type': 'application/json', ...extra }); res.end(JSON.stringify(o)); };
  try {
    const path = req.url.split('?')[0];
    if (req.method === 'GET' && path === '/users/peer') {
      const accept = req.headers.accept ?? '';
      stats.key_fetch_accept = accept;
      if (!/application\/(activity|ld)\+json/.test(accept)) {
        stats.actor_refused++;
        return json(406, { error: 'ActivityStreams JSON only' });
      }
      stats.actor_gets++;
      res.writeHead(200, { 'Content-Type': 'application/activity+json' });
      return res.end(JSON.stringify({
        '@context': ['https://www.w3.org/ns/activitystreams', 'https://w3id.org/security/v1'],
        id: actorId, type: 'Service', inbox: `${me}/rpc/inbox`,
        publicKey: { id: keyId, owner: actorId, publicKeyPem },
      }));
    }
    if (req.method === 'POST' && path === '/rpc/inbox') {
      await inbox(req, raw);
      return json(inboxStatus, { status: inboxStatus }, retryAfter ? { 'Retry-After': retryAfter } : {});
    }
    if (req.method === 'POST' && path === '/send') return json(200, await send(JSON.parse(raw.toString() || '{}')));
    if (req.method === 'POST' && path === '/control') {
      const c = JSON.parse(raw.toString() || '{}');
      if (c.status) inboxStatus = c.status;
      retryAfter = c.retry_after ?? null;
      return json(200, { status: inboxStatus });
    }
    if (req.method === 'GET' && path === '/stats') return json(200, stats);
    return json(404, { error: 'not found' });
  } catch (e) {
    return json(500, { error: String(e.message ?? e) });
  }
}).listen(port, '127.0.0.1', () => process.stdout.write(`peer listening on ${me}\n`));
