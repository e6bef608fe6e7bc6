// Put a file into S3 through residency-proxy's forward proxy with the AWS SDK
// for JavaScript v3, unchanged but for its HTTP agent: the SDK does not read
// HTTPS_PROXY itself. Node trusts the operator CA through NODE_EXTRA_CA_CERTS.
//
//   npm install @aws-sdk/client-s3 @smithy/node-http-handler https-proxy-agent
//   HTTPS_PROXY=http://residency-proxy:8080 NODE_EXTRA_CA_CERTS=operator-ca.pem AWS_REGION=us-east-1 \
//     node aws-sdk-v3-put.mjs BUCKET KEY FILE
import { createReadStream, statSync } from 'node:fs';
import { PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { NodeHttpHandler } from '@smithy/node-http-handler';
import { HttpsProxyAgent } from 'https-proxy-agent';

const [bucket, key, file] = process.argv.slice(2);
if (!bucket || !key || !file || !process.env.HTTPS_PROXY) {
  console.error('usage: HTTPS_PROXY=http://PROXY:PORT node aws-sdk-v3-put.mjs BUCKET KEY FILE');
  process.exit(2);
}
const s3 = new S3Client({
  requestHandler: new NodeHttpHandler({ httpsAgent: new HttpsProxyAgent(process.env.HTTPS_PROXY) }),
});
try {
  const stored = await s3.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: createReadStream(file), ContentLength: statSync(file).size }));
  console.log(`stored s3://${bucket}/${key} (ETag ${stored.ETag})`);
} catch (err) {
  // A refusal by the proxy: AccessDenied, and the request id is the decision id in its log.
  console.error(`${err.name}: ${err.message} (request id ${err.$metadata?.requestId ?? 'none'})`);
  process.exitCode = 1;
} finally {
  s3.destroy();
}
