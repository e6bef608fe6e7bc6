import { createPrivateKey, createPublicKey, generateKeyPairSync, sign, verify, type KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { canonicalJson, sha256Hex } from './canonical.js';
import { DecisionLogCodes, DecisionLogError, describeError } from './errors.js';

export const DIGEST_TYPE = 'residency-proxy/decision-log-digest';

/** Why a file was sealed. */
export type SealReason = 'size' | 'time' | 'shutdown' | 'recovered' | 'replica';

/**
 * The seal of one log file (`FILE.digest.json`). `hash` is the SHA-256 of the
 * canonical JSON of every field except `hash` and `signature`; `signature`
 * is Ed25519 over those same canonical bytes. `prev_digest` is the `hash` of
 * the digest that sealed the previous file of this log, so removing or
 * replacing a whole sealed file breaks the digest chain too.
 */
export interface DigestBody {
  v: 1;
  type: typeof DIGEST_TYPE;
  replica: string;
  first_seq: number;
  last_seq: number;
  count: number;
  /** `prev` of the first record: the hash it chains to in the previous file. */
  first_prev: string;
  /** `hash` of the last record. */
  last_hash: string;
  /** SHA-256 of the file's bytes, and their number. */
  file_sha256: string;
  file_bytes: number;
  prev_digest: string;
  sealed_at: string;
  reason: SealReason;
}

export interface DigestSignature {
  alg: 'ed25519';
  /** First 16 hex digits of the SHA-256 of the public key (SPKI DER). */
  key_id: string;
  /** Base64. */
  value: string;
}

export interface Digest extends DigestBody {
  hash: string;
  signature: DigestSignature | null;
}

function bodyOf(digest: Record<string, unknown>): Record<string, unknown> {
  const { hash: _hash, signature: _signature, ...body } = digest;
  return body;
}

export function digestHash(digest: Record<string, unknown>): string {
  return sha256Hex(canonicalJson(bodyOf(digest)));
}

export function keyId(key: KeyObject): string {
  const pub = key.type === 'private' ? createPublicKey(key) : key;
  return sha256Hex(pub.export({ type: 'spki', format: 'der' })).slice(0, 16);
}

export function sealDigest(body: DigestBody, key: KeyObject | null): Digest {
  const canonical = canonicalJson(body);
  const signature: DigestSignature | null =
    key === null ? null : { alg: 'ed25519', key_id: keyId(key), value: sign(null, Buffer.from(canonical), key).toString('base64') };
  return { ...body, hash: sha256Hex(canonical), signature };
}

export function serialiseDigest(digest: Digest): string {
  return `${JSON.stringify(digest, null, 2)}\n`;
}

/** True when the signature verifies with `publicKey`. */
export function signatureValid(digest: Record<string, unknown>, publicKey: KeyObject): boolean {
  const sig = digest.signature as DigestSignature | null | undefined;
  if (!sig || sig.alg !== 'ed25519' || typeof sig.value !== 'string') return false;
  try {
    return verify(null, Buffer.from(canonicalJson(bodyOf(digest))), publicKey, Buffer.from(sig.value, 'base64'));
  } catch {
    return false;
  }
}

function assertEd25519(key: KeyObject, source: string): KeyObject {
  if (key.asymmetricKeyType !== 'ed25519') {
    throw new DecisionLogError(DecisionLogCodes.KEY, `${source}: an Ed25519 key is needed, found ${key.asymmetricKeyType ?? key.type}`);
  }
  return key;
}

/**
 * The digest signing key: a PEM file, or the PEM text in the environment
 * variable named by `env`. Null when neither is configured (digests are then
 * written unsigned). Read when the log is opened, never at import.
 */
export function loadSigningKey(options: { file?: string | undefined; env?: string | undefined }, environment: NodeJS.ProcessEnv): KeyObject | null {
  let pem: string;
  let source: string;
  if (options.file !== undefined) {
    source = options.file;
    try {
      pem = readFileSync(options.file, 'utf8');
    } catch (err) {
      throw new DecisionLogError(DecisionLogCodes.KEY, `signing key ${options.file}: ${describeError(err)}`, { cause: err });
    }
  } else if (options.env !== undefined) {
    source = `$${options.env}`;
    const value = environment[options.env];
    if (value === undefined || value.trim() === '') {
      throw new DecisionLogError(DecisionLogCodes.KEY, `signing key: environment variable ${options.env} is not set`);
    }
    pem = value;
  } else {
    return null;
  }
  try {
    return assertEd25519(createPrivateKey(pem), source);
  } catch (err) {
    if (err instanceof DecisionLogError) throw err;
    throw new DecisionLogError(DecisionLogCodes.KEY, `signing key ${source}: not a PEM private key (${describeError(err)})`, { cause: err });
  }
}

/** A public key from PEM text (an auditor's copy), or from a private key PEM. */
export function parsePublicKey(pem: string, source: string): KeyObject {
  try {
    return assertEd25519(createPublicKey(pem), source);
  } catch (err) {
    if (err instanceof DecisionLogError) throw err;
    throw new DecisionLogError(DecisionLogCodes.KEY, `${source}: not a PEM public key (${describeError(err)})`, { cause: err });
  }
}

export function generateSigningKeyPair(): { privatePem: string; publicPem: string; keyId: string } {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  return {
    privatePem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
    publicPem: publicKey.export({ type: 'spki', format: 'pem' }).toString(),
    keyId: keyId(publicKey),
  };
}
