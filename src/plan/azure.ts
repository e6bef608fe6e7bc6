import { bucketOf } from '../location/bucket.js';
import { azureAccountFromPath, parseAzureHost } from '../location/request/azure-gcs.js';
import { paramValue } from '../location/request/query.js';
import { addressing, AMBIGUOUS_PATH, ambiguousSegments, reject, type ReadContext, type Reading, type Reject } from './reading.js';

/**
 * Azure Blob Storage as it reads a request: the storage account from the
 * Host it receives (`ACCOUNT.blob.core.windows.net`), or from the first path
 * segment on emulators (Azurite); the container from the path. The account
 * is the one the upstream is sent to, not the one a client's Host names when
 * the Host is rewritten.
 */
const AZURE_HOST = /\.(?:core\.windows\.net|core\.usgovcloudapi\.net|core\.chinacloudapi\.cn|storage\.azure\.net)\.?$/;

export function readAzure(c: ReadContext): Reading | Reject {
  const { upstream, storeHost, path, query, method } = c;
  // Azurite decodes the whole path before splitting it: /ACCOUNT%2Fcontainer/blob is another account than we would read.
  if (ambiguousSegments(path, upstream.accountInPath ? 2 : 1)) return reject(400, 'ambiguous_path', AMBIGUOUS_PATH);
  let account: string | undefined;
  if (AZURE_HOST.test(storeHost)) {
    account = parseAzureHost(storeHost)?.account;
    if (account === undefined) return reject(400, 'ambiguous_host', `${storeHost} does not name a storage account`);
  } else if (upstream.accountInPath) {
    account = azureAccountFromPath(path)?.account;
    if (account === undefined && upstream.accounts !== null && path !== '/') return reject(400, 'ambiguous_path', 'the path names no storage account the proxy can read');
  } else if (upstream.accounts !== null && addressing(storeHost, upstream).style !== 'path') {
    // A custom domain maps to an account only in Azure's own records: accounts cannot be told apart here.
    return reject(400, 'ambiguous_host', `the storage account behind Host ${storeHost} is not known to the proxy`);
  }
  const bucket = bucketOf('azure', path, storeHost, upstream.routeHost, upstream.accountInPath);
  const operation = c.classify(method, path, query);
  // Query Blob Contents reads, with a query in its body.
  const bodyIsQuery = method === 'POST' && operation === 'read' && paramValue(query, 'comp')?.toLowerCase() === 'query';
  return { operation, bucket, bucketFrom: bucket !== null ? 'path' : null, account, signals: [], scope: null, destinations: [], bodyIsQuery, follow: null };
}
