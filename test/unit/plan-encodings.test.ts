import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { buildPlanner, parseConfigText } from '../../src/load.js';
import type { Plan } from '../../src/plan/plan.js';

/**
 * One request, many spellings: the storage service decodes percent-encodings
 * in the path and in query parameter names, and ignores the case and port of
 * the Host. However a client spells it, the proxy must decide the same.
 */
const planner = buildPlanner(
  parseConfigText(
    stringify({
      upstreams: [
        { name: 's3', url: 'http://127.0.0.1:9000', provider: 's3', route: { path_prefix: '/s3', strip_prefix: true }, region: 'us-east-1', buckets: { 'eu-archive': 'eu-west-1' } },
        { name: 'vhost', url: 'http://127.0.0.1:9001', provider: 's3', route: { host: '*.s3.internal' }, region: 'us-east-1', buckets: { 'eu-archive': 'eu-west-1' } },
        { name: 'gcs', url: 'http://127.0.0.1:9002', provider: 'gcs', route: { path_prefix: '/gcs', strip_prefix: true }, jurisdiction: 'US', buckets: { 'eu-bucket': 'europe-west1' } },
      ],
      rules: [{ name: 'writes-us', match: { operations: ['write'] }, allow_jurisdictions: ['US'], mode: 'enforce' }],
    }),
    'encodings.yaml',
  ),
);

/** Each character either as is or percent-encoded, in either hex case. */
const spelled = (text: string) =>
  fc.array(fc.constantFrom('plain', 'upper', 'lower'), { minLength: text.length, maxLength: text.length }).map((how) =>
    [...text]
      .map((ch, i) => {
        if (how[i] === 'plain') return ch;
        const hex = ch.charCodeAt(0).toString(16).padStart(2, '0');
        return '%' + (how[i] === 'upper' ? hex.toUpperCase() : hex.toLowerCase());
      })
      .join(''),
  );
const cased = (text: string) =>
  fc.array(fc.boolean(), { minLength: text.length, maxLength: text.length }).map((up) => [...text].map((ch, i) => (up[i] ? ch.toUpperCase() : ch)).join(''));
const port = fc.option(fc.integer({ min: 1, max: 65535 }), { nil: undefined }).map((p) => (p === undefined ? '' : `:${p}`));

/** The decision with no upload stored: what a part of an upload the proxy never saw gets. */
function decided(plan: Plan | ReturnType<typeof planner.prepare>) {
  if (plan.kind === 'reject') return { reject: plan.code };
  const finished = plan.kind === 'prepared' ? planner.finish(plan, plan.needs?.upload ? { upload: null } : {}) : plan;
  return { bucket: finished.bucket, operation: finished.operation, action: finished.decision.action, reason: finished.decision.reason };
}

describe('one request, many spellings, one decision', () => {
  it('path-style: encoded bucket, key and uploadId name', () => {
    const canonical = decided(planner.prepare({ method: 'PUT', target: '/s3/eu-archive/k?partNumber=1&uploadId=x', host: '127.0.0.1' }));
    expect(canonical).toEqual({ bucket: 'eu-archive', operation: 'write', action: 'block', reason: 'unknown_location' });
    fc.assert(
      fc.property(spelled('eu-archive'), spelled('uploadId'), fc.constantFrom('127.0.0.1', 'localhost', 'LocalHost'), port, (bucket, name, host, p) => {
        const plan = planner.prepare({ method: 'PUT', target: `/s3/${bucket}/k?partNumber=1&${name}=x`, host: host + p });
        expect(decided(plan)).toEqual(canonical);
      }),
    );
  });

  it('virtual-hosted: the Host names the bucket whatever its case and port, and whatever the path', () => {
    const canonical = decided(planner.prepare({ method: 'PUT', target: '/k', host: 'eu-archive.s3.internal' }));
    expect(canonical).toEqual({ bucket: 'eu-archive', operation: 'write', action: 'block', reason: 'jurisdiction_not_allowed' });
    fc.assert(
      fc.property(cased('eu-archive.s3.internal'), port, fc.constantFrom('/k', '/us-data/k', '/%6b'), (host, p, path) => {
        expect(decided(planner.prepare({ method: 'PUT', target: path, host: host + p }))).toEqual(canonical);
      }),
    );
  });

  it('a Cloud Storage rewrite: the destination however it is spelled', () => {
    const canonical = decided(planner.prepare({ method: 'POST', target: '/gcs/storage/v1/b/us-bucket/o/x/rewriteTo/b/eu-bucket/o/y', host: '127.0.0.1' }));
    expect(canonical).toMatchObject({ action: 'block', reason: 'location_conflict' });
    fc.assert(
      fc.property(spelled('eu-bucket'), spelled('y'), (bucket, object) => {
        expect(decided(planner.prepare({ method: 'POST', target: `/gcs/storage/v1/b/us-bucket/o/x/rewriteTo/b/${bucket}/o/${object}`, host: '127.0.0.1' }))).toEqual(canonical);
      }),
    );
  });

  it('S3 Select: only the plain object form reads; any added write sub-resource makes it a write', () => {
    fc.assert(
      fc.property(fc.subarray(['uploads', 'uploadId=u', 'delete', 'restore', 'tagging', 'acl'], { minLength: 1 }), spelled('select'), (extra, select) => {
        const plan = decided(planner.prepare({ method: 'POST', target: `/s3/eu-archive/k?${select}&select-type=2&${extra.join('&')}`, host: '127.0.0.1' }));
        expect(plan).toMatchObject({ operation: 'write', action: 'block' });
      }),
    );
  });
});
