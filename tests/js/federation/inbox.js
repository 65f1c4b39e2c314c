#!/usr/bin/env node
// inbox.js — a loopback HTTP endpoint for the federation integration tests.
//   sink mode  (--verify-key PEM): checks each POST with http-signature (signature,
//              Digest, Date) as an independent implementation would, counts request
//              ids (first time vs repeated) and answers 200 (or --status). With
//              --decrypt-key PEM, a sealed body ({"encrypted": {key, iv, tag, data}})
//              is opened with Node's crypto (RSA-OAEP SHA-256 unwraps the AES-256-GCM
//              key) and counted (encrypted / decrypted / decrypt_failed).
//   relay mode (--relay): a stand-in for the gateway's federation routes in front of a
//              pod's database (libpq env): POST /rpc/inbox → api.inbox(json) with the
//              request.* GUCs set as PostgREST sets them; GET /rpc/friend_list.
// Both: GET /stats (counters as JSON), POST /control {"status": N, "delay_ms": N}.
// Usage: node inbox.js --port N [--verify-key FILE] [--relay] [--status N]
'use strict';
const http = require('http');
const fs = require('fs');
const crypto = require('crypto');
const httpSignature = require('http-signature');

const args = process.argv.slice(2);
const opt = (name, dflt) => { const i = args.indexOf(name); return i >= 0 ? args[i + 1] : dflt; };
const flag = (name) => args.includes(name);
const port = Number(opt('--port', '0'));
const verifyKeyFile = opt('--verify-key', null);
const decryptKeyFile = opt('--decrypt-key', null);
const relay = flag('--relay');
let forcedStatus = Number(opt('--status', '0'));
let delayMs = 0;

const stats = {
  received: 0, verified: 0, verify_failed: 0, digest_failed: 0, unique_ids: 0, repeated_ids: 0,
  statuses: {}, last_error: null, signature_headers: null,
  encrypted: 0, decrypted: 0, decrypt_failed: 0, plain_types: {},
};

// Opens a sealed body with the recipient's private key; the activity, or null.
function open(sealed) {
  const e = sealed.encrypted;
  const key = crypto.privateDecrypt({ key: fs.readFileSync(decryptKeyFile, 'utf8'),
    padding: crypto.constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha256' }, Buffer.from(e.key, 'base64'));
  const d = crypto.createDecipheriv('aes-256-gcm', key, Buffer.from(e.iv, 'base64'));
  d.setAuthTag(Buffer.from(e.tag, 'base64'));
  return JSON.parse(Buffer.concat([d.update(Buffer.from(e.data, 'base64')), d.final()]).toString('utf8'));
}
const seen = new Set();

let pool = null;
if (relay) {
  const { Pool } = require('pg');
  pool = new Pool({ max: Number(opt('--pool', '8')) });
}

function answer(res, status, obj) {
  const body = JSON.stringify(obj);
  stats.statuses[status] = (stats.statuses[status] || 0) + 1;
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) });
  res.end(body);
}

// What http-signature (PeerTube's verifier) says of a request: null when it is good.
function verify(req, raw) {
  if (!verifyKeyFile) return null;
  try {
    const parsed = httpSignature.parseRequest(req, {
      authorizationHeaderName: 'signature',
      headers: ['(request-target)', 'host', 'date', 'digest'],
      clockSkew: 1800,
    });
    stats.signature_headers = parsed.params.headers;
    if (parsed.params.algorithm !== 'rsa-sha256') return 'algorithm is ' + parsed.params.algorithm;
    if (!httpSignature.verifySignature(parsed, fs.readFileSync(verifyKeyFile, 'utf8'))) return 'signature does not verify';
  } catch (e) {
    return e.name + ': ' + e.message;
  }
  const digest = 'SHA-256=' + crypto.createHash('sha256').update(raw).digest('base64');
  if (req.headers.digest !== digest) { stats.digest_failed++; return 'digest mismatch'; }
  return null;
}

async function relayInbox(req, res, raw) {
  const client = await pool.connect();
  try {
    await client.query('BEGIN');
    await client.query(
      "SELECT set_config('request.headers', $1, true), set_config('request.method', $2, true), " +
      "set_config('request.path', $3, true), set_config('response.status', '', true), set_config('role', 'pgpod_anon', true)",
      [JSON.stringify(req.headers), req.method, req.url.split('?')[0]]);
    const r = await client.query("SELECT api.inbox($1::json) AS reply, current_setting('response.status', true) AS status", [raw]);
    await client.query('COMMIT');
    const status = Number(r.rows[0].status || 200);
    answer(res, status, r.rows[0].reply);
  } catch (e) {
    await client.query('ROLLBACK').catch(() => {});
    stats.last_error = e.message;
    answer(res, /^(22|PT4)/.test(e.code || '') ? 400 : 500, { code: e.code, message: e.message });
  } finally {
    client.release();
  }
}

async function relayFriendList(res) {
  try {
    const r = await pool.query('SET ROLE pgpod_anon; SELECT api.friend_list() AS list; RESET ROLE');
    answer(res, 200, r[1].rows[0].list);
  } catch (e) {
    answer(res, 500, { message: e.message });
  }
}

const server = http.createServer((req, res) => {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    const raw = Buffer.concat(chunks).toString('utf8');
    if (req.method === 'GET' && req.url === '/stats') return answer(res, 200, stats);
    if (req.method === 'POST' && req.url === '/control') {
      const c = JSON.parse(raw || '{}');
      if ('status' in c) forcedStatus = Number(c.status);
      if ('delay_ms' in c) delayMs = Number(c.delay_ms);
      return answer(res, 200, { status: forcedStatus, delay_ms: delayMs });
    }
    const handle = () => {
      if (forcedStatus) return answer(res, forcedStatus, { message: 'forced by the test' });
      if (relay && req.method === 'GET' && req.url === '/rpc/friend_list') return relayFriendList(res);
      if (req.method !== 'POST' || req.url !== '/rpc/inbox') return answer(res, 404, { message: 'not found' });
      stats.received++;
      const bad = verify(req, raw);
      if (bad) {
        stats.verify_failed++;
        stats.last_error = bad;
        return answer(res, 401, { message: bad });
      }
      if (verifyKeyFile) stats.verified++;
      let id = null;
      try {
        let body = JSON.parse(raw);
        if (body && body.encrypted) {
          stats.encrypted++;
          if (decryptKeyFile) {
            try {
              body = open(body);
              stats.decrypted++;
            } catch (e) {
              stats.decrypt_failed++;
              stats.last_error = 'cannot decrypt: ' + e.message;
            }
          }
        }
        if (body && body.type) stats.plain_types[body.type] = (stats.plain_types[body.type] || 0) + 1;
        id = (body && body.id) || null;
      } catch (e) { /* counted below */ }
      if (id && seen.has(id)) stats.repeated_ids++;
      else if (id) { seen.add(id); stats.unique_ids++; }
      if (relay) return relayInbox(req, res, raw);
      return answer(res, 200, { status: 'received', id });
    };
    if (delayMs) setTimeout(handle, delayMs); else handle();
  });
});
server.keepAliveTimeout = 30000;
server.listen(port, '127.0.0.1', () => {
  process.stdout.write(`listening on 127.0.0.1:${server.address().port}\n`);
});
process.on('SIGTERM', () => { server.close(); if (pool) pool.end(); process.exit(0); });
