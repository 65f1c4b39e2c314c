// The real tus-js-client against pgpod's /uploads (tests/integration/401_video_tus.t):
//   node tus.mjs start FILE STORAGE   uploads FILE, aborts once about half is sent
//   node tus.mjs resume FILE STORAGE  finds the upload in STORAGE (its URL) and finishes it
// Prints key=value lines for the test to check. GW_URL and GW_TOKEN name the gateway
// and the user.
import fs from 'node:fs';
import * as tus from 'tus-js-client';

const [mode, file, storage] = process.argv.slice(2);
const data = fs.readFileSync(file);
const options = {
  endpoint: `${process.env.GW_URL}/uploads`,
  headers: { Authorization: `Bearer ${process.env.GW_TOKEN}` },
  metadata: { filename: process.env.GW_FILENAME || 'big.bin', filetype: 'application/octet-stream' },
  urlStorage: new tus.FileUrlStorage(storage),
  storeFingerprintForResuming: true,
  removeFingerprintOnSuccess: false,
  retryDelays: null,
};

function run(upload) {
  return new Promise((resolve) => {
    upload.options.onError = (err) => resolve({ error: String(err) });
    upload.options.onSuccess = () => resolve({ done: true });
    upload.start();
  });
}

if (mode === 'start') {
  let aborted = false;
  const upload = new tus.Upload(data, {
    ...options,
    // PATCHes of 4 MiB: the interruption falls at a request boundary or inside one,
    // never after the last byte was handed to the kernel (one 50 MiB PATCH could be
    // reported half sent while all of it was already on its way, on a loaded machine)
    chunkSize: 4 << 20,
    onProgress(sent, total) {
      if (!aborted && sent >= total / 2) {
        aborted = true;
        // abort(false): the upload stays on the server, to be resumed
        upload.abort(false).then(() => {
          console.log(`aborted_at=${sent}`);
          console.log(`url=${upload.url}`);
          process.exit(0);
        });
      }
    },
  });
  const r = await run(upload);
  console.log(`error=${r.error || 'finished before it could be interrupted'}`);
  process.exit(1);
} else {
  let first = -1;
  const upload = new tus.Upload(data, {
    ...options,
    onProgress(sent) {
      if (first < 0) first = sent;
    },
  });
  const previous = await upload.findPreviousUploads();
  console.log(`previous=${previous.length}`);
  if (previous.length) upload.resumeFromPreviousUpload(previous[0]);
  const r = await run(upload);
  console.log(`url=${upload.url}`);
  console.log(r.done ? 'done=1' : `error=${r.error}`);
  process.exit(r.done ? 0 : 1);
}
