// Early answers through Node's fetch (undici), which sends the whole body before it
// reads: each case must get its HTTP answer, never a reset. Prints TAP lines.
// Usage: node early_answers.mjs BASE_URL TOKEN BIG_BYTES ROUNDS
const [base, token, bigArg, roundsArg] = process.argv.slice(2);
const big = Number(bigArg), rounds = Number(roundsArg);
const body = new Uint8Array(big).fill(122);
let n = 0, failed = 0;
async function check(name, req, want) {
  const bad = [];
  for (let i = 0; i < rounds; i++) {
    try {
      const r = await fetch(base + req.path, { method: 'POST', headers: req.headers, body });
      const text = await r.text();
      if (r.status !== want) bad.push(`${r.status} ${text.slice(0, 120)}`);
    } catch (e) {
      bad.push(`${e.name}: ${e.message} ${e.cause ? e.cause.code || e.cause.message : ''}`);
    }
  }
  n++;
  if (bad.length) { failed++; console.log(`not ok ${n} - ${name}`); bad.slice(0, 3).forEach(b => console.log(`#   ${b}`)); }
  else console.log(`ok ${n} - ${name} (${rounds} times)`);
}
const auth = { Authorization: `Bearer ${token}` };
await check(`fetch: upload of ${big} bytes without a token: 401`, { path: '/upload', headers: { 'Content-Type': 'application/octet-stream' } }, 401);
await check('fetch: upload over PGPOD_UPLOAD_MAX: 413', { path: '/upload', headers: { ...auth, 'Content-Type': 'application/octet-stream' } }, 413);
await check('fetch: API body over PGPOD_BODY_MAX: 413', { path: '/rpc/gw_echo', headers: { 'Content-Type': 'application/json' } }, 413);
console.log(`# ${n} cases, ${failed} failed`);
process.exit(failed ? 1 : 0);
