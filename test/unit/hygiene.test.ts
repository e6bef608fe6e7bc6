import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import http from 'node:http';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import type { IncomingMessage } from 'node:http';
import { checkRequest, connectionTokens, isHopByHop, namedByConnection } from '../../src/proxy/hygiene.js';
import type { Refusal } from '../../src/proxy/hygiene.js';

const MAX_HEADERS = 8;
const limits = { maxHeaders: MAX_HEADERS };

interface Probe {
  /** First status line the raw socket received ('' if none). */
  statusLine: string;
  /** True when Node's parser let the request through to our handler. */
  reached: boolean;
  refusal: Refusal | null;
  /** Whether req.headers still had a content-length (truncation check). */
  sawContentLength?: boolean;
}

interface Harness {
  send(raw: string): Promise<Probe>;
  close(): Promise<void>;
}

// A real Node HTTP server on 127.0.0.1:0 whose handler runs checkRequest, so
// the tests prove which shapes llhttp lets through to us. Note: maxHeadersCount
// is a server property, not a createServer() option.
async function startHarness(insecureHTTPParser: boolean): Promise<Harness> {
  const sockets = new Set<net.Socket>();
  const report = (req: IncomingMessage): string =>
    JSON.stringify({
      refusal: checkRequest(req, limits),
      sawContentLength: req.headers['content-length'] !== undefined,
    });
  const server = http.createServer({ insecureHTTPParser }, (req, res) => {
    const body = report(req);
    res.writeHead(200, {
      'content-type': 'application/json',
      'content-length': Buffer.byteLength(body),
      'x-probe': '1',
      connection: 'close',
    });
    res.end(body);
  });
  server.maxHeadersCount = MAX_HEADERS + 1;
  // CONNECT never reaches 'request'; run the check from the 'connect' event.
  server.on('connect', (req: IncomingMessage, socket: net.Socket) => {
    const body = report(req);
    socket.end(`HTTP/1.1 200 OK\r\nx-probe: 1\r\nconnection: close\r\ncontent-length: ${body.length}\r\n\r\n${body}`);
  });
  server.on('connection', (s: net.Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;

  const send = (raw: string): Promise<Probe> =>
    new Promise((resolve) => {
      const socket = net.connect(port, '127.0.0.1');
      let buf = '';
      let settled = false;
      const finish = (): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        socket.destroy();
        const statusLine = buf.slice(0, Math.max(0, buf.indexOf('\r\n')));
        const reached = /\r\nx-probe: 1\r\n/i.test(buf);
        if (!reached) {
          resolve({ statusLine, reached, refusal: null });
          return;
        }
        try {
          const parsed = JSON.parse(buf.slice(buf.lastIndexOf('\r\n\r\n') + 4)) as {
            refusal: Refusal | null;
            sawContentLength: boolean;
          };
          resolve({ statusLine, reached, ...parsed });
        } catch {
          resolve({ statusLine, reached: false, refusal: null });
        }
      };
      // Requests whose body framing leaves the parser waiting are cut off here.
      const timer = setTimeout(finish, 2000);
      socket.setEncoding('latin1');
      socket.on('data', (d: string) => {
        buf += d;
      });
      socket.on('close', finish);
      socket.on('error', finish);
      socket.write(Buffer.from(raw, 'latin1'));
    });

  const close = async (): Promise<void> => {
    for (const s of sockets) s.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  };
  return { send, close };
}

const req = (head: string, body = ''): string => `${head.replace(/\n/g, '\r\n')}\r\n\r\n${body}`;

// Shapes Node's default (strict) llhttp rejects with 400 before any handler
// runs. Asserted so a Node upgrade that loosens the parser is noticed.
const rejectedByNode: Array<[string, string]> = [
  ['HTTP/1.1 without Host', req('GET / HTTP/1.1')],
  ['duplicate Content-Length, equal values', req('POST / HTTP/1.1\nHost: a\nContent-Length: 1\nContent-Length: 1', 'a')],
  ['duplicate Content-Length, different case', req('POST / HTTP/1.1\nHost: a\ncontent-length: 1\nCONTENT-LENGTH: 1', 'a')],
  ['duplicate Content-Length, different values', req('POST / HTTP/1.1\nHost: a\nContent-Length: 1\nContent-Length: 2', 'ab')],
  ['Content-Length list', req('POST / HTTP/1.1\nHost: a\nContent-Length: 1, 1', 'a')],
  ['Content-Length with sign', req('POST / HTTP/1.1\nHost: a\nContent-Length: +1', 'a')],
  ['Content-Length empty', req('POST / HTTP/1.1\nHost: a\nContent-Length: ')],
  ['Content-Length + Transfer-Encoding', req('POST / HTTP/1.1\nHost: a\nContent-Length: 3\nTransfer-Encoding: chunked', '0\r\n\r\n')],
  ['Content-Length + TE gzip, chunked', req('POST / HTTP/1.1\nHost: a\nContent-Length: 5\nTransfer-Encoding: gzip, chunked', '0\r\n\r\n')],
  ['TE chunked, chunked', req('POST / HTTP/1.1\nHost: a\nTransfer-Encoding: chunked, chunked', '0\r\n\r\n')],
  ['two TE: chunked lines', req('POST / HTTP/1.1\nHost: a\nTransfer-Encoding: chunked\nTransfer-Encoding: chunked', '0\r\n\r\n')],
  ['TE chunked, gzip', req('POST / HTTP/1.1\nHost: a\nTransfer-Encoding: chunked, gzip')],
  ['space before colon', req('POST / HTTP/1.1\nHost: a\nTransfer-Encoding : chunked', '0\r\n\r\n')],
  ['HTTP/1.0 TE + CL', req('POST / HTTP/1.0\nHost: a\nContent-Length: 5\nTransfer-Encoding: chunked', 'hello')],
  ['obs-fold', req('GET / HTTP/1.1\nHost: a\nX: a\r\n b')],
  ['bare CR in value', req('GET / HTTP/1.1\nHost: a\nX: a\rb')],
  ['bare LF in value', req('GET / HTTP/1.1\nHost: a\nX: a\nY: b').replace('a\r\nY', 'a\nY')],
  ['NUL in value', req('GET / HTTP/1.1\nHost: a\nX: a\u0000b')],
  ['CTL in value', req('GET / HTTP/1.1\nHost: a\nX: a\u0001b')],
  ['DEL in value', req('GET / HTTP/1.1\nHost: a\nX: a\u007fb')],
  ['invalid header name', req('GET / HTTP/1.1\nHost: a\nX(: a')],
  ['bare LF line endings', 'GET / HTTP/1.1\nHost: a\n\n'],
  ['HTTP/1.2', req('GET / HTTP/1.2\nHost: a')],
  ['tab in target', req('GET /a\tb HTTP/1.1\nHost: a')],
  ['control char in target', req('GET /a\u0001b HTTP/1.1\nHost: a')],
  ['relative target', req('GET a/b HTTP/1.1\nHost: a')],
  ['raw UTF-8 byte in target', req('GET /caf\u00c3\u00a9 HTTP/1.1\nHost: a')],
];

// llhttp validates Transfer-Encoding (and the body) only AFTER
// on_headers_complete, so these reach the 'request' handler, and hence routing
// and forwarding, before Node raises clientError and closes the socket.
// [name, raw, expected refusal or null]
const reachHandlerBeforeNodeFails: Array<[string, string, { status: number; code: string } | null]> = [
  ['TE identity', req('POST / HTTP/1.1\nHost: a\nTransfer-Encoding: identity'), { status: 501, code: 'unsupported_transfer_coding' }],
  ['TE xchunked', req('POST / HTTP/1.1\nHost: a\nTransfer-Encoding: xchunked'), { status: 501, code: 'unsupported_transfer_coding' }],
  ['TE chunked;param', req('POST / HTTP/1.1\nHost: a\nTransfer-Encoding: chunked;x=1', '0\r\n\r\n'), { status: 400, code: 'invalid_transfer_encoding' }],
  // Node trims the tab, so rawHeaders says plain 'chunked': indistinguishable
  // here; Node then fails the body stream.
  ['TE chunked with trailing tab', req('POST / HTTP/1.1\nHost: a\nTransfer-Encoding: chunked\t', '0\r\n\r\n'), null],
  // Body-level error: nothing for a header check to see.
  ['LF inside chunk extension', req('POST / HTTP/1.1\nHost: a\nTransfer-Encoding: chunked', '1;a\nb\r\nx\r\n0\r\n\r\n'), null],
];

// Shapes Node lets through to the handler; checkRequest must refuse them.
const caughtByCheck: Array<[string, string, number, string]> = [
  ['HTTP/1.0 without Host', req('GET / HTTP/1.0'), 400, 'missing_host'],
  ['HTTP/0.9 request line', req('GET /'), 505, 'unsupported_version'],
  ['HTTP/2.0 request line', req('GET / HTTP/2.0\nHost: a'), 505, 'unsupported_version'],
  ['two Host headers', req('GET / HTTP/1.1\nHost: a\nHost: b'), 400, 'duplicate_host'],
  ['two Host headers, mixed case', req('GET / HTTP/1.1\nhost: a\nHOST: a'), 400, 'duplicate_host'],
  ['Host with userinfo', req('GET / HTTP/1.1\nHost: user@a'), 400, 'invalid_host'],
  ['Host with userinfo and port', req('GET / HTTP/1.1\nHost: u:p@a:80'), 400, 'invalid_host'],
  ['empty Host', req('GET / HTTP/1.1\nHost: '), 400, 'invalid_host'],
  ['Host with space', req('GET / HTTP/1.1\nHost: a b'), 400, 'invalid_host'],
  ['Host with two ports', req('GET / HTTP/1.1\nHost: a:80:81'), 400, 'invalid_host'],
  ['Host with empty port', req('GET / HTTP/1.1\nHost: a:'), 400, 'invalid_host'],
  ['Host port 0', req('GET / HTTP/1.1\nHost: a:0'), 400, 'invalid_host'],
  ['Host port 65536', req('GET / HTTP/1.1\nHost: a:65536'), 400, 'invalid_host'],
  ['Host port non-digit', req('GET / HTTP/1.1\nHost: a:8o'), 400, 'invalid_host'],
  ['Host only port', req('GET / HTTP/1.1\nHost: :80'), 400, 'invalid_host'],
  ['Host with comma', req('GET / HTTP/1.1\nHost: a,b'), 400, 'invalid_host'],
  ['Host with slash', req('GET / HTTP/1.1\nHost: a/b'), 400, 'invalid_host'],
  ['Host with latin1 byte', req('GET / HTTP/1.1\nHost: caf\u00e9.example'), 400, 'invalid_host'],
  ['Host bare IPv6', req('GET / HTTP/1.1\nHost: ::1'), 400, 'invalid_host'],
  ['Host bad IPv6 literal', req('GET / HTTP/1.1\nHost: [::g]'), 400, 'invalid_host'],
  ['Host IPv6 zone id', req('GET / HTTP/1.1\nHost: [fe80::1%25eth0]'), 400, 'invalid_host'],
  ['Host junk after IPv6', req('GET / HTTP/1.1\nHost: [::1]x'), 400, 'invalid_host'],
  ['Host unterminated IPv6', req('GET / HTTP/1.1\nHost: [::1'), 400, 'invalid_host'],
  ['absolute-form http', req('GET http://evil.example/x HTTP/1.1\nHost: a'), 400, 'absolute_form'],
  ['absolute-form https', req('GET https://evil.example/x HTTP/1.1\nHost: a'), 400, 'absolute_form'],
  ['asterisk-form for GET', req('GET * HTTP/1.1\nHost: a'), 400, 'absolute_form'],
  ['fragment', req('GET /a#b HTTP/1.1\nHost: a'), 400, 'fragment_in_target'],
  ['fragment after query', req('GET /a?x#b HTTP/1.1\nHost: a'), 400, 'fragment_in_target'],
  ['CONNECT', req('CONNECT a:443 HTTP/1.1\nHost: a:443'), 405, 'connect_not_allowed'],
  ['TE gzip, chunked', req('POST / HTTP/1.1\nHost: a\nTransfer-Encoding: gzip, chunked', '0\r\n\r\n'), 501, 'unsupported_transfer_coding'],
  ['TE gzip + TE chunked lines', req('POST / HTTP/1.1\nHost: a\nTransfer-Encoding: gzip\nTransfer-Encoding: chunked', '0\r\n\r\n'), 400, 'duplicate_transfer_encoding'],
  ['TE on HTTP/1.0', req('POST / HTTP/1.0\nHost: a\nTransfer-Encoding: chunked', '0\r\n\r\n'), 400, 'transfer_encoding_http10'],
  ['TE empty', req('POST / HTTP/1.1\nHost: a\nTransfer-Encoding: '), 400, 'invalid_transfer_encoding'],
  ['TE with empty element', req('POST / HTTP/1.1\nHost: a\nTransfer-Encoding: , chunked', '0\r\n\r\n'), 400, 'invalid_transfer_encoding'],
  ['Expect with extra token', req('GET / HTTP/1.1\nHost: a\nExpect: foo, 100-continue'), 417, 'expectation_failed'],
];

const accepted: Array<[string, string]> = [
  ['plain GET', req('GET /bucket/key HTTP/1.1\nHost: s3.example')],
  ['Host with port', req('GET / HTTP/1.1\nHost: s3.example:8443')],
  ['Host IPv4', req('GET / HTTP/1.1\nHost: 127.0.0.1:80')],
  ['Host IPv6', req('GET / HTTP/1.1\nHost: [::1]:8080')],
  ['Host IPv6 no port', req('GET / HTTP/1.1\nHost: [2001:db8::1]')],
  ['Host with underscore', req('GET / HTTP/1.1\nHost: my_bucket.s3.internal')],
  ['Host with tab OWS', req('GET / HTTP/1.1\nHost:\ta\t')],
  ['HTTP/1.0 with Host', req('GET / HTTP/1.0\nHost: a')],
  ['OPTIONS *', req('OPTIONS * HTTP/1.1\nHost: a')],
  ['POST Content-Length', req('POST /k HTTP/1.1\nHost: a\nContent-Length: 5', 'hello')],
  ['Content-Length leading zero', req('POST /k HTTP/1.1\nHost: a\nContent-Length: 05', 'hello')],
  ['POST chunked', req('POST /k HTTP/1.1\nHost: a\nTransfer-Encoding: chunked', '5\r\nhello\r\n0\r\n\r\n')],
  ['TE CHUNKED upper-case', req('POST /k HTTP/1.1\nHost: a\nTransfer-Encoding: CHUNKED', '0\r\n\r\n')],
  // Node strips OWS, so '\tchunked' and 'chunked ' arrive as plain 'chunked'.
  ['TE leading tab (OWS stripped by Node)', req('POST /k HTTP/1.1\nHost: a\nTransfer-Encoding:\tchunked', '0\r\n\r\n')],
  ['TE trailing space (OWS stripped by Node)', req('POST /k HTTP/1.1\nHost: a\nTransfer-Encoding: chunked ', '0\r\n\r\n')],
  ['Expect 100-continue', req('PUT /k HTTP/1.1\nHost: a\nExpect: 100-Continue\nContent-Length: 1', 'x')],
  ['obs-text in value', req('GET / HTTP/1.1\nHost: a\nX: caf\u00e9')],
  ['backslash in target (left to normalizePath)', req('GET /a\\b HTTP/1.1\nHost: a')],
  ['exactly maxHeaders fields', req(`GET / HTTP/1.1\nHost: a\n${Array.from({ length: MAX_HEADERS - 1 }, (_, i) => `X-${i}: ${i}`).join('\n')}`)],
];

describe('checkRequest with Node default parser', () => {
  let h: Harness;
  beforeAll(async () => {
    h = await startHarness(false);
  });
  afterAll(async () => {
    await h.close();
  });

  it.each(rejectedByNode)('Node itself answers 400: %s', async (_name, raw) => {
    const p = await h.send(raw);
    expect(p.reached).toBe(false);
    expect(p.statusLine).toBe('HTTP/1.1 400 Bad Request');
  });

  it('Node itself answers 417 for an unknown Expect', async () => {
    // Connection: close, or Node keeps the socket open after its 417.
    const p = await h.send(req('GET / HTTP/1.1\nHost: a\nExpect: foo\nConnection: close'));
    expect(p.reached).toBe(false);
    expect(p.statusLine).toBe('HTTP/1.1 417 Expectation Failed');
  });

  it.each(reachHandlerBeforeNodeFails)('reaches handler before Node fails: %s', async (_name, raw, expected) => {
    const p = await h.send(raw);
    expect(p.reached).toBe(true);
    if (expected === null) expect(p.refusal).toBeNull();
    else expect(p.refusal).toMatchObject(expected);
  });

  it.each(caughtByCheck)('refuses %s', async (_name, raw, status, code) => {
    const p = await h.send(raw);
    expect(p.reached).toBe(true);
    expect(p.refusal).toMatchObject({ status, code });
    expect(p.refusal?.detail).toMatch(/\S/);
  });

  it.each(accepted)('accepts %s', async (_name, raw) => {
    const p = await h.send(raw);
    expect(p.reached).toBe(true);
    expect(p.refusal).toBeNull();
  });

  it('refuses too many header lines with 431 (Node silently dropped Content-Length)', async () => {
    const extra = Array.from({ length: MAX_HEADERS }, (_, i) => `X-${i}: ${i}`).join('\n');
    const p = await h.send(req(`POST / HTTP/1.1\nHost: a\n${extra}\nContent-Length: 5`, 'hello'));
    expect(p.reached).toBe(true);
    // Proves the hazard: the framing header is gone from req.headers.
    expect(p.sawContentLength).toBe(false);
    expect(p.refusal).toMatchObject({ status: 431, code: 'too_many_headers' });
  });

  it('absolute-form detail says this is not a forward proxy', async () => {
    const p = await h.send(req('GET http://evil.example/ HTTP/1.1\nHost: evil.example'));
    expect(p.refusal?.detail).toMatch(/not a forward proxy/);
  });
});

// With insecureHTTPParser (never the proxy's setting, but one flag away) llhttp
// lets several smuggling shapes through; checkRequest is the second line.
describe('checkRequest with insecureHTTPParser', () => {
  let h: Harness;
  beforeAll(async () => {
    h = await startHarness(true);
  });
  afterAll(async () => {
    await h.close();
  });

  it.each<[string, string, number, string]>([
    ['Content-Length + Transfer-Encoding', req('POST / HTTP/1.1\nHost: a\nContent-Length: 3\nTransfer-Encoding: chunked', '0\r\n\r\n'), 400, 'content_length_with_transfer_encoding'],
    ['Content-Length + TE gzip, chunked', req('POST / HTTP/1.1\nHost: a\nContent-Length: 5\nTransfer-Encoding: gzip, chunked', '0\r\n\r\n'), 400, 'content_length_with_transfer_encoding'],
    ['TE chunked, chunked', req('POST / HTTP/1.1\nHost: a\nTransfer-Encoding: chunked, chunked', '0\r\n\r\n'), 400, 'invalid_transfer_encoding'],
    ['two TE: chunked lines', req('POST / HTTP/1.1\nHost: a\nTransfer-Encoding: chunked\nTransfer-Encoding: chunked', '0\r\n\r\n'), 400, 'duplicate_transfer_encoding'],
    ['TE chunked, gzip', req('POST / HTTP/1.1\nHost: a\nTransfer-Encoding: chunked, gzip'), 400, 'invalid_transfer_encoding'],
    // (A bare LF in a value is taken as a line break by the lenient parser,
    // yielding two ordinary headers, so it is not a value-character case.)
    ['NUL in value', req('GET / HTTP/1.1\nHost: a\nX: a\u0000b'), 400, 'invalid_header_value'],
    ['CTL in value', req('GET / HTTP/1.1\nHost: a\nX: a\u0001b'), 400, 'invalid_header_value'],
    ['DEL in value', req('GET / HTTP/1.1\nHost: a\nX: a\u007fb'), 400, 'invalid_header_value'],
  ])('refuses %s', async (_name, raw, status, code) => {
    const p = await h.send(raw);
    expect(p.reached).toBe(true);
    expect(p.refusal).toMatchObject({ status, code });
  });
});

// Branches no Node parser configuration lets through, checked directly.
describe('checkRequest on synthetic messages', () => {
  const fake = (rawHeaders: string[], over: Partial<IncomingMessage> = {}): IncomingMessage =>
    ({
      method: 'POST',
      url: '/',
      httpVersion: '1.1',
      httpVersionMajor: 1,
      httpVersionMinor: 1,
      rawHeaders,
      ...over,
    }) as unknown as IncomingMessage;

  it.each<[string, string[], number, string]>([
    ['CR in value', ['Host', 'a', 'X', 'a\rb'], 400, 'invalid_header_value'],
    ['invalid header name', ['Host', 'a', 'X Y', '1'], 400, 'invalid_header_name'],
    ['empty header name', ['Host', 'a', '', '1'], 400, 'invalid_header_name'],
    ['TE with leading tab', ['Host', 'a', 'Transfer-Encoding', '\tchunked'], 400, 'invalid_transfer_encoding'],
    ['TE identity', ['Host', 'a', 'Transfer-Encoding', 'identity'], 501, 'unsupported_transfer_coding'],
    ['TE chunked, gzip', ['Host', 'a', 'Transfer-Encoding', 'chunked, gzip'], 400, 'invalid_transfer_encoding'],
    ['TE chunked;x=1', ['Host', 'a', 'Transfer-Encoding', 'chunked;x=1'], 400, 'invalid_transfer_encoding'],
    ['TE gzip;q=1, chunked', ['Host', 'a', 'Transfer-Encoding', 'gzip;level=1, chunked'], 501, 'unsupported_transfer_coding'],
    ['duplicate Content-Length', ['Host', 'a', 'Content-Length', '1', 'content-length', '1'], 400, 'duplicate_content_length'],
    ['Content-Length not digits', ['Host', 'a', 'Content-Length', '1e3'], 400, 'invalid_content_length'],
    ['Content-Length negative', ['Host', 'a', 'Content-Length', '-1'], 400, 'invalid_content_length'],
    ['Content-Length padded', ['Host', 'a', 'Content-Length', ' 1'], 400, 'invalid_content_length'],
    ['Expect twice, one bad', ['Host', 'a', 'Expect', '100-continue', 'Expect', 'x'], 417, 'expectation_failed'],
  ])('refuses %s', (_name, rawHeaders, status, code) => {
    expect(checkRequest(fake(rawHeaders), limits)).toMatchObject({ status, code });
  });

  it('counts header lines from rawHeaders', () => {
    const raw = ['Host', 'a'];
    for (let i = 0; i < MAX_HEADERS; i++) raw.push(`X-${i}`, '1');
    expect(checkRequest(fake(raw), limits)).toMatchObject({ status: 431 });
    expect(checkRequest(fake(raw.slice(0, MAX_HEADERS * 2)), limits)).toBeNull();
  });

  it('refuses a relative target and a bare authority', () => {
    expect(checkRequest(fake(['Host', 'a'], { url: 'a/b' }), limits)).toMatchObject({ status: 400, code: 'absolute_form' });
    expect(checkRequest(fake(['Host', 'a'], { url: 'evil.example:443' }), limits)).toMatchObject({ code: 'absolute_form' });
    expect(checkRequest(fake(['Host', 'a'], { url: '' }), limits)).toMatchObject({ code: 'absolute_form' });
  });

  it('refuses HTTP/0.9 and accepts OPTIONS *', () => {
    expect(checkRequest(fake([], { httpVersion: '0.9', httpVersionMajor: 0, httpVersionMinor: 9 }), limits)).toMatchObject({ status: 505 });
    expect(checkRequest(fake(['Host', 'a'], { method: 'OPTIONS', url: '*' }), limits)).toBeNull();
  });
});

describe('isHopByHop', () => {
  it.each([
    'connection',
    'keep-alive',
    'proxy-connection',
    'te',
    'trailer',
    'transfer-encoding',
    'upgrade',
    'proxy-authenticate',
    'proxy-authorization',
    'http2-settings',
  ])('%s is hop-by-hop', (name) => {
    expect(isHopByHop(name)).toBe(true);
  });

  it.each(['host', 'content-length', 'authorization', 'x-amz-date', 'trailers', 'tea'])('%s is end-to-end', (name) => {
    expect(isHopByHop(name)).toBe(false);
  });
});

describe('connectionTokens', () => {
  it.each<[string | string[] | undefined, string[]]>([
    [undefined, []],
    ['', []],
    ['close', ['close']],
    ['Keep-Alive, X-Foo', ['keep-alive', 'x-foo']],
    [' ,, Upgrade ,\tX-Secret\t', ['upgrade', 'x-secret']],
    [['close', 'X-A, x-b'], ['close', 'x-a', 'x-b']],
    [[], []],
  ])('%j', (value, expected) => {
    expect(connectionTokens(value)).toEqual(expected);
  });
});

describe('namedByConnection', () => {
  it.each<[string | string[] | undefined, string[] | null]>([
    [undefined, null],
    ['keep-alive', null],
    ['close', null],
    ['Keep-Alive, Upgrade', null],
    ['keep-alive, X-Secret', ['x-secret']],
    [['close', 'X-A, x-b'], ['x-a', 'x-b']],
  ])('%j', (value, expected) => {
    const named = namedByConnection(value);
    expect(named === null ? null : [...named]).toEqual(expected);
  });
});
