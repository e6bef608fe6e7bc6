import { timingSafeEqual } from 'node:crypto';
import { STATUS_CODES, type IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import tls from 'node:tls';
import { errorCode, errorFor } from '../errors.js';
import type { Upstream } from '../plan/route.js';
import { ALPN } from './tls-listener.js';

/**
 * Forward-proxy mode: clients that set HTTPS_PROXY send `CONNECT host:port`.
 * A tunnel to a host an upstream's route admits is intercepted: the proxy
 * completes TLS with the client under a certificate for that host minted
 * from the operator CA, and the requests inside go through the normal
 * pipeline (route, classify, locate, decide, record), then on to the real
 * host over TLS. A tunnel to any other host is refused with 403 and a
 * decision record: never an open proxy. Nothing is ever relayed blind.
 */

/** What the pipeline knows about a request that came through a tunnel. */
export interface TunnelInfo {
  /** The host the tunnel was opened for (lower case): requests inside must name it. */
  readonly host: string;
  readonly port: number;
  /** The proxy user (Proxy-Authorization), when tunnels need one. */
  readonly user: string | null;
  /** Requests seen so far: a tunnel closed with none is a client that gave up on it (see handleConnect). */
  requests: number;
}

const tunnels = new WeakMap<object, TunnelInfo>();

/** The tunnel a request came through (counting the request), or null: a direct request. */
export function tunnelOf(req: IncomingMessage): TunnelInfo | null {
  const tunnel = tunnels.get(req.socket);
  if (tunnel === undefined) return null;
  tunnel.requests++;
  return tunnel;
}

export interface TunnelDeps {
  minter: { secureContext(hostname: string): Promise<tls.SecureContext>; has(hostname: string): boolean; pending(): number };
  /** The upstream the tunnel is intercepted for (the current policy's), or null: refused. */
  admit(hostname: string, port: number): Upstream | null;
  /** Proxy users and their passwords; null: tunnels need no Proxy-Authorization. */
  users: ReadonlyMap<string, string> | null;
  /** Record the refusal of a tunnel to a host no upstream serves; false: the record could not be written. */
  recordRefusal(target: { host: string; port: number; user: string | null; client: string }): Promise<string | null>;
  /** Hand the decrypted connection to the HTTP server (its requests take the normal path). */
  inject(socket: tls.TLSSocket): void;
  events: {
    refused(code: string): void;
    opened(): void;
    closed(): void;
    handshakeFailed(reason: string): void;
  };
  /** How long a client has to finish its TLS handshake inside the tunnel. */
  handshakeTimeoutMs?: number;
  /** Tunnels open at once (`forward_proxy.max_tunnels`): each holds a socket and TLS state, and clients open them at will. */
  maxTunnels: number;
  /** Tunnels this proxy has open now (opened minus closed). */
  openTunnels(): number;
}

/** How long an established tunnel whose client has closed its side may take to flush the rest before it is cut. */
const CLOSED_CLIENT_FLUSH_MS = 2_000;

/** `host:port` of a CONNECT: a DNS name or an IPv4 literal and a port (IPv6 literals are not served). */
const AUTHORITY = /^([A-Za-z0-9](?:[A-Za-z0-9.-]{0,252}))(?::(\d{1,5}))$/;

/** Whether a socket is a tunnel's decrypted side (a CONNECT on it would nest tunnels: refused). */
export function isTunnelSocket(socket: object): boolean {
  return tunnels.has(socket);
}

/**
 * Certificates being minted for tunnels at once. A mint takes milliseconds
 * of CPU and any name under an admitted pattern can ask for one: past this,
 * a tunnel to a host with no certificate yet is answered 503 at once rather
 * than queued behind a flood (hosts already minted are unaffected).
 */
const MAX_PENDING_MINTS = 64;

/**
 * Handle one CONNECT (the `connect` event of the data plane's HTTP server).
 * `client` is the client's address, taken when the connection was accepted
 * (a client that resets at once has none left on its socket by now).
 */
export async function handleConnect(deps: TunnelDeps, req: IncomingMessage, socket: Duplex, head: Buffer, client: string): Promise<void> {
  /** A refusal, with its stable error code as every answer the proxy gives itself. */
  const answer = (status: number, slug: string, body: string, headers = ''): void => {
    const head = `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\nx-residency-error: ${errorCode(errorFor(status, slug))}\r\n`;
    socket.end(`${head}content-type: text/plain; charset=utf-8\r\ncontent-length: ${Buffer.byteLength(body)}\r\n${headers}connection: close\r\n\r\n${body}`);
  };
  const target = AUTHORITY.exec(req.url ?? '');
  const port = Number(target?.[2]);
  if (target === null || port < 1 || port > 65535) {
    deps.events.refused('bad_connect_target');
    return answer(400, 'bad_connect_target', 'CONNECT needs host:port\n');
  }
  const host = target[1]!.toLowerCase();
  let user: string | null = null;
  if (deps.users !== null) {
    user = proxyUser(deps.users, req.headers['proxy-authorization']);
    if (user === null) {
      deps.events.refused('proxy_auth_required');
      return answer(407, 'proxy_auth_required', 'this proxy needs Proxy-Authorization (Basic)\n', `proxy-authenticate: ${PROXY_CHALLENGE}\r\n`);
    }
  }
  if (deps.admit(host, port) === null) {
    deps.events.refused('tunnel_not_routed');
    const id = await deps.recordRefusal({ host, port, user, client });
    if (id === null) return answer(503, 'decision_log_unavailable', 'the decision could not be recorded, so the tunnel was not opened\n');
    return answer(
      403,
      'tunnel_not_routed',
      `residency-proxy refused a tunnel to ${host}:${port}: no upstream serves that host, so where its data would go cannot be decided (decision id ${id})\n`,
      `x-residency-decision: block\r\nx-residency-decision-id: ${id}\r\n`,
    );
  }

  // A client already gone gets no certificate minted for it.
  if (socket.destroyed || !socket.readable) return;
  if (deps.openTunnels() >= deps.maxTunnels) {
    deps.events.refused('tunnel_limit');
    return answer(503, 'tunnel_limit', `${deps.maxTunnels} tunnels are open, the most this proxy keeps; retry shortly\n`, 'retry-after: 1\r\n');
  }
  if (deps.minter.pending() >= MAX_PENDING_MINTS && !deps.minter.has(host)) {
    deps.events.refused('tunnel_busy');
    return answer(503, 'tunnel_busy', 'too many tunnels to new hosts are being opened; retry shortly\n', 'retry-after: 1\r\n');
  }
  let context: tls.SecureContext;
  try {
    context = await deps.minter.secureContext(host);
  } catch {
    deps.events.refused('bad_connect_target');
    return answer(400, 'bad_connect_target', `no certificate can be made for ${host}\n`);
  }
  if (socket.destroyed) return;
  socket.write('HTTP/1.1 200 Connection Established\r\n\r\n');
  // Bytes the client sent after its CONNECT head (the start of its TLS hello) belong to the tunnel.
  if (head.length > 0) socket.unshift(head);
  const secure = new tls.TLSSocket(socket, { isServer: true, secureContext: context, ALPNProtocols: ALPN });
  const tunnel: TunnelInfo = { host, port, user, requests: 0 };
  tunnels.set(secure, tunnel);
  deps.events.opened();
  let established = false;
  /** A handshake failure is counted once, with the first reason seen. */
  let failure: string | null = null;
  const fail = (reason: string) => {
    clearTimeout(timer);
    failure ??= reason;
    secure.destroy();
  };
  // The TLS socket takes the connection over: the raw socket may emit nothing more.
  secure.once('close', () => {
    clearTimeout(timer);
    deps.events.closed();
    // A client that does not trust the operator CA closes: during the handshake, or (TLS 1.3, where
    // our side is done first) right after it, having sent nothing.
    if (!established) failure ??= 'client_closed';
    else if (tunnel.requests === 0) failure ??= 'no_request';
    if (failure !== null) deps.events.handshakeFailed(failure);
  });
  const timer = setTimeout(() => fail('timeout'), deps.handshakeTimeoutMs ?? 10_000);
  timer.unref();
  const failed = (err: NodeJS.ErrnoException) => fail(handshakeReason(err));
  secure.once('end', () => {
    // The client gave up during the handshake (a half-open TLS socket would wait for the timeout).
    if (!established) return fail('client_closed');
    // The client closed its side of an established tunnel. The HTTP server then ends ours (it serves no
    // half-open connections), but over TLS to a peer that is gone that last write can stall with neither
    // an error nor a close (a client reset mid-request body, answered 400 by clientError): the tunnel
    // would stay open for good. What is left to flush gets a bounded time.
    const flush = setTimeout(() => secure.destroy(), CLOSED_CLIENT_FLUSH_MS);
    flush.unref();
    secure.once('close', () => clearTimeout(flush));
  });
  secure.once('error', failed);
  secure.once('secure', () => {
    clearTimeout(timer);
    secure.off('error', failed);
    established = true;
    // From here the HTTP server owns the connection (and its errors).
    deps.inject(secure);
  });
}

/** What a 407 asks for. */
export const PROXY_CHALLENGE = 'Basic realm="residency-proxy"';

/** The user a `Proxy-Authorization: Basic …` proves, or null. Every configured password is compared in constant time. */
export function proxyUser(users: ReadonlyMap<string, string>, header: string | undefined): string | null {
  const match = /^Basic\s+([A-Za-z0-9+/=]+)\s*$/i.exec(header ?? '');
  if (match === null) return null;
  const decoded = Buffer.from(match[1]!, 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  if (colon === -1) return null;
  const name = decoded.slice(0, colon);
  const expected = users.get(name);
  const given = Buffer.from(decoded.slice(colon + 1));
  // Compared even for an unknown user (against itself), so the time taken does not tell which users exist.
  const against = expected === undefined ? given : Buffer.from(expected);
  const same = against.length === given.length && timingSafeEqual(against, given);
  return expected !== undefined && same ? name : null;
}

/** A bounded label for a failed handshake. */
function handshakeReason(err: NodeJS.ErrnoException): string {
  const text = `${err.code ?? ''} ${err.message}`;
  if (/unknown ca|bad certificate|certificate unknown|alert number 4[28]/i.test(text)) return 'client_rejected_certificate';
  if (/ECONNRESET|socket hang up|EPIPE/i.test(text)) return 'client_reset';
  if (/wrong version|http request|unsupported protocol|no shared cipher|version too low/i.test(text)) return 'protocol';
  return 'other';
}
