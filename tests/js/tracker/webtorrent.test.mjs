// WebTorrent (its browser bundle, an ES module) in headless Chromium driven by
// puppeteer-core: page A adds the pod's .torrent and downloads through the pod's
// WebSocket tracker and the WebSeed its url-list names; page B adds a magnet link
// with only the WebSocket tracker (no WebSeed), so the metadata (ut_metadata) and
// every piece must come from page A over WebRTC, which only the tracker's relay of
// offers and answers can connect.
//   node webtorrent.test.mjs run ORIGIN TORRENT_FILE MAGNET_FOR_B
// prints one JSON line: the outcome of each page.
import fs from 'node:fs'
import path from 'node:path'
import crypto from 'node:crypto'
import { fileURLToPath } from 'node:url'
import puppeteer from 'puppeteer-core'

const here = path.dirname(fileURLToPath(import.meta.url))
const [cmd, ...args] = process.argv.slice(2)

if (cmd === 'run') {
  const [origin, torrentPath, magnetB] = args
  const torrentB64 = fs.readFileSync(torrentPath).toString('base64')
  const bundle = fs.readFileSync(path.join(here, 'node_modules/webtorrent/dist/webtorrent.min.js'))
  const page = `<!doctype html><meta charset="utf-8"><title>pgpod webtorrent</title>
<script type="module">
import WebTorrent from '/__pgpod_test/webtorrent.min.js'
window.runTorrent = (torrentB64, magnet, timeoutMs) => new Promise(resolve => {
  const log = []
  const client = new WebTorrent({ tracker: { rtcConfig: { iceServers: [] } } })
  window.client = client
  client.on('error', e => resolve({ error: String(e), log }))
  const t = client.add(magnet || Uint8Array.from(atob(torrentB64), c => c.charCodeAt(0)))
  t.on('warning', w => log.push('warning: ' + (w && w.message || w)))
  t.on('error', e => resolve({ error: String(e), log }))
  t.on('wire', w => log.push('wire: ' + w.type))
  const timer = setTimeout(() => resolve({ done: false, progress: t.progress, log,
    wires: t.wires.map(w => w.type), numPeers: t.numPeers }), timeoutMs)
  t.on('done', async () => {
    clearTimeout(timer)
    const data = await t.files[0].arrayBuffer()
    const sha = Array.from(new Uint8Array(await crypto.subtle.digest('SHA-256', data)))
      .map(b => b.toString(16).padStart(2, '0')).join('')
    const wires = t.wires.map(w => ({ type: w.type, downloaded: w.downloaded }))
    resolve({ done: true, sha256: sha, length: data.byteLength, infoHash: t.infoHash, wires, log,
      announce: t.announce, urlList: t.urlList })
  })
})
window.uploaded = () => window.client.torrents.reduce((n, t) => n + t.uploaded, 0)
</script>`
  // WebRtcHideLocalIpsWithMdns off: candidates carry the namespace's veth addresses.
  // LocalNetworkAccessChecks off: Chromium 156 refuses a page's WebSocket to a
  // loopback address (net::ERR_BLOCKED_BY_LOCAL_NETWORK_ACCESS_CHECKS), even from a
  // loopback origin; a real pod's tracker is on a public address.
  const browser = await puppeteer.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    userDataDir: fs.mkdtempSync('/tmp/pgpod-chromium-'),
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
      '--disable-sync', '--no-first-run', '--disable-features=WebRtcHideLocalIpsWithMdns,LocalNetworkAccessChecks'],
  })
  // Each page in a context of its own: WebTorrent keeps pieces in the origin's
  // storage, which page B must not share with page A.
  const open = async () => {
    const context = await browser.createBrowserContext()
    const p = await context.newPage()
    if (process.env.WT_DEBUG) {
      await p.evaluateOnNewDocument(d => { localStorage.debug = d }, process.env.WT_DEBUG)
      p.on('console', m => process.stderr.write('page: ' + m.text() + '\n'))
    }
    await p.setRequestInterception(true)
    p.on('request', r => {
      const u = r.url()
      if (u === origin + '/__pgpod_test/page.html') r.respond({ status: 200, contentType: 'text/html', body: page })
      else if (u === origin + '/__pgpod_test/webtorrent.min.js') r.respond({ status: 200, contentType: 'text/javascript', body: bundle })
      else r.continue()
    })
    await p.goto(origin + '/__pgpod_test/page.html')
    await p.waitForFunction('typeof window.runTorrent === "function"')
    return p
  }
  const out = {}
  try {
    const a = await open()
    out.a = await a.evaluate(t => window.runTorrent(t, null, 60000), torrentB64)
    const b = await open()
    out.b = await b.evaluate(m => window.runTorrent(null, m, 60000), magnetB)
    out.a_uploaded = await a.evaluate(() => window.uploaded())
  } catch (e) {
    out.error = String(e)
  }
  await browser.close()
  console.log(JSON.stringify(out))
} else {
  console.error('usage: webtorrent.test.mjs run ORIGIN TORRENT_FILE MAGNET')
  process.exit(2)
}
