import { randomBytes } from 'node:crypto';
import { createServer, request as httpRequest, type IncomingMessage, type RequestListener, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Pool } from 'undici';
import { afterEach, describe, expect, it } from 'vitest';
import { ExchangeAbortedError, UpstreamExchange } from '../../src/proxy/exchange.js';

/**
 * UpstreamExchange between a real upstream and a real client: a loopback
 * "upstream" server, an undici Pool dispatching to it, and a "front" server
 * whose responses the exchange writes into.
 */
let closers: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const close of closers.reverse()) await close();
  closers = [];
});

async function serve(handler: RequestListener): Promise<{ server: Server; url: string }> {
  const server = createServer(handler);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  closers.push(() => new Promise((resolve) => {
    server.closeAllConnections();
    server.close(() => resolve());
  }));
  return { server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}` };
}

function upstreamPool(url: string): Pool {
  const pool = new Pool(url, { pipelining: 1 });
  closers.push(() => pool.destroy());
  return pool;
}

/** GET `url` and read the whole answer (or how it ended). */
function fetchAll(url: string): Promise<{ status: number; body: Buffer; aborted: boolean }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(url, (res: IncomingMessage) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode!, body: Buffer.concat(chunks), aborted: false }));
      res.on('error', () => resolve({ status: res.statusCode!, body: Buffer.concat(chunks), aborted: true }));
    });
    req.on('error', reject);
    req.end();
  });
}

describe('UpstreamExchange', () => {
  it('holds a body back for collect(), then pipes the rest past the limit byte-identical', async () => {
    const payload = randomBytes(300 * 1024);
    const upstream = await serve((_req, res) => {
      res.writeHead(200, { 'content-length': payload.length });
      // In pieces, so the limit falls mid-stream.
      let at = 0;
      const next = () => {
        if (at >= payload.length) return void res.end();
        res.write(payload.subarray(at, (at += 16 * 1024)), next);
      };
      next();
    });
    const pool = upstreamPool(upstream.url);
    let collected = 0;
    const front = await serve((_req, res) => {
      void (async () => {
        const exchange = new UpstreamExchange();
        pool.dispatch({ method: 'GET', path: '/' }, exchange);
        const head = await exchange.head;
        res.writeHead(head.statusCode, { 'content-length': String(head.headers['content-length']) });
        const held = await exchange.collect(64 * 1024);
        expect(held.ok).toBe(false);
        collected = held.bytes.length;
        res.write(held.bytes);
        exchange.pipe(res, (err) => res.destroy(err));
      })();
    });
    const got = await fetchAll(`${front.url}/`);
    expect(got.status).toBe(200);
    expect(collected).toBeGreaterThan(64 * 1024);
    expect(collected).toBeLessThan(payload.length);
    expect(got.body.equals(payload)).toBe(true);
  });

  it('collect() reads a small body whole', async () => {
    const upstream = await serve((_req, res) => res.end('<UploadId>abc</UploadId>'));
    const pool = upstreamPool(upstream.url);
    const exchange = new UpstreamExchange();
    pool.dispatch({ method: 'GET', path: '/' }, exchange);
    expect((await exchange.head).statusCode).toBe(200);
    const held = await exchange.collect(64 * 1024);
    expect(held).toEqual({ ok: true, bytes: Buffer.from('<UploadId>abc</UploadId>') });
  });

  it('holds a small answer whole before anyone takes it, and stops a large one at its bound until it is taken', async () => {
    const large = randomBytes(2 * 1024 * 1024);
    const upstream = await serve((req, res) => res.end(req.url === '/small' ? 'ok\n' : large));
    const pool = upstreamPool(upstream.url);
    const settle = () => new Promise((resolve) => setTimeout(resolve, 200));

    const small = new UpstreamExchange();
    pool.dispatch({ method: 'GET', path: '/small' }, small);
    await small.head;
    await settle();
    // Read to its end without being paused: the connection is back in the pool before the body is taken.
    expect(small.received).toBe(3);
    expect(pool.stats.free).toBe(1);
    expect(await small.collect(1024)).toEqual({ ok: true, bytes: Buffer.from('ok\n') });

    const big = new UpstreamExchange();
    pool.dispatch({ method: 'GET', path: '/large' }, big);
    await big.head;
    await settle();
    // At most the bound and the chunk that crossed it: the rest waits at the upstream.
    expect(big.received).toBeLessThanOrEqual(16 * 1024 + 64 * 1024);
    const front = await serve((_req, res) => {
      res.writeHead(200, { 'content-length': String(large.length) });
      big.pipe(res, (err) => res.destroy(err));
    });
    const got = await fetchAll(`${front.url}/`);
    expect(got.body.equals(large)).toBe(true);
  });

  it('an upstream that dies mid-body is reported and the client response is cut, not completed', async () => {
    const upstream = await serve((_req, res) => {
      res.writeHead(200, { 'content-length': 1024 * 1024 });
      res.write(randomBytes(8 * 1024), () => res.socket!.destroy());
    });
    const pool = upstreamPool(upstream.url);
    const errors: Error[] = [];
    const front = await serve((_req, res) => {
      const exchange = new UpstreamExchange();
      pool.dispatch({ method: 'GET', path: '/' }, exchange);
      void exchange.head.then((head) => {
        res.writeHead(head.statusCode, { 'content-length': '1048576' });
        exchange.pipe(res, (err) => errors.push(err));
      });
    });
    const got = await fetchAll(`${front.url}/`);
    expect(got.aborted).toBe(true);
    expect(got.body.length).toBeLessThan(1024 * 1024);
    expect(errors).toHaveLength(1);
  });

  it('abort() before the head rejects it with ExchangeAbortedError and drops the upstream request', async () => {
    let upstreamClosed: () => void;
    const closed = new Promise<void>((resolve) => (upstreamClosed = resolve));
    // Never answers: the request is in flight when the proxy gives up on it.
    const upstream = await serve((req) => req.socket.once('close', () => upstreamClosed()));
    const pool = upstreamPool(upstream.url);
    const exchange = new UpstreamExchange();
    pool.dispatch({ method: 'GET', path: '/' }, exchange);
    await new Promise((resolve) => setTimeout(resolve, 50));
    exchange.abort();
    await expect(exchange.head).rejects.toBeInstanceOf(ExchangeAbortedError);
    await closed;
    expect(exchange.aborted).toBe(true);
  });

  it('abort() before undici even starts the request still cancels it', async () => {
    const upstream = await serve((_req, res) => res.end('late'));
    const pool = upstreamPool(upstream.url);
    const exchange = new UpstreamExchange();
    exchange.abort();
    pool.dispatch({ method: 'GET', path: '/' }, exchange);
    await expect(exchange.head).rejects.toBeInstanceOf(ExchangeAbortedError);
  });
});
