// Plays a published video in headless Chromium (Debian's, through puppeteer-core): the
// MP4 in a <video>, the HLS master through hls.js; both from the gateway's URLs, the
// page and hls.js served from loopback (tests/integration/402_video_browser.t).
// Env: GW_MP4, GW_HLS (URLs), PAGE_PORT, PROFILE (a fresh --user-data-dir).
// Prints one JSON line: what each player reached.
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import puppeteer from 'puppeteer-core';

const here = path.dirname(fileURLToPath(import.meta.url));
const hlsjs = fs.readFileSync(path.join(here, 'node_modules/hls.js/dist/hls.min.js'));
const page = `<!doctype html><meta charset="utf-8"><title>pgpod player test</title>
<video id="mp4" muted playsinline preload="auto" src="${process.env.GW_MP4}"></video>
<video id="hls" muted playsinline></video>
<script src="/hls.min.js"></script>
<script>
window.results = { hlsSupported: Hls.isSupported() };
const played = (el, key) => el.addEventListener('timeupdate', () => {
  if (el.currentTime > 1 && !results[key]) results[key] = { time: el.currentTime, width: el.videoWidth, height: el.videoHeight };
});
const mp4 = document.getElementById('mp4');
mp4.addEventListener('error', () => { results.mp4Error = mp4.error && mp4.error.code; });
played(mp4, 'mp4');
mp4.play().catch((e) => { results.mp4Error = String(e); });
const video = document.getElementById('hls');
const hls = new Hls();
hls.on(Hls.Events.MANIFEST_PARSED, (e, d) => { results.levels = d.levels.map((l) => l.height); video.play().catch((e) => { results.hlsError = String(e); }); });
hls.on(Hls.Events.ERROR, (e, d) => { if (d.fatal) results.hlsError = d.type + ': ' + d.details; });
played(video, 'hls');
hls.loadSource(${JSON.stringify(process.env.GW_HLS)});
hls.attachMedia(video);
</script>`;

const server = http.createServer((req, res) => {
  if (req.url === '/hls.min.js') {
    res.writeHead(200, { 'Content-Type': 'text/javascript' });
    res.end(hlsjs);
  } else {
    res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8' });
    res.end(page);
  }
});
await new Promise((r) => server.listen(Number(process.env.PAGE_PORT), '127.0.0.1', r));
const browser = await puppeteer.launch({
  executablePath: '/usr/bin/chromium',
  headless: true,
  userDataDir: process.env.PROFILE,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
         '--disable-sync', '--no-first-run', '--autoplay-policy=no-user-gesture-required', `--user-data-dir=${process.env.PROFILE}`],
});
let results = {};
try {
  const tab = await browser.newPage();
  await tab.goto(`http://127.0.0.1:${process.env.PAGE_PORT}/`);
  const deadline = Date.now() + 45000;
  while (Date.now() < deadline) {
    results = await tab.evaluate(() => window.results);
    if ((results.mp4 || results.mp4Error) && (results.hls || results.hlsError)) break;
    await new Promise((r) => setTimeout(r, 200));
  }
} finally {
  await browser.close();
  server.close();
}
console.log(JSON.stringify(results));
