// A PeerTube-like video feed on loopback, built with PeerTube's own feed library
// (@peertube/feed) and filled the way PeerTube's server fills /feeds/videos.{xml,atom}
// (server/controllers/feeds: Media RSS content per file, torrents as media:peerLink,
// thumbnails, embed, player, views, an enclosure). Answers conditional GETs with 304.
//   node serve.js --port P --videos N
//   GET /feeds/videos.xml (RSS 2.0) · /feeds/videos.atom · /items (what was given, JSON)
//   POST /add (one more video) · GET /stats (requests per status, body bytes sent)
'use strict';
const http = require('http');
const crypto = require('crypto');
const { Feed } = require('@peertube/feed');

const arg = (name, def) => { const i = process.argv.indexOf('--' + name); return i > 0 ? process.argv[i + 1] : def; };
const port = Number(arg('port', '0'));
const base = `http://127.0.0.1:${port}`;
const videos = [];
const stats = { requests: 0, status: {}, bodyBytes: 0, conditional: 0 };
let updated = new Date(Date.UTC(2026, 11, 1, 12, 0, 0));

function addVideo() {
  const n = videos.length + 1;
  const uuid = crypto.randomUUID();
  const published = new Date(Date.UTC(2026, 11, 1, 12, n, 0));
  const resolutions = [[1080, 30, 4000000], [720, 30, 2000000], [360, 25, 600000]];
  videos.push({
    uuid, name: `PeerTube video ${n}`, description: `The description of video ${n}`, published,
    channel: { name: `Channel ${n % 2}`, url: `${base}/c/channel${n % 2}` },
    duration: 60 + n, views: 10 * n, nsfw: false,
    files: resolutions.map(([height, fps, size]) => ({
      height, fps, size, url: `${base}/static/web-videos/${uuid}-${height}.mp4`, torrent: `${base}/lazy-static/torrents/${uuid}-${height}.torrent`,
    })),
    thumbnail: { url: `${base}/lazy-static/previews/${uuid}.jpg`, width: 850, height: 480 },
  });
  updated = published;
}

function buildFeed() {
  const feed = new Feed({
    title: 'Loopback PeerTube', description: 'Videos of a loopback PeerTube', id: base, link: base,
    image: `${base}/client/assets/images/icons/icon-96x96.png`, favicon: `${base}/client/assets/images/favicon.png`,
    copyright: 'All rights reserved', updated,
    generator: 'Toraifōsu', feedLinks: { json: `${base}/feeds/videos.json`, atom: `${base}/feeds/videos.atom`, rss: `${base}/feeds/videos.xml` },
    author: { name: 'Loopback PeerTube', link: base },
  });
  for (const v of videos) {
    const link = `${base}/w/${v.uuid}`;
    feed.addItem({
      title: v.name, id: link, link, description: v.description, content: `<p>${v.description}</p>`,
      author: [{ name: v.channel.name, link: v.channel.url }],
      date: v.published, nsfw: v.nsfw,
      torrents: v.files.map(f => ({ title: `${v.name}-${f.height}p`, url: f.torrent, size_in_bytes: f.size })),
      videos: v.files.map(f => ({ type: 'video/mp4', medium: 'video', height: f.height, fileSize: f.size, url: f.url, framerate: f.fps, duration: v.duration })),
      embed: { url: `${base}/videos/embed/${v.uuid}`, allowFullscreen: true },
      player: { url: link },
      categories: [{ value: 15, label: 'Science & Technology' }],
      community: { statistics: { views: v.views } },
      thumbnails: [{ url: v.thumbnail.url, height: v.thumbnail.height, width: v.thumbnail.width }],
      enclosure: { url: v.files[0].url, type: 'video/mp4', length: v.files[0].size },
    });
  }
  return feed;
}

function send(res, status, headers, body) {
  res.writeHead(status, headers);
  stats.status[status] = (stats.status[status] || 0) + 1;
  if (body) stats.bodyBytes += Buffer.byteLength(body);
  res.end(body);
}

const server = http.createServer((req, res) => {
  stats.requests++;
  const path = req.url.split('?')[0];
  if (req.method === 'POST' && path === '/add') { addVideo(); return send(res, 200, { 'content-type': 'application/json' }, '{"videos":' + videos.length + '}'); }
  if (path === '/stats') { res.writeHead(200, { 'content-type': 'application/json' }); return res.end(JSON.stringify(stats)); }
  if (path === '/items') { res.writeHead(200, { 'content-type': 'application/json' }); return res.end(JSON.stringify(videos)); }
  if (path !== '/feeds/videos.xml' && path !== '/feeds/videos.atom') return send(res, 404, { 'content-type': 'text/plain' }, 'not found');
  const body = path.endsWith('.xml') ? buildFeed().rss2() : buildFeed().atom1();
  const etag = '"' + crypto.createHash('sha1').update(body).digest('hex') + '"';
  const lastModified = updated.toUTCString();
  if (req.headers['if-none-match'] || req.headers['if-modified-since']) stats.conditional++;
  if (req.headers['if-none-match'] === etag) return send(res, 304, { etag, 'last-modified': lastModified }, null);
  send(res, 200, { 'content-type': path.endsWith('.xml') ? 'application/rss+xml; charset=utf-8' : 'application/atom+xml; charset=utf-8',
                   etag, 'last-modified': lastModified }, body);
});

for (let i = 0; i < Number(arg('videos', '3')); i++) addVideo();
server.listen(port, '127.0.0.1', () => console.log(`feed on ${base}`));
process.on('SIGTERM', () => server.close(() => process.exit(0)));
