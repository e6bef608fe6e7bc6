import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { request } from 'undici';
import { startProxy, type RunningProxy } from '../helpers/proxy.js';
import { startRecordingUpstream, type RecordingUpstream } from '../helpers/upstream.js';

describe('smoke', () => {
  let upstream: RecordingUpstream;
  let proxy: RunningProxy;
  beforeAll(async () => {
    upstream = await startRecordingUpstream();
    proxy = await startProxy({
      upstreams: [
        { name: 'us', url: upstream.url, provider: 's3', route: { path_prefix: '/us', strip_prefix: true }, region: 'us-east-1' },
        { name: 'eu', url: upstream.url, provider: 's3', route: { path_prefix: '/eu', strip_prefix: true }, region: 'eu-west-1' },
      ],
    });
  });
  afterAll(async () => {
    await proxy?.close();
    await upstream?.close();
  });
  it('allows US and refuses EU', async () => {
    const ok = await request(`${proxy.url}/us/b/k`, { method: 'PUT', body: 'hello' });
    expect(ok.statusCode).toBe(200);
    await ok.body.text();
    const no = await request(`${proxy.url}/eu/b/k`, { method: 'PUT', body: 'hello' });
    expect(no.statusCode).toBe(403);
    expect(await no.body.text()).toContain('AccessDenied');
    expect(upstream.requests.length).toBe(1);
    expect(proxy.decisions().map((d) => d.decision)).toEqual(['allow', 'block']);
  });
});
