// `node azure-blob-child.mjs` with a job (JSON) on stdin: runs the Azure SDK
// (@azure/storage-blob) as an application would, in a process of its own, so
// that Node's own trust settings (NODE_EXTRA_CA_CERTS, read at start-up)
// apply to it unmodified. Prints one JSON line: each step's result, errors
// included (a step that fails does not stop the next).
//
// Job: {
//   endpoint: "https://{account}.blob.core.windows.net:PORT" (or "https://127.0.0.1:PORT/{account}"),
//   keys: { ACCOUNT: BASE64_KEY, … },
//   proxy?: { host: "http://127.0.0.1", port: N },   // the SDK's own proxyOptions
//   steps: [
//     { op: "createContainer", account, container },
//     { op: "upload", account, container, blob, file, blockSize, maxSingleShotSize, concurrency },
//     { op: "download", account, container, blob, file },
//     { op: "list", account, container },             // blob names, uncommitted ones included
//     { op: "properties", account, container, blob }, // size and committed blocks
//   ]
// }
import { readFileSync } from 'node:fs';
import { BlobServiceClient, StorageSharedKeyCredential } from '@azure/storage-blob';

const job = JSON.parse(readFileSync(0, 'utf8'));

const services = new Map();
function service(account) {
  let client = services.get(account);
  if (client === undefined) {
    const key = job.keys[account];
    if (key === undefined) throw new Error(`no key for account ${account}`);
    client = new BlobServiceClient(job.endpoint.replace('{account}', account), new StorageSharedKeyCredential(account, key), {
      ...(job.proxy === undefined ? {} : { proxyOptions: job.proxy }),
      // One try: a failure shows at once instead of after the SDK's backoff.
      retryOptions: { maxTries: 1 },
    });
    services.set(account, client);
  }
  return client;
}

async function run(step) {
  const container = service(step.account).getContainerClient(step.container);
  switch (step.op) {
    case 'createContainer':
      await container.create();
      return {};
    case 'upload': {
      const data = readFileSync(step.file);
      await container.getBlockBlobClient(step.blob).uploadData(data, {
        blockSize: step.blockSize,
        maxSingleShotSize: step.maxSingleShotSize,
        concurrency: step.concurrency,
      });
      return { bytes: data.length };
    }
    case 'download':
      await container.getBlobClient(step.blob).downloadToFile(step.file);
      return {};
    case 'list': {
      const names = [];
      for await (const item of container.listBlobsFlat({ includeUncommitedBlobs: true })) names.push(item.name);
      return { names };
    }
    case 'properties': {
      const blob = container.getBlockBlobClient(step.blob);
      const { contentLength } = await blob.getProperties();
      const { committedBlocks } = await blob.getBlockList('committed');
      return { contentLength, committedBlocks: committedBlocks?.length ?? 0 };
    }
    default:
      throw new Error(`unknown op ${step.op}`);
  }
}

/** What a failed step threw, as the application sees it (the SDK's RestError). */
function described(err) {
  const headers = err?.response?.headers;
  return {
    name: err?.name,
    statusCode: err?.statusCode,
    code: err?.code,
    message: String(err?.message ?? err).split('\n')[0],
    requestId: headers?.get('x-ms-request-id') ?? null,
    decisionId: headers?.get('x-residency-decision-id') ?? null,
  };
}

const results = [];
for (const step of job.steps) {
  try {
    results.push({ op: step.op, ok: true, ...(await run(step)) });
  } catch (err) {
    results.push({ op: step.op, ok: false, error: described(err) });
  }
}
process.stdout.write(`${JSON.stringify({ results })}\n`);
