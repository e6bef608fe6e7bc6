import { createSecureContext, type SecureContext } from 'node:tls';
import { parseHostname, type Hostname } from './hostname.js';
import type { InterceptionCa } from './interception-ca.js';
import { caSigner, issueLeaf, type CaSigner } from './leaf.js';

export interface MinterOptions {
  ca: InterceptionCa;
  /** Certificates kept (least recently used evicted first). Default 1000. */
  maxEntries?: number;
  /** Validity of a minted certificate. Default 24 h, never past the CA's own notAfter. Re-minted when less than 10% of it remains. */
  validityMs?: number;
  now?: () => number;
  /** Called after a certificate was minted (for metrics): the host and the milliseconds it took. */
  onMint?: (hostname: string, ms: number) => void;
  /** Called when a cached certificate was used. */
  onHit?: () => void;
}

/** A hostname no certificate is minted for (the client chose it: SNI or CONNECT). */
export class InvalidHostnameError extends Error {
  constructor(hostname: string) {
    super(`not a DNS name or IP literal: ${JSON.stringify(hostname.slice(0, 100))}${hostname.length > 100 ? '…' : ''}`);
    this.name = 'InvalidHostnameError';
  }
}

interface Entry {
  readonly context: SecureContext;
  /** When less than 10% of the validity is left: mint a new one. */
  readonly renewAt: number;
}

const DEFAULT_MAX_ENTRIES = 1000;
const DEFAULT_VALIDITY_MS = 24 * 3600_000;
// Backdated for clients whose clock runs behind ours.
const CLOCK_SKEW_MS = 3600_000;

/** TLS certificates for intercepted hosts, minted from the operator CA on first use and cached. */
export class CertificateMinter {
  readonly #signer: Promise<CaSigner>;
  readonly #maxEntries: number;
  readonly #validityMs: number;
  readonly #now: () => number;
  readonly #onMint: MinterOptions['onMint'];
  readonly #onHit: MinterOptions['onHit'];
  // A Map iterates in insertion order: re-inserting on use makes the first key the least recently used.
  readonly #cache = new Map<string, Entry>();
  readonly #minting = new Map<string, Promise<SecureContext>>();
  // Mints run one after another: most of their work is on the event loop, and
  // run together their thread-pool completions land in one turn of the loop.
  #queue: Promise<unknown> = Promise.resolve();

  constructor(options: MinterOptions) {
    this.#maxEntries = positive('maxEntries', options.maxEntries ?? DEFAULT_MAX_ENTRIES, true);
    this.#validityMs = positive('validityMs', options.validityMs ?? DEFAULT_VALIDITY_MS, false);
    this.#now = options.now ?? Date.now;
    this.#onMint = options.onMint;
    this.#onHit = options.onHit;
    this.#signer = caSigner(options.ca);
    // Awaited by every mint; this only keeps a failure from being reported as unhandled before the first.
    this.#signer.catch(() => {});
  }

  /**
   * A TLS secure context (leaf certificate + its key, with the CA certificate as chain) for `hostname`
   * (a DNS name or an IP literal → SAN dNSName or iPAddress). Rejects with InvalidHostnameError for
   * anything else. Concurrent calls for one host share one mint.
   */
  async secureContext(hostname: string): Promise<SecureContext> {
    const host = parseHostname(hostname);
    if (host === null) throw new InvalidHostnameError(hostname);
    const cached = this.#cache.get(host.name);
    if (cached !== undefined && this.#now() < cached.renewAt) {
      this.#cache.delete(host.name);
      this.#cache.set(host.name, cached);
      this.#onHit?.();
      return cached.context;
    }
    let minting = this.#minting.get(host.name);
    if (minting === undefined) {
      minting = this.#queue.then(() => this.#mint(host)).finally(() => this.#minting.delete(host.name));
      this.#queue = minting.catch(() => {});
      this.#minting.set(host.name, minting);
    }
    return minting;
  }

  /** Whether a certificate for `hostname` is cached and fresh (a tunnel to it needs no mint). */
  has(hostname: string): boolean {
    const host = parseHostname(hostname);
    const cached = host === null ? undefined : this.#cache.get(host.name);
    return cached !== undefined && this.#now() < cached.renewAt;
  }

  /** Hosts whose certificate is being minted or waits its turn. */
  pending(): number {
    return this.#minting.size;
  }

  /** Entries cached now. */
  size(): number {
    return this.#cache.size;
  }

  async #mint(host: Hostname): Promise<SecureContext> {
    const started = performance.now();
    const signer = await this.#signer;
    const now = this.#now();
    const notAfter = Math.min(now + this.#validityMs, signer.notAfter);
    if (notAfter <= now) throw new Error(`the interception CA expired on ${new Date(signer.notAfter).toISOString()}`);
    const leaf = await issueLeaf(signer, [host], new Date(now - CLOCK_SKEW_MS), new Date(notAfter));
    const context = createSecureContext({ cert: `${leaf.certPem}\n${signer.certPem}`, key: leaf.keyPem });
    this.#cache.delete(host.name);
    this.#cache.set(host.name, { context, renewAt: now + 0.9 * (notAfter - now) });
    for (const oldest of this.#cache.keys()) {
      if (this.#cache.size <= this.#maxEntries) break;
      this.#cache.delete(oldest);
    }
    this.#onMint?.(host.name, performance.now() - started);
    return context;
  }
}

function positive(name: string, value: number, integer: boolean): number {
  if (!(value > 0) || !Number.isFinite(value) || (integer && !Number.isInteger(value))) {
    throw new RangeError(`${name}: expected a positive ${integer ? 'integer' : 'number'}, got ${value}`);
  }
  return value;
}
